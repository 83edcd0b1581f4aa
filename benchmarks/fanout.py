"""A parent mapping 10,000 no-op children, against 10,000 plain no-op runs.

    python benchmarks/fanout.py [--children 10000] [--concurrency 16]
                                [--only sqlite|postgresql]

On SQLite (a temporary file) and PostgreSQL (``SURESTEP_BENCH_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``, in a fresh schema dropped afterwards), one
in-process worker with --concurrency slots runs:

1. ``surestep.map(noop, range(N))`` from one parent run. Printed, from the event log: the
   time to create the batch (the parent's claim to its parking, every child and event
   written in one transaction), children/s, and the parent's wake-up latency (the last
   child's end to the parent's claim);
2. N plain runs of ``noop`` started beforehand, for runs/s on the same worker (both
   rates are wall-clock: the in-process worker's whole run over the count).

Beside each rate, the CPU it cost per child or run: this process's (the worker's), and
on PostgreSQL that of the backends serving it (from /proc: the server must run on this
machine), which a noisy machine disturbs less than the wall-clock rates.

Targets: creating 10,000 children < 1 s; children/s >= 80 % of plain runs/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from pg_accounting import CLOCK_TICKS, cpu_ticks  # benchmarks/pg_accounting.py

import surestep
from surestep import App, State
from surestep.testing import drive

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def build(url: str) -> App:
    app = App(url)

    @app.workflow(name="noop")
    def noop(n: int) -> int:
        return n

    @app.workflow(name="parent")
    def parent(count: int) -> int:
        return len(surestep.map(noop, range(count)))

    return app


def finished(app: App, workflow: str, count: int) -> threading.Event:
    """Set once ``count`` runs of ``workflow`` have succeeded (a hook: checking the
    database between claims would slow the very loop being measured)."""
    done, seen, lock = threading.Event(), [0], threading.Lock()

    def on_run_state(run_id: str, before: State, after: State, name: str) -> None:
        if after == State.SUCCESS and name == workflow:
            with lock:
                seen[0] += 1
                if seen[0] >= count:
                    done.set()

    app.hooks.add("on_run_state", on_run_state)
    return done


def events(app: App, sql: str, args: tuple[object, ...]) -> list[tuple[float, ...]]:
    with app.store.reading() as cur:
        cur.execute(sql, args)
        return [tuple(row) for row in cur.fetchall()]


class Cpu:
    """CPU seconds spent by this process (the in-process worker) and, on PostgreSQL, by
    the backends serving it (told apart by the URL's ``application_name``; read from
    /proc, so the server must run on this machine) since ``Cpu(app)``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.process = time.process_time()
        self.backends = self._backends()

    def _backends(self) -> dict[int, int]:
        if app_name(self.app) is None:
            return {}
        with self.app.store.reading() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = ?",
                (app_name(self.app),),
            )
            pids = [int(row[0]) for row in cur.fetchall()]
        return {pid: ticks for pid in pids if (ticks := cpu_ticks(pid)) is not None}

    def spent(self) -> tuple[float, float]:
        """(this process's CPU seconds, its backends' CPU seconds) since it began."""
        process = time.process_time() - self.process
        backends = sum(t - self.backends.get(p, 0) for p, t in self._backends().items())
        return process, backends / CLOCK_TICKS


def app_name(app: App) -> str | None:
    found = parse_qs(urlsplit(app.database_url).query).get("application_name")
    return found[0] if found else None


def mapped(url: str, children: int, concurrency: int) -> dict[str, float]:
    app = build(url)
    try:
        handle = app.start("parent", children)
        over = finished(app, "parent", 1)
        cpu = Cpu(app)
        started = time.perf_counter()
        drive(app, until=over.is_set, timeout=600, concurrency=concurrency)
        wall = time.perf_counter() - started
        worker_cpu, server_cpu = cpu.spent()
        parent = events(
            app,
            "SELECT at, to_state FROM surestep_events WHERE run_id = ? AND position IS NULL"
            " ORDER BY id",
            (handle.id,),
        )
        claims = [at for at, state in parent if state == "running"]
        parked = next(at for at, state in parent if state == "waiting")
        last = events(
            app,
            "SELECT MAX(e.at) FROM surestep_events e JOIN surestep_runs r ON r.id = e.run_id"
            " WHERE r.parent_id = ? AND e.position IS NULL AND e.to_state = 'success'",
            (handle.id,),
        )[0][0]
        return {
            "create_s": parked - claims[0],
            # The whole map, creation and the parent's two executions included.
            "children_per_s": children / wall,
            "wake_ms": 1000 * (claims[1] - float(last)),
            "worker_ms": 1000 * worker_cpu / children,
            "server_ms": 1000 * server_cpu / children,
        }
    finally:
        app.close()


def plain(url: str, runs: int, concurrency: int) -> dict[str, float]:
    app = build(url)
    try:
        for n in range(runs):
            app.start("noop", n)
        # Told by a hook, as the map is: a COUNT(*) between claims slowed these runs.
        over = finished(app, "noop", runs)
        cpu = Cpu(app)
        drive(app, until=over.is_set, timeout=600, concurrency=concurrency)
        worker_cpu, server_cpu = cpu.spent()
        first, end = events(
            app,
            "SELECT MIN(CASE WHEN to_state = 'running' THEN at END),"
            " MAX(CASE WHEN to_state = 'success' THEN at END)"
            " FROM surestep_events WHERE position IS NULL AND run_id IN"
            " (SELECT id FROM surestep_runs WHERE workflow = 'noop' AND parent_id IS NULL)",
            (),
        )[0]
        return {
            "runs_per_s": runs / (float(end) - float(first)),
            "worker_ms": 1000 * worker_cpu / runs,
            "server_ms": 1000 * server_cpu / runs,
        }
    finally:
        app.close()


@contextmanager
def database(dialect: str) -> Iterator[str]:
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'fanout.db'}"
        return
    import psycopg

    base = os.environ.get("SURESTEP_BENCH_POSTGRES_URL", DEFAULT_URL)
    schema = f"bench_fanout_{uuid.uuid4().hex[:8]}"  # also its backends' application_name
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        separator = "&" if "?" in base else "?"
        options = quote(f"-csearch_path={schema}")
        yield f"{base}{separator}options={options}&application_name={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    for dialect in ("sqlite", "postgresql"):
        if args.only and dialect != args.only:
            continue
        with database(dialect) as url:
            started = time.perf_counter()
            fan = mapped(url, args.children, args.concurrency)
        with database(dialect) as url:
            baseline = plain(url, args.children, args.concurrency)
        ratio = fan["children_per_s"] / baseline["runs_per_s"]
        print(
            f"{dialect}: {args.children} children created in {fan['create_s'] * 1000:.0f} ms; "
            f"{fan['children_per_s']:,.0f} children/s vs {baseline['runs_per_s']:,.0f} plain "
            f"runs/s ({ratio:.0%}); parent woken {fan['wake_ms']:.1f} ms after the last child "
            f"({time.perf_counter() - started:.0f} s in all)"
        )
        print(
            f"  CPU per child {fan['worker_ms']:.3f} ms worker + {fan['server_ms']:.3f} ms "
            f"server vs per plain run {baseline['worker_ms']:.3f} + {baseline['server_ms']:.3f}"
        )
        met = fan["create_s"] < 1.0 and ratio >= 0.8
        print(f"  targets (create < 1 s, >= 80 % of plain): {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
