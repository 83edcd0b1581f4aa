"""surestep beside its peers, measured in the same run: W workflows of K no-op steps each
(each step returns its argument, the workflow sums them), one workflow at a time, in
surestep, DBOS Transact and LangGraph, on SQLite and on PostgreSQL.

    python benchmarks/peers.py [--workflows 1000] [--steps 10] [--rounds 3]
                               [--databases sqlite,postgresql]
                               [--url postgresql://postgres@127.0.0.1:5432]

The peers are not surestep's dependencies. Install them beside it in a scratch venv:

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install -e . dbos langgraph langgraph-checkpoint-sqlite \\
        langgraph-checkpoint-postgres
    /tmp/peers-venv/bin/python benchmarks/peers.py

A peer that is not importable is reported as ``not installed: pip install ...`` and the
rest are measured. Nothing is fetched at run time.

What each one runs (the same workload as benchmarks/workload.py, in the peer's own API),
with the peer's durable storage in its recommended setting:

- surestep: ``benchmarks/workload.py``'s ``bench`` in an ``App``; the clock covers
  ``start()`` of all W runs and one worker at concurrency 1 executing them. SQLite in
  WAL mode, ``synchronous=FULL`` (surestep's default).
- DBOS Transact: ``@DBOS.workflow`` calling a ``@DBOS.step`` K times, each workflow
  called directly (it runs in the caller's thread). Its system database on PostgreSQL
  (what DBOS recommends for production), or on SQLite with the settings DBOS gives it
  (rollback journal, SQLite's ``synchronous=FULL``); a DBOS too old for a SQLite system
  database shows as ``failed:`` with its error, and the rest go on.
- LangGraph, twice, checkpointed with ``SqliteSaver`` (which sets WAL; SQLite's
  ``synchronous=FULL``) or ``PostgresSaver``, one thread id per workflow,
  ``durability="sync"`` (LangGraph's default, ``"async"``, writes a checkpoint while the
  next step runs):
  "graph", a ``StateGraph`` of K nodes in a chain, node i returning i and the state's
  reducer summing them: each node's output is written before the next node starts, the
  guarantee surestep gives a step; and "@task", the functional API, an ``@entrypoint``
  calling a ``@task`` K times: the closest code, but the entrypoint is one LangGraph step,
  so a task's result is written by a background thread while the entrypoint goes on
  (the next task can start before it is durable).

Each measurement runs in a process of its own (this script with ``--measure``), so that
DBOS's process-wide state and the peers' threads never meet: the clock starts after
the framework has opened (and migrated) its storage and stops when the last workflow has
returned. Every round gives each one a fresh SQLite file, or a fresh PostgreSQL
database (``surestep_peers_<pid>_<n>``, created and dropped here). Rounds are interleaved
in rotating order and the medians printed; the machine is shared and noisy, so compare
the ratios from one run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import operator
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432"
SYSTEMS = ("surestep", "dbos", "langgraph", "langgraph-task")
LABELS = {
    "surestep": "surestep",
    "dbos": "DBOS Transact",
    "langgraph": "LangGraph graph",
    "langgraph-task": "LangGraph @task",
}
# What must be importable for each (system, database), and the pip line that brings it.
NEEDS = {
    ("surestep", "sqlite"): (["surestep"], "pip install -e ."),
    ("surestep", "postgresql"): (["surestep", "psycopg"], "pip install -e '.[postgres]'"),
    ("dbos", "sqlite"): (["dbos"], "pip install dbos"),
    ("dbos", "postgresql"): (["dbos"], "pip install dbos"),
    ("langgraph", "sqlite"): (
        ["langgraph", "langgraph.checkpoint.sqlite"],
        "pip install langgraph langgraph-checkpoint-sqlite",
    ),
    ("langgraph", "postgresql"): (
        ["langgraph", "langgraph.checkpoint.postgres"],
        "pip install langgraph langgraph-checkpoint-postgres 'psycopg[binary]'",
    ),
}
NEEDS[("langgraph-task", "sqlite")] = NEEDS[("langgraph", "sqlite")]
NEEDS[("langgraph-task", "postgresql")] = NEEDS[("langgraph", "postgresql")]
DISTRIBUTIONS = {
    "surestep": ["surestep"],
    "dbos": ["dbos"],
    "langgraph": ["langgraph", "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres"],
    "langgraph-task": [],
}


# -- the workload in each framework's API (run in the measuring process) -------------
#
# Each runner opens the framework's storage at ``target`` (a SQLite file's path or a
# PostgreSQL URL), then times the workload alone and returns (wall s, CPU s).


def run_surestep(target: str, workflows: int, steps: int) -> tuple[float, float]:
    """Start W runs of ``bench(K)`` and execute them with one worker at concurrency 1."""
    import asyncio

    from workload import add_noop_workflow  # benchmarks/workload.py

    from surestep import App, State

    app = App(target if target.startswith("postgresql://") else f"sqlite:///{target}")
    bench = add_noop_workflow(app)
    ended: list[Any] = []
    app.hooks.on_run_state.append(lambda run_id, _from, to, *_: ended.append(to))
    app.store  # noqa: B018 - opens and migrates the database before the clock

    def workload() -> None:
        for _ in range(workflows):
            app.start(bench, steps)
        worker = app.worker(concurrency=1, poll_interval=0.01)
        asyncio.run(worker.run_async(until=lambda: len(ended) >= workflows))

    figures = timed(workload)
    app.close()
    if any(state != State.SUCCESS for state in ended):
        raise SystemExit(f"surestep: not every run succeeded: {sorted(set(map(str, ended)))}")
    return figures


def run_dbos(target: str, workflows: int, steps: int) -> tuple[float, float]:
    """Call a DBOS workflow of K steps W times, one after the other."""
    from dbos import DBOS

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    def bench(k: int) -> int:
        total = 0
        for i in range(k):
            total += noop(i)
        return total

    url = target if target.startswith("postgresql://") else f"sqlite:///{target}"
    DBOS(config={"name": "surestep-peers", "system_database_url": url, "log_level": "ERROR"})
    DBOS.launch()
    figures = timed(lambda: check([bench(steps) for _ in range(workflows)], steps))
    DBOS.destroy()
    return figures


class Total(TypedDict):
    """The LangGraph graph's state: the nodes' outputs, summed by the reducer."""

    total: Annotated[int, operator.add]


def run_langgraph(target: str, workflows: int, steps: int) -> tuple[float, float]:
    """Invoke a LangGraph graph of K nodes in a chain on W thread ids, one after the other.
    Node i returns i and the state's reducer sums them."""
    from langgraph.graph import END, START, StateGraph

    def node(i: int) -> Callable[[Total], dict[str, int]]:
        return lambda state: {"total": i}

    builder = StateGraph(Total)
    names = [f"noop_{i}" for i in range(steps)]
    for i, name in enumerate(names):
        builder.add_node(name, node(i))
    for before, after in zip([START, *names], [*names, END], strict=True):
        builder.add_edge(before, after)
    with langgraph_saver(target) as saver:
        graph = builder.compile(checkpointer=saver)

        def invoke(n: int) -> int:
            thread = {"configurable": {"thread_id": f"workflow-{n}"}}
            state = graph.invoke({"total": 0}, config=thread, durability="sync")
            return int(state["total"])

        return timed(lambda: check([invoke(n) for n in range(workflows)], steps))


def run_langgraph_task(target: str, workflows: int, steps: int) -> tuple[float, float]:
    """Invoke a LangGraph entrypoint of K tasks on W thread ids, one after the other."""
    from langgraph.func import entrypoint, task

    @task
    def noop(i: int) -> int:
        return i

    with langgraph_saver(target) as saver:

        @entrypoint(checkpointer=saver)
        def bench(k: int) -> int:
            total = 0
            for i in range(k):
                total += noop(i).result()
            return total

        def invoke(n: int) -> int:
            thread = {"configurable": {"thread_id": f"workflow-{n}"}}
            result: int = bench.invoke(steps, config=thread, durability="sync")
            return result

        return timed(lambda: check([invoke(n) for n in range(workflows)], steps))


@contextmanager
def langgraph_saver(target: str) -> Iterator[Any]:
    """LangGraph's checkpointer for ``target``, its tables created."""
    if target.startswith("postgresql://"):
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(target) as saver:
            saver.setup()
            yield saver
    else:
        from langgraph.checkpoint.sqlite import SqliteSaver

        with SqliteSaver.from_conn_string(target) as saver:
            saver.setup()
            yield saver


def timed(workload: Callable[[], None]) -> tuple[float, float]:
    t0, cpu0 = time.perf_counter(), time.process_time()
    workload()
    return time.perf_counter() - t0, time.process_time() - cpu0


def check(results: list[int], steps: int) -> None:
    wrong = [r for r in results if r != sum(range(steps))]
    if wrong:
        raise SystemExit(f"{len(wrong)} workflows returned {wrong[0]!r}, not {sum(range(steps))}")


RUNNERS: dict[str, Callable[[str, int, int], tuple[float, float]]] = {
    "surestep": run_surestep,
    "dbos": run_dbos,
    "langgraph": run_langgraph,
    "langgraph-task": run_langgraph_task,
}


# -- the driver -----------------------------------------------------------------------


def missing(system: str, database: str) -> str | None:
    """The pip line that would make ``system`` runnable on ``database``, or None."""
    modules, pip = NEEDS[(system, database)]
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            return pip
    return None


def versions() -> str:
    found = []
    for names in DISTRIBUTIONS.values():
        for name in names:
            try:
                found.append(f"{name} {importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                if name == names[0]:
                    found.append(f"{name} not installed")
    return ", ".join(found)


@contextmanager
def fresh_target(database: str, server: str, n: int) -> Iterator[str]:
    """A new SQLite file's path, or the URL of a new PostgreSQL database (dropped after)."""
    if database == "sqlite":
        with tempfile.TemporaryDirectory(prefix="surestep-peers-") as folder:
            yield str(Path(folder) / "bench.db")
        return
    import psycopg

    name = f"surestep_peers_{os.getpid()}_{n}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_once(system: str, target: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one framework once in a process of its own; its figures, or its error."""
    command = [
        sys.executable, __file__, "--measure", system, "--target", target,
        "--workflows", str(args.workflows), "--steps", str(args.steps),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = done.stderr.strip().splitlines() or ["(no output)"]
        return {"error": f"exit {done.returncode}: {errors[-1]}"}
    figures: dict[str, Any] = json.loads(lines[-1])
    if not target.startswith("postgresql://"):
        with closing(sqlite3.connect(target)) as conn:  # a file keeps its journal mode
            figures["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return figures


def raw_commit_cost(database: str, server: str, n: int = 300) -> float:
    """Median seconds of one INSERT+COMMIT in a fresh database: how fast the disk is now
    (SQLite: WAL, synchronous=FULL; PostgreSQL: one autocommitted INSERT)."""
    times = []
    with fresh_target(database, server, 0) as target:
        if database == "sqlite":
            conn = sqlite3.connect(target, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, v TEXT)")
            for _ in range(n):
                t0 = time.perf_counter()
                conn.execute("INSERT INTO raw (v) VALUES ('x')")  # autocommit: one commit
                times.append(time.perf_counter() - t0)
            conn.close()
        else:
            import psycopg

            with psycopg.connect(target, autocommit=True) as pg:
                pg.execute("CREATE TABLE raw (id BIGSERIAL PRIMARY KEY, v TEXT)")
                for _ in range(n):
                    t0 = time.perf_counter()
                    pg.execute("INSERT INTO raw (v) VALUES ('x')")
                    times.append(time.perf_counter() - t0)
    return statistics.median(times)


def postgres_problem(server: str) -> str | None:
    """Why PostgreSQL cannot be measured here, or None."""
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed: pip install 'psycopg[binary]'"
    import psycopg

    try:
        with psycopg.connect(f"{server}/postgres", connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot connect to {server}: {str(exc).strip()}"
    return None


def run_rounds(
    cases: list[tuple[str, str]], args: argparse.Namespace
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every case once a round, in rotating order; a case that fails is not run again."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {case: [] for case in cases}
    n = 0
    for number in range(args.rounds):
        for case in cases[number % len(cases) :] + cases[: number % len(cases)]:
            if any("error" in r for r in results[case]):
                continue
            n += 1
            with fresh_target(case[1], args.url, n) as target:
                results[case].append(measure_once(case[0], target, args))
    return results


# -- report ---------------------------------------------------------------------------

SETTINGS = {
    ("surestep", "sqlite"): "surestep's default: journal_mode={journal}, synchronous=FULL",
    ("surestep", "postgresql"): "surestep's default (synchronous_commit={sync_commit})",
    ("dbos", "sqlite"): (
        "system database on SQLite as DBOS opens it: journal_mode={journal}, "
        "synchronous={synchronous} (SQLite's default; DBOS sets neither)"
    ),
    ("dbos", "postgresql"): "system database on PostgreSQL (synchronous_commit={sync_commit})",
    ("langgraph", "sqlite"): (
        "SqliteSaver: journal_mode={journal}, synchronous={synchronous} (SQLite's default), "
        'durability="sync": a node\'s checkpoint is written before the next node starts'
    ),
    ("langgraph", "postgresql"): (
        'PostgresSaver, durability="sync" (synchronous_commit={sync_commit}): a node\'s '
        "checkpoint is written before the next node starts"
    ),
    ("langgraph-task", "sqlite"): (
        'as above, durability="sync"; but a task\'s result is written by a background '
        "thread while the entrypoint goes on (weaker than the rows above)"
    ),
    ("langgraph-task", "postgresql"): (
        'PostgresSaver, durability="sync"; a task\'s result is written by a background '
        "thread while the entrypoint goes on (weaker than the rows above)"
    ),
}


def report(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    skipped: dict[tuple[str, str], str],
    databases: dict[str, str],
    args: argparse.Namespace,
) -> None:
    total = args.workflows * args.steps
    print(
        f"workload   {args.workflows} workflows x {args.steps} no-op steps, one workflow at a "
        f"time, fresh storage each round, median of {args.rounds} interleaved rounds"
    )
    print(f"versions   {versions()}")
    for database, about in databases.items():
        print(f"\n{about}")
        print(
            f"  {'':<17}{'steps/s':>7}{'surestep/peer':>15}{'CPU us/step':>13}"
            f"{'CPU peer/surestep':>19}   rounds (steps/s)"
        )
        ours = results.get(("surestep", database), [])
        for system in SYSTEMS:
            case = (system, database)
            label = f"  {LABELS[system]:<17}"
            if case in skipped:
                print(f"{label}{skipped[case]}")
                continue
            errors = [r["error"] for r in results[case] if "error" in r]
            if errors:
                print(f"{label}failed: {errors[0]}")
                continue
            print_row(label, results[case], total, ours)
            print(f"  {'':<17}{setting(case, results[case], args)}")
    print(
        "\nsurestep/peer: surestep's steps/s over the peer's (medians). CPU: the measuring\n"
        "process's CPU per step (not a PostgreSQL server's); peer/surestep: the peer's over\n"
        "surestep's, steadier than steps/s when the machine is shared and its disk busy."
    )


def median_rate(rounds: list[dict[str, Any]], total: int) -> float | None:
    rates = [total / r["elapsed"] for r in rounds if "error" not in r]
    return statistics.median(rates) if rates else None


def print_row(
    label: str, rounds: list[dict[str, Any]], total: int, ours: list[dict[str, Any]]
) -> None:
    """One framework's medians, and ratios to surestep's (``ours``) when it was measured."""
    rate, cpu = median_rate(rounds, total), median_cpu(rounds, total)
    assert rate is not None and cpu is not None
    base_rate, base_cpu = median_rate(ours, total), median_cpu(ours, total)
    ratio = "" if base_rate is None else f"{base_rate / rate:.1f}x"
    cpu_ratio = "" if base_cpu is None else f"{cpu / base_cpu:.1f}x"
    each = ", ".join(f"{total / r['elapsed']:,.0f}" for r in rounds)
    print(f"{label}{rate:>7,.0f}{ratio:>15}{cpu:>13,.0f}{cpu_ratio:>19}   {each}")


def median_cpu(rounds: list[dict[str, Any]], total: int) -> float | None:
    """Median CPU microseconds per step of the measuring process."""
    cpus = [r["cpu"] / total * 1e6 for r in rounds if "error" not in r]
    return statistics.median(cpus) if cpus else None


def setting(case: tuple[str, str], rounds: list[dict[str, Any]], args: argparse.Namespace) -> str:
    journal = rounds[0].get("journal_mode", "?")
    with closing(sqlite3.connect(":memory:")) as conn:  # what a connection gets by default
        synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
            conn.execute("PRAGMA synchronous").fetchone()[0]
        ]
    return SETTINGS[case].format(
        journal=journal, synchronous=synchronous, sync_commit=args.sync_commit
    )


def server_about(server: str) -> tuple[str, str]:
    import psycopg

    with psycopg.connect(f"{server}/postgres") as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    assert version is not None and sync is not None
    return str(version[0]).split()[0], str(sync[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated")
    parser.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server, no database")
    parser.add_argument("--measure", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        wall, cpu = RUNNERS[args.measure](args.target, args.workflows, args.steps)
        print(json.dumps({"elapsed": wall, "cpu": cpu}))
        return
    args.url = args.url.rstrip("/")
    args.sync_commit = "?"
    databases = {"sqlite": f"SQLite {sqlite3.sqlite_version} (Python's sqlite3 module)"}
    skipped: dict[tuple[str, str], str] = {}
    if "postgresql" in args.databases.split(","):
        problem = postgres_problem(args.url)
        if problem is None:
            version, args.sync_commit = server_about(args.url)
            databases["postgresql"] = f"PostgreSQL {version} at {args.url}"
        else:
            databases["postgresql"] = f"PostgreSQL: not measured, {problem}"
    if "sqlite" not in args.databases.split(","):
        del databases["sqlite"]
    cases = []
    for database in databases:
        for system in SYSTEMS:
            pip = missing(system, database)
            if pip is not None:
                skipped[(system, database)] = f"not installed: {pip}"
            elif database == "sqlite" or args.sync_commit != "?":
                cases.append((system, database))
            else:
                skipped[(system, database)] = "not measured (no server)"
    measured = sorted({database for _, database in cases}, key=list(databases).index)
    before = {database: raw_commit_cost(database, args.url) for database in measured}
    results = run_rounds(cases, args)
    for database in measured:
        after = raw_commit_cost(database, args.url)
        databases[database] += (
            f"; raw INSERT+COMMIT {before[database] * 1e3:.2f} ms before the rounds, "
            f"{after * 1e3:.2f} ms after (one connection, a fresh database)"
        )
    report(results, skipped, databases, args)


if __name__ == "__main__":
    main()
