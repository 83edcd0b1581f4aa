"""A queue's claim with 1,000,000 stored runs and a deep backlog, on PostgreSQL and SQLite.

    python benchmarks/queue_depth.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                     [--runs 1000000] [--backlog 100000] [--tenants 20]
                                     [--repeat 100] [--only postgresql|sqlite]

Fills a fresh schema (PostgreSQL: ``bench_queue``, dropped afterwards) or a temporary
SQLite file with --runs finished runs (as ``benchmarks/large_table.py`` does), then queues
in queue ``llm`` (concurrency 32, at most 2 running per tenant): --backlog due runs of
tenant ``big`` first, then 10 runs of each of --tenants other tenants, with 2 runs of
``big`` running (at its cap). Then times ``QueueStore.claim`` (median of up to --repeat
claims, each put back afterwards) in two shapes:

1. from the head: ``big`` has room for 2 (none running) and the claim wants 2;
2. past a backlog at its cap: ``big`` runs 2, its backlog fills the head, so a claim of 8
   reads each key's head instead (the skip scan over keys, one index range per key).

and prints the plan of every statement each claim ran (EXPLAIN (ANALYZE, BUFFERS) and the
generic plan on PostgreSQL, EXPLAIN QUERY PLAN on SQLite). A plan that reads
surestep_runs whole prints FAIL and the script exits 1.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from large_table import (  # benchmarks/large_table.py
    DEFAULT_URL,
    NOW,
    Case,
    Planner,
    Report,
    fill,
    measure,
)

from surestep import App
from surestep.storage.queues import QueueStore

SCHEMA = "bench_queue"
WORKER = "benchhost/0:4243:abcdef"


def make_app(url: str) -> App:
    app = App(url)
    app.queue("llm", concurrency=32)

    @app.workflow(
        name="job", queue="llm", concurrency_key=lambda tenant, n: tenant, per_key_concurrency=2
    )
    def job(tenant: str, n: int) -> int:
        return n

    return app


def queue_backlog(app: App, backlog: int, tenants: int) -> None:
    """``big``'s backlog first, then the other tenants' runs, all due; 2 of ``big`` running."""
    rows: list[tuple[Any, ...]] = []
    due = NOW - 3600
    for i in range(backlog):
        rows.append((f"big-{i:07d}", "pending", due + i * 1e-3, "big", None))
    later = due + backlog * 1e-3
    for t in range(tenants):
        for i in range(10):
            rows.append((f"t{t:03d}-{i:02d}", "pending", later + t + i * 1e-3, f"t{t:03d}", None))
    rows += [(f"big-running-{i}", "running", due, "big", NOW + 600) for i in range(2)]
    with app.store.transaction() as cur:
        cur.executemany(
            "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
            " created_at, updated_at, available_at, queue, priority, concurrency_key,"
            " lease_owner, lease_token, lease_expires_at)"
            " VALUES (?, 'job', '1', ?, '{}', ?, ?, ?, 'llm', 0, ?, ?, 1, ?)",
            [
                (rid, state, due, due, at, key, None if lease is None else "otherhost/1:9:x", lease)
                for rid, state, at, key, lease in rows
            ],
        )
    with app.store.transaction() as cur:
        cur.execute("ANALYZE")
    QueueStore(app.store).declare(app.registry.queues(), time.time())


def claim_case(app: App, name: str, limit: int) -> Case:
    queues = QueueStore(app.store)

    def claim() -> Any:
        return queues.claim("llm", WORKER, [("job", "1")], limit, time.time, 30.0)

    def reset(claimed: Any) -> None:
        # Put the claimed runs back (pending, same due time), so every call claims alike.
        with app.store.transaction() as cur:
            cur.executemany(
                "UPDATE surestep_runs SET state = 'pending', lease_owner = NULL,"
                " lease_expires_at = NULL WHERE id = ?",
                [(run.id,) for run in claimed.runs],
            )

    return Case(name, claim, reset=reset)


def exercise(app: App, report: Report, args: argparse.Namespace) -> None:
    # 1. From the head: big has room for 2 (none running), a claim of 2 takes them.
    with app.store.transaction() as cur:
        cur.execute(f"UPDATE surestep_runs SET state = 'success' WHERE {_BIG_RUNNING}")
    measure(claim_case(app, "queue claim of 2, the head", 2), report, args.repeat, **_PLANS)
    # 2. big at its cap: its backlog fills the head, the claim reads each key's head.
    with app.store.transaction() as cur:
        cur.execute(f"UPDATE surestep_runs SET state = 'running' WHERE {_BIG_RUNNING}")
    case = claim_case(app, "queue claim of 8, past big", 8)
    measure(case, report, args.repeat, **_PLANS)


_BIG_RUNNING = "substr(id, 1, 12) = 'big-running-'"
_PLANS = {"full": True, "first_only": False}


def heading(dialect: str, args: argparse.Namespace, seconds: float) -> None:
    print(
        f"== {dialect}: {args.runs:,} finished runs + {args.backlog:,} due runs of one tenant"
        f" queued before {args.tenants} tenants' 10 each; filled and analysed in {seconds:.0f} s"
    )


def postgres(args: argparse.Namespace) -> list[str]:
    import psycopg

    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        admin.execute(f"CREATE SCHEMA {SCHEMA}")
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}options={quote(f'-csearch_path={SCHEMA}')}"
    app = make_app(url)
    planner = None
    try:
        t0 = time.perf_counter()
        fill(app.store, "postgresql", args.runs)
        queue_backlog(app, args.backlog, args.tenants)
        heading("PostgreSQL", args, time.perf_counter() - t0)
        planner = Planner("postgresql", url)
        report = Report("postgresql", app.store, planner)
        exercise(app, report, args)
        return report.failures
    finally:
        app.close()
        if planner is not None:
            planner.close()
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def sqlite(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "queue.db")
        app = make_app(f"sqlite:///{path}")
        t0 = time.perf_counter()
        fill(app.store, "sqlite", args.runs)
        queue_backlog(app, args.backlog, args.tenants)
        heading(f"SQLite {sqlite3.sqlite_version}", args, time.perf_counter() - t0)
        planner = Planner("sqlite", str(path))
        try:
            report = Report("sqlite", app.store, planner)
            exercise(app, report, args)
            return report.failures
        finally:
            planner.close()
            app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--only", choices=("postgresql", "sqlite"))
    args = parser.parse_args()
    failures = []
    if args.only != "sqlite":
        failures += postgres(args)
    if args.only != "postgresql":
        failures += sqlite(args)
    print("--")
    for failure in failures:
        print(f"FAIL  {failure}")
    if failures:
        sys.exit(1)
    print("ok    no queue claim's plan reads surestep_runs whole")


if __name__ == "__main__":
    main()
