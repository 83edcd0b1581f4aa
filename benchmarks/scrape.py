"""One scrape of the cluster-wide gauges at 1,000,000 stored runs, PostgreSQL and SQLite.

    python benchmarks/scrape.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                [--runs 1000000] [--repeat 50] [--only postgresql|sqlite]

Fills a fresh schema (or SQLite file) with large_table.py's builder (finished runs over
30 days, a few unfinished ones), adds a recent day of activity (finished runs with a
failed-then-recovered attempt each, review tasks open, overdue and decided), then times
``ClusterCollector.collect()`` (every family, one database read) for a 1 h and a 1 d
window, and prints the plan of each statement it ran; a plan that reads a table whole
prints FAIL (exit 1). Target: < 50 ms a scrape.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from large_table import DEFAULT_URL, NOW, Planner, capturing, fill, make_app

from surestep import App
from surestep.observe.cluster import ClusterFigures
from surestep.observe.collector import ClusterCollector

SCHEMA = "bench_scrape"
HOUR = 3600.0
RECENT = 20_000  # runs finished over the last day (~14 a minute)
TASKS = 2_000  # review tasks created over the last day; every tenth still open
HISTORY = ("surestep_runs", "surestep_steps", "surestep_attempts", "surestep_events")


def recent_activity(app: App) -> None:
    """A day of fresh work: finished runs, failed and recovered attempts, reviews."""
    runs, steps, attempts, tasks = [], [], [], []
    for i in range(RECENT):
        at = NOW - 24 * HOUR + i * (24 * HOUR / RECENT)
        rid = f"recent-{i:06d}"
        runs.append((rid, f"wf_{i % 20}", "1", "success", "{}", at - 5, at))
        steps.append((rid, 0, "fetch", "success", 2, at - 4, at))
        attempts.append((rid, 0, 1, "failed", at - 4, at - 3, "w"))
        attempts.append((rid, 0, 2, "success", at - 2, at, "w"))
    for i in range(TASKS):
        at = NOW - 24 * HOUR + i * (24 * HOUR / TASKS)
        open_ = i % 10 == 0
        tasks.append(
            (f"recent-{i:06d}", 1, "approve", f"wf_{i % 20}", "open" if open_ else "decided",
             "{}", 50, "keep", at, at, at + 600, None if open_ else "edit" if i % 7 == 0
             else "approve", None if open_ else at + 300, None if open_ else "alice", "{}")
        )  # fmt: skip
    with app.store.transaction() as cur:
        cur.executemany(
            "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            runs,
        )
        cur.executemany(
            "INSERT INTO surestep_steps (run_id, position, name, state, attempts, started_at,"
            " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            steps,
        )
        cur.executemany(
            "INSERT INTO surestep_attempts (run_id, position, attempt, state, started_at,"
            " finished_at, worker) VALUES (?, ?, ?, ?, ?, ?, ?)",
            attempts,
        )
        cur.executemany(
            "INSERT INTO surestep_review_tasks (run_id, position, kind, workflow, state,"
            " payload, priority, on_expiry, created_at, updated_at, due_at, outcome,"
            " decided_at, reviewer, proposal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?)",
            tasks,
        )
    with app.store.transaction() as cur:
        cur.execute("ANALYZE")


def scrape_once(collector: ClusterCollector) -> int:
    return sum(len(family.samples) for family in collector.collect())


def measure(app: App, planner: Planner, repeat: int) -> list[str]:
    failures = []
    for window in (HOUR, 24 * HOUR):
        collector = ClusterCollector(ClusterFigures(app.store, app.clock, window))
        samples = scrape_once(collector)  # warm
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            scrape_once(collector)
            times.append(time.perf_counter() - t0)
        median, worst = statistics.median(times), max(times)
        verdict = "ok" if median < 0.05 else "OVER 50 ms"
        print(
            f"scrape, {window / HOUR:>4.0f} h window   median {median * 1e3:7.2f} ms"
            f"   max {worst * 1e3:7.2f} ms   {samples} samples   ({repeat} scrapes) {verdict}"
        )
    with capturing(app.store) as capture:
        scrape_once(ClusterCollector(ClusterFigures(app.store, app.clock, 24 * HOUR)))
    for statement in capture.statements:
        for label, plan in planner.plans(statement):
            # The history tables hold millions of rows here; the review table's 2,000
            # rows are read whole when the window covers them all, rightly.
            scans = [t for t in planner.full_scans(plan) if t in HISTORY]
            mark = f"FAIL full scan of {', '.join(scans)}" if scans else "ok"
            print(f"  {mark:<6} {label}: {statement.sql[:110]}")
            for line in plan:
                print(f"           {line}")
            failures += [f"{planner.dialect}: {statement.sql[:80]} reads {s}" for s in scans]
    return failures


def postgres(args: argparse.Namespace) -> list[str]:
    import psycopg

    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        admin.execute(f"CREATE SCHEMA {SCHEMA}")
    url = f"{args.url}{'&' if '?' in args.url else '?'}options={quote(f'-csearch_path={SCHEMA}')}"
    app, planner = make_app(url), None
    try:
        seconds = fill(app.store, "postgresql", args.runs)
        recent_activity(app)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # index-only scans need the visibility map
        print(f"== PostgreSQL: {args.runs + RECENT:,} runs, filled in {seconds:.0f} s")
        planner = Planner("postgresql", url)
        return measure(app, planner, args.repeat)
    finally:
        app.close()
        if planner is not None:
            planner.close()
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def sqlite(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "scrape.db")
        app = make_app(f"sqlite:///{path}")
        seconds = fill(app.store, "sqlite", args.runs)
        recent_activity(app)
        print(f"== SQLite {sqlite3.sqlite_version}: {args.runs + RECENT:,} runs, filled in"
              f" {seconds:.0f} s")  # fmt: skip
        planner = Planner("sqlite", str(path))
        try:
            return measure(app, planner, args.repeat)
        finally:
            planner.close()
            app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--only", choices=("postgresql", "sqlite"))
    args = parser.parse_args()
    failures: list[Any] = []
    if args.only != "sqlite":
        failures += postgres(args)
    if args.only != "postgresql":
        failures += sqlite(args)
    print("--")
    for failure in failures:
        print(f"FAIL  {failure}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
