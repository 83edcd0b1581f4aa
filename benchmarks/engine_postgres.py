"""W workflows of K no-op steps on PostgreSQL: throughput by worker concurrency and by
number of worker processes, per-step latency, commit cost, and the CPU each step costs
the workers and the server.

    python benchmarks/engine_postgres.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                         (surestep's own options, ?group_commit=off or
                                         ?pool_size=N, go to the workers)
                                         [--workflows 1000] [--steps 10] [--rounds 3]
                                         [--concurrencies 1,4,16,64]
                                         [--processes 1,2,4] [--concurrency 8]
                                         [--against /path/to/another/checkout]
                                         [--metrics] [--tracing]

Two sets of measurements: one worker process at each of ``--concurrencies``, and each
of ``--processes`` worker processes at ``--concurrency``. For each, the W runs are started
into a fresh schema (dropped afterwards) by a short-lived process; then the worker
processes (this script with ``--worker``) are launched and the clock starts once all of
them have opened the database, so interpreter start-up is not counted. The clock stops
when the last run has succeeded (polled every 50 ms).

CPU is read from /proc before and after (so the server must run on this machine): the
worker processes, and the PostgreSQL backends serving them, told apart by an
``application_name`` of each round's own; other clients' backends, other clusters and
the cluster's background processes (reported beside) are left out.

``--against DIR`` measures a second surestep, importing it from DIR (a git worktree of
another commit: ``git worktree add /tmp/base <commit>``), in the same rounds, and prints
the ratios: the machine is shared and noisy, so compare only figures from one run.
With ``--metrics`` and/or ``--tracing`` it measures instead what they add per step, with
one worker process: rounds with them off, with per-process metrics (``WorkerMetrics``)
and with tracing through the OpenTelemetry SDK (every span made and ended, exported
nowhere). Rounds are interleaved and the median round (by wall time) is printed whole.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from pg_accounting import CpuSample, server_counters  # benchmarks/pg_accounting.py
from workload import add_noop_workflow  # benchmarks/workload.py

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
APP_NAME = "surestep-bench"
CORES = os.cpu_count() or 1
#: Peers are not measured here: benchmarks/peers.py runs them beside surestep.
PEERS = "python benchmarks/peers.py measures DBOS Transact and LangGraph in one run"


@dataclass(frozen=True)
class Config:
    """One measured set-up: ``processes`` worker processes of ``concurrency`` each,
    running the surestep found in ``library`` (None: the one this script imports)."""

    processes: int
    concurrency: int
    library: str | None = None

    @property
    def label(self) -> str:
        return f"{self.processes}x{self.concurrency}"


def make_app(url: str) -> Any:
    from surestep import App  # the worker's own surestep (see --against)

    app = App(url)
    add_noop_workflow(app)
    return app


#: Query options of surestep's own (``?group_commit=off``, ``?pool_size=4``): given to the
#: workers' App, kept from this script's own psycopg connections (libpq refuses them).
STORE_OPTIONS = ("group_commit", "pool_size")


def split_store_options(url: str) -> tuple[str, str]:
    """(the URL without surestep's own options, those options as a query string)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = urlencode([(k, v) for k, v in pairs if k not in STORE_OPTIONS])
    ours = urlencode([(k, v) for k, v in pairs if k in STORE_OPTIONS])
    return urlunsplit(parts._replace(query=kept)), ours


def schema_url(url: str, schema: str, application: str) -> str:
    options = quote(f"-csearch_path={schema}")
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={options}&application_name={application}"


# -- the worker process -------------------------------------------------------------


def worker_main(url: str, concurrency: int, out: Path, observe: str = "off") -> None:
    """Open the App, say ready, wait for go, work until SIGTERM, write latencies.
    ``observe``: ``metrics`` (WorkerMetrics subscribed) or ``tracing`` (the OpenTelemetry
    SDK recording every span, exported to nowhere)."""
    app = make_app(url)
    if observe == "metrics":
        from surestep.observe.metrics import WorkerMetrics

        app.hooks.subscribe(WorkerMetrics())
    elif observe == "tracing":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        class Dropping(InMemorySpanExporter):
            def export(self, spans: Any) -> Any:  # record nothing: a no-op exporter
                return super().export([])

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Dropping()))
        app.trace(provider)
    latencies: list[float] = []
    began: dict[str, float] = {}

    @app.hook("before_step")
    def before(step: Any) -> None:
        began[step.idempotency_key] = time.perf_counter()

    @app.hook("after_step")
    def after(step: Any, state: Any, seconds: float) -> None:
        # from the step call to its checkpoint committed
        latencies.append(time.perf_counter() - began.pop(step.idempotency_key))

    app.store  # noqa: B018 - connect and check the schema before saying ready
    print("ready", flush=True)
    sys.stdin.readline()
    app.worker(concurrency=concurrency, poll_interval=0.05).run()
    # The store's own count of the checkpoints' commits (none in a surestep before
    # group commit on PostgreSQL: one commit each).
    group = getattr(app.store, "group_commit", None)
    counts = {"commits": len(latencies), "writes": len(latencies)}
    if group is not None:
        counts = {"commits": group.commits, "writes": group.writes}
    out.write_text(json.dumps({"latencies": latencies, **counts}))
    app.close()


# -- one round ----------------------------------------------------------------------


def fsync_cost(url: str, n: int = 500) -> float | None:
    """Median seconds of one 8 KiB write + fdatasync on the filesystem of the server's WAL,
    or None when that directory is not readable from here."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    wal = Path(str(row[0]) if row else "/nonexistent", "pg_wal")
    try:
        # Next to the WAL directory, not in it: same filesystem, no file of the server's.
        folder = wal.resolve(strict=True).parent.parent
        handle, name = tempfile.mkstemp(dir=folder, prefix="surestep-fsync-")
    except OSError:
        return None
    times = []
    try:
        for _ in range(n):
            os.pwrite(handle, b"x" * 8192, 0)
            t0 = time.perf_counter()
            os.fdatasync(handle)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(handle)
        os.unlink(name)
    return statistics.median(times)


def raw_commit_cost(url: str, n: int = 2000) -> float:
    """Median seconds of one INSERT+COMMIT on one psycopg connection."""
    schema = f"bench_{os.getpid()}_raw"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        with psycopg.connect(schema_url(url, schema, f"{APP_NAME}-raw")) as conn:
            conn.execute("CREATE TABLE raw (id BIGSERIAL PRIMARY KEY, v TEXT)")
            conn.commit()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                conn.execute("INSERT INTO raw (v) VALUES (%s)", ("x" * 32,))
                conn.commit()
                times.append(time.perf_counter() - t0)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    return statistics.median(times)


def environment(library: str | None) -> dict[str, str]:
    """The environment of a process that imports surestep from ``library``."""
    env = dict(os.environ)
    if library is not None:
        env["PYTHONPATH"] = library
    return env


def seed(url: str, workflows: int, steps: int, library: str | None) -> None:
    """Start the runs, from a process importing the same surestep as the workers."""
    command = [sys.executable, __file__, "--seed", "--url", url]
    command += ["--workflows", str(workflows), "--steps", str(steps)]
    subprocess.run(command, env=environment(library), check=True)


def seed_main(url: str, workflows: int, steps: int) -> None:
    app = make_app(url)
    for _ in range(workflows):
        app.start("bench", steps)
    app.close()


def launch_workers(
    url: str, config: Config, folder: Path, observe: str = "off"
) -> list[subprocess.Popen[str]]:
    command = [sys.executable, __file__, "--worker", "--observe", observe, "--url", url]
    command += ["--concurrency", str(config.concurrency)]
    procs = [
        subprocess.Popen(
            [*command, "--out", str(folder / f"lat{i}.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment(config.library),
        )
        for i in range(config.processes)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            stop_workers(procs)
            raise SystemExit(f"worker {proc.pid} did not start; see its error above")
    return procs


def wait_for(conn: psycopg.Connection[Any], workflows: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        row = conn.execute("SELECT COUNT(*) FROM surestep_runs WHERE state = 'success'").fetchone()
        done = row[0] if row else 0
        if done >= workflows:
            return
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {done} of {workflows} runs succeeded within {timeout:.0f} s")
        time.sleep(0.05)


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(
    args: argparse.Namespace, schema: str, config: Config, folder: Path, observe: str = "off"
) -> dict[str, Any]:
    """Start the runs, launch the workers, time them, and read the counters around it."""
    application = f"{APP_NAME}-{schema}"
    url = schema_url(args.url, schema, application)
    if args.store_options:
        url = f"{url}&{args.store_options}"
    seed(url, args.workflows, args.steps, config.library)
    # The harness's own connection (polling for the end) is not one of the workers'.
    harness = schema_url(args.url, schema, f"{APP_NAME}-harness")
    with psycopg.connect(harness, autocommit=True) as conn:
        server0 = server_counters(conn, application)
        launched = time.perf_counter()
        procs = launch_workers(url, config, folder, observe)
        ready = time.perf_counter() - launched
        try:
            pids = [p.pid for p in procs]
            cpu0 = CpuSample(pids, conn, application)
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            wait_for(conn, args.workflows, timeout=300)
            cpu1 = CpuSample(pids, conn, application)
        finally:
            stop_workers(procs)
        server1 = server_counters(conn, application)
    files = [folder / f"lat{i}.json" for i in range(config.processes)]
    outs = [json.loads(f.read_text()) for f in files]
    latencies = sorted(x for o in outs for x in o["latencies"])
    fsyncs, wal_bytes, commits = (b - a for a, b in zip(server0, server1, strict=True))
    return {
        "elapsed": cpu1.at - cpu0.at,
        "startup": ready,
        "p50": latencies[len(latencies) // 2],
        "p95": latencies[int(len(latencies) * 0.95)],
        "fsyncs": fsyncs,
        "wal_bytes": wal_bytes,
        "commits": commits,
        "checkpoint_commits": sum(o["commits"] for o in outs),
        "checkpoints": sum(o["writes"] for o in outs),
        **cpu1.since(cpu0),
    }


def one_round(
    args: argparse.Namespace, config: Config, folder: Path, observe: str = "off"
) -> dict[str, Any]:
    """One measurement of ``config``, in a schema of its own."""
    schema = f"bench_{os.getpid()}_{config.processes}_{config.concurrency}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        return measure(args, schema, config, folder, observe)
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"the PostgreSQL connection failed mid-measurement ({exc}); is something "
            f"restarting the server? Run again when it is quiet"
        ) from None
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run_rounds(args: argparse.Namespace, configs: list[Config]) -> dict[Config, dict[str, Any]]:
    """Every config once per round, interleaved (the order of the two libraries
    alternating), so that a noisy minute on the shared machine hurts them all; the
    median round of each by wall time, whole, so that its CPU shares add up."""
    rounds: dict[Config, list[dict[str, Any]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            for config in configs if number % 2 == 0 else _swap_pairs(configs):
                rounds[config].append(one_round(args, config, Path(tmp)))
    results = {}
    for config, rs in rounds.items():
        rs.sort(key=lambda r: r["elapsed"])
        results[config] = {**rs[len(rs) // 2], "rounds": [r["elapsed"] for r in rs]}
    return results


def _swap_pairs(configs: list[Config]) -> list[Config]:
    """The same configs with each one measured against the other library moved ahead."""
    out = list(configs)
    for i, config in enumerate(out):
        if config.library is not None and i > 0 and out[i - 1].library is None:
            out[i - 1], out[i] = config, out[i - 1]
    return out


# -- report -------------------------------------------------------------------------


def per_step(args: argparse.Namespace, m: dict[str, Any]) -> dict[str, float]:
    """Steps/s, and the µs of CPU per step of the workers, their backends and both."""
    total = args.workflows * args.steps
    worker, server = m["worker_cpu"] / total * 1e6, m["postgres_cpu"] / total * 1e6
    return {"rate": total / m["elapsed"], "worker": worker, "server": server}


def bottleneck(m: dict[str, Any], n: int, fsync: float | None) -> str:
    """Which of CPU, WAL flushes and one worker's GIL limits this measurement."""
    per_process = m["worker_cpu"] / (n * m["elapsed"])
    flushing = None if fsync is None else m["fsyncs"] * fsync / m["elapsed"]
    limits = [
        f"CPU {m['machine_busy']:.0%} of {CORES} cores",
        f"one worker process {per_process:.2f} core",
        "WAL flush n/a" if flushing is None else f"WAL fdatasync ~{flushing:.0%} of wall",
    ]
    if m["machine_busy"] >= 0.8:
        side = "postgres" if m["postgres_cpu"] > m["worker_cpu"] else "the workers"
        verdict = f"CPU (most of it {side}); more processes cannot help on this machine"
    elif per_process >= 0.8:
        verdict = "the worker process (one GIL); more processes help while cores are free"
    elif flushing is not None and flushing >= 0.7:
        verdict = "WAL flushes (fsync)"
    else:
        verdict = "nothing saturated: round trips x concurrency"
    return f"{verdict} [{', '.join(limits)}]"


def report_table(
    args: argparse.Namespace, title: str, results: dict[Config, dict[str, Any]]
) -> None:
    """One line per config: throughput, CPU per step, latency, commits."""
    total = args.workflows * args.steps
    print(title)
    print(
        "  set-up   steps/s   worker us/step  server us/step  sum   p50 ms  p95 ms"
        "  commits/step  rounds (steps/s)"
    )
    for config, m in results.items():
        f = per_step(args, m)
        rounds = ", ".join(f"{total / e:,.0f}" for e in m["rounds"])
        print(
            f"  {config.label:7} {f['rate']:8,.0f}   {f['worker']:14.0f}  {f['server']:14.0f}"
            f"  {f['worker'] + f['server']:4.0f}  {m['p50'] * 1e3:6.2f}  {m['p95'] * 1e3:6.2f}"
            f"  {m['commits'] / total:12.2f}  {rounds}"
        )


def report_one(args: argparse.Namespace, config: Config, m: dict[str, Any]) -> None:
    """The whole story of one config's median round: where the CPU and the time went."""
    total = args.workflows * args.steps
    cap = CORES * m["elapsed"]
    softirq = m["machine_softirq"]
    ours = (m["worker_cpu"] + m["postgres_cpu"] + m["background_cpu"]) / cap
    other = max(0.0, m["machine_busy"] - softirq - ours)
    print(f"-- {config.label}: {config.processes} worker process(es) x {config.concurrency}")
    print(
        f"  steps/s {total / m['elapsed']:,.0f} ({m['elapsed']:.2f} s wall, the workers took "
        f"{m['startup']:.2f} s to start before the clock); per-step overhead "
        f"{m['elapsed'] / total * 1e3:.3f} ms (wall per step, with each run's claim and finish)"
    )
    print(
        f"  CPU: workers {m['worker_cpu'] / cap:.0%} of {CORES} cores x wall, their backends "
        f"{m['postgres_cpu'] / cap:.0%}, the cluster's background processes "
        f"{m['background_cpu'] / cap:.0%}, network softirq {softirq:.0%}, other processes "
        f"{other:.0%} ({m['other_clients']:.0f} other clients connected); iowait "
        f"{m['machine_iowait']:.0%}"
    )
    print(
        f"  WAL: {m['fsyncs'] / total:.2f} fsyncs/step ({m['fsyncs'] / m['elapsed']:,.0f}/s), "
        f"{m['wal_bytes'] / total / 1024:.1f} KiB/step (server-wide)"
    )
    print(
        f"  checkpoints: {_batch(m):.2f} per commit "
        f"(the store's own count: {m['checkpoint_commits'] / total:.2f} commits/step)"
    )
    print(f"  bottleneck: {bottleneck(m, config.processes, args.fsync)}")


def report(args: argparse.Namespace, results: dict[Config, dict[str, Any]]) -> None:
    print(
        f"workload   {args.workflows} workflows x {args.steps} no-op steps, PostgreSQL "
        f"{args.server} (fsync on, synchronous_commit {args.sync_commit}), median of "
        f"{args.rounds} rounds by wall time; {CORES} cores shared with the server"
    )
    raw = f"raw INSERT+COMMIT {args.raw * 1e3:.3f} ms (one connection)"
    flush = "" if args.fsync is None else f", fdatasync {args.fsync * 1e3:.3f} ms (8 KiB, WAL fs)"
    print(f"server     {raw}{flush}")
    print(
        "set-up     processes x concurrency (threads per process); "
        f"{args.store_options or 'pool_size 8 (the default)'}; server us/step = the "
        "backends serving the workers only"
    )
    libraries = [None] if args.against is None else [None, args.against]
    for library in libraries:
        mine = {c: m for c, m in results.items() if c.library == library}
        name = "this tree" if library is None else library
        report_table(args, f"-- surestep from {name}", mine)
    for config, m in results.items():
        if config.library is None:
            report_one(args, config, m)
    if args.against is not None:
        report_against(args, results)
    print(f"-- peers: {PEERS}")


def report_against(args: argparse.Namespace, results: dict[Config, dict[str, Any]]) -> None:
    print(f"-- this tree / {args.against}, same rounds")
    for config, m in results.items():
        if config.library is not None:
            continue
        base = results[Config(config.processes, config.concurrency, args.against)]
        f, b = per_step(args, m), per_step(args, base)
        print(
            f"  {config.label:7} steps/s {f['rate']:,.0f} / {b['rate']:,.0f} = "
            f"{f['rate'] / b['rate']:.2f}x; CPU us/step worker {f['worker']:.0f} / "
            f"{b['worker']:.0f}, server {f['server']:.0f} / {b['server']:.0f}, sum "
            f"{f['worker'] + f['server']:.0f} / {b['worker'] + b['server']:.0f}; "
            f"checkpoints/commit {_batch(m):.2f} / {_batch(base):.2f}"
        )


def _batch(m: dict[str, Any]) -> float:
    """Checkpoints per commit of them, by the workers' stores' own counts."""
    return float(m["checkpoints"]) / max(m["checkpoint_commits"], 1)


def server_settings(url: str) -> tuple[str, str]:
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    assert version is not None and sync is not None
    return str(version[0]).split()[0], str(sync[0])


def configs_of(args: argparse.Namespace) -> list[Config]:
    shapes = [(1, int(c)) for c in args.concurrencies.split(",") if c]
    shapes += [(int(n), args.concurrency) for n in args.processes.split(",") if n]
    unique = list(dict.fromkeys(shapes))
    libraries = [None] if args.against is None else [None, args.against]
    return [Config(n, c, library) for n, c in unique for library in libraries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrencies", default="1,4,16,64", help="of one worker process")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=8, help="of each of --processes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", help="another checkout's directory, to compare with")
    parser.add_argument("--metrics", action="store_true", help="also measure with metrics on")
    parser.add_argument("--tracing", action="store_true", help="also measure with tracing on")
    parser.add_argument("--observe", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.url, args.concurrency, args.out, args.observe)
        return
    if args.seed:
        seed_main(args.url, args.workflows, args.steps)
        return
    args.url, args.store_options = split_store_options(args.url)
    if args.against is not None:
        args.against = str(Path(args.against).resolve())
    if args.metrics or args.tracing:
        observe_cost(args)
        return
    args.server, args.sync_commit = server_settings(args.url)
    args.fsync = fsync_cost(args.url)
    args.raw = raw_commit_cost(args.url)
    report(args, run_rounds(args, configs_of(args)))


def observe_cost(args: argparse.Namespace) -> None:
    """Per-step cost of metrics and tracing: one worker process, rounds interleaved."""
    modes = ["off", *(["metrics"] if args.metrics else []), *(["tracing"] if args.tracing else [])]
    elapsed: dict[str, list[float]] = {mode: [] for mode in modes}
    config = Config(1, args.concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode in modes:
                result = one_round(args, config, Path(tmp), mode)
                elapsed[mode].append(result["elapsed"])
    steps = args.workflows * args.steps
    base = statistics.median(elapsed["off"]) / steps
    print(f"1 worker process x {args.concurrency}, {steps} steps, medians of {args.rounds}:")
    print(f"  off       {base * 1e6:7.1f} us a step")
    for mode in modes[1:]:
        per = statistics.median(elapsed[mode]) / steps
        print(f"  {mode:9} {per * 1e6:7.1f} us a step: {per / base - 1:+.1%}")


if __name__ == "__main__":
    main()
