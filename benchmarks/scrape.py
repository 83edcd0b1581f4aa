"""One scrape of the cluster-wide gauges at 1,000,000 stored runs, PostgreSQL and SQLite.

    python benchmarks/scrape.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                [--runs 1000000] [--repeat 50] [--only postgresql|sqlite]

Fills a fresh schema (or SQLite file) with large_table.py's builder (finished runs over
30 days, a few unfinished ones), adds a recent day of activity (finished runs with a
failed-then-recovered attempt each, review tasks open, overdue and decided) and 8 days
of model calls (200,000 ledger rows for 8 (step, model) pairs, 48,000 of them in the last
hour, so that both sides of every drift check are at the 5,000-sample cap), then times
``ClusterCollector.collect()`` (every family, one database read) for a 1 h and a 1 d
window: cold (a collector's first scrape, which starts the drift check) and warm (later
scrapes), and the drift check alone; it prints the plan of each statement it ran; a plan
that reads a table whole prints FAIL (exit 1). Target: < 50 ms a scrape.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from large_table import DEFAULT_URL, NOW, Planner, capturing, fill, make_app

from surestep import App
from surestep.clock import FakeClock
from surestep.observe.cluster import ClusterFigures
from surestep.observe.collector import ClusterCollector
from surestep.observe.drift import DriftSettings
from surestep.observe.model_feed import ModelFeed
from surestep.observe.quality import drift_reports
from surestep.storage import Store, open_store

SCHEMA = "bench_scrape"
HOUR = 3600.0
RECENT = 20_000  # runs finished over the last day (~14 a minute)
TASKS = 2_000  # review tasks created over the last day; every tenth still open
CALLS = 200_000  # model calls over 8 days
CALLS_RECENT = 48_000  # of them in the last hour: 6,000 per (step, model), 90 % used
PAIRS = [
    (step, provider, model)
    for step in ("extract", "classify", "summarize", "route")
    for provider, model in (("openai", "gpt-4o"), ("anthropic", "claude-sonnet"))
]
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


def llm_activity(app: App, runs: int) -> None:
    """CALLS model calls of 8 (step, model) pairs: the last hour's, and the 7 days
    before (the drift check's reference window). Each run of the history made 8 calls,
    one per pair; half the pairs answer less surely in the last hour (drifted)."""
    rng = random.Random(7)
    rows = []
    for g in range(CALLS):
        recent = g < CALLS_RECENT
        if recent:
            at = NOW - HOUR + (g + 0.5) * HOUR / CALLS_RECENT
        else:
            at = NOW - HOUR - (g - CALLS_RECENT + 0.5) * 7 * 24 * HOUR / (CALLS - CALLS_RECENT)
        r = g // len(PAIRS) % runs + 1
        run_id = f"{(r * 2654435761) % 4294967296:08x}{r:024d}"  # large_table's run ids
        pair = g % len(PAIRS)
        step, provider, model = PAIRS[pair]
        chosen = g // len(PAIRS) % 10 != 0
        low = 0.35 if recent and pair % 2 else 0.55  # drifted: less sure lately
        confidence = round(rng.uniform(low, 1.0), 6) if chosen else None
        rows.append(
            (run_id, pair, 1, 1, f"wf_{r % 20}", step, provider, model, "h",
             "ok" if chosen else "invalid", 900, 120, 0.0021, True, 0.8, confidence,
             chosen, at)
        )  # fmt: skip
    with app.store.transaction() as cur:
        cur.executemany(
            "INSERT INTO surestep_llm_calls (run_id, position, attempt, seq, workflow, step,"
            " provider, model, prompt_hash, outcome, input_tokens, output_tokens, cost_usd,"
            " priced, latency, confidence, chosen, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    with app.store.transaction() as cur:
        cur.execute("ANALYZE")


def scrape_once(collector: ClusterCollector) -> int:
    return sum(len(family.samples) for family in collector.collect())


def timed(fn: Callable[[], object], repeat: int, after: Callable[[], object] = int) -> list[float]:
    """Seconds each of ``repeat`` calls of ``fn`` took (``after`` runs untimed after each)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        after()
    return times


def show(label: str, times: list[float], note: str = "", target: bool = True) -> None:
    median, worst = statistics.median(times), max(times)
    verdict = ("ok" if median < 0.05 else "OVER 50 ms") if target else ""
    print(
        f"{label:<36} median {median * 1e3:7.2f} ms   max {worst * 1e3:7.2f} ms"
        f"   ({len(times)}){note} {verdict}"
    )


def measure_window(app: App, feed_store: Store, window: float, repeat: int) -> None:
    """``surestep stats`` (everything read at once) and the scrape path (the model figures
    read in the background, as ``cluster_registry(app, background=True)`` does)."""
    name = f"{window / HOUR:.0f} h window"
    clock = FakeClock(start=NOW)  # the data's "last hour" is the hour before NOW
    few = max(3, repeat // 10)
    figures = ClusterFigures(app.store, clock, window)
    figures.read()
    cold = timed(lambda: ClusterFigures(app.store, clock, window).read(), few)
    show(f"stats, {name}, cold", cold, " drift read", target=False)
    show(f"stats, {name}, warm", timed(figures.read, few), " drift reused", target=False)

    def scraper() -> tuple[ClusterCollector, ModelFeed]:
        feed = ModelFeed(feed_store, window)
        return ClusterCollector(ClusterFigures(app.store, clock, window, model_feed=feed)), feed

    started: list[ModelFeed] = []

    def first_scrape() -> None:
        collector, feed = scraper()
        started.append(feed)
        scrape_once(collector)

    show(f"scrape, {name}, cold", timed(first_scrape, repeat, lambda: started.pop().wait()),
         " a collector's first")  # fmt: skip
    collector, feed = scraper()
    scrape_once(collector)
    feed.wait()
    samples = scrape_once(collector)
    show(f"scrape, {name}, warm", timed(lambda: scrape_once(collector), repeat),
         f" {samples} samples")  # fmt: skip

    def start_read() -> None:  # a scrape that finds the model figures stale starts one
        feed.wait()
        clock.advance(feed.refresh_after + 1)
        scrape_once(collector)

    start_read()
    during = timed(lambda: scrape_once(collector), repeat, start_read)
    show(f"scrape, {name}, during a read", during, " another scrape's read under way")
    feed.wait()
    at = clock.now()
    feed.read_now(at)  # drift read as of ``at``: the timed reads reuse it
    reads = timed(lambda: feed.read_now(at), few)
    show(f"  background read, {name}", reads, " drift reused", target=False)


def measure(app: App, planner: Planner, repeat: int) -> list[str]:
    failures = []
    sqlite = app.database_url.startswith("sqlite")
    feed_store = open_store(app.database_url) if sqlite else app.store  # as cluster_registry
    for window in (HOUR, 24 * HOUR):
        measure_window(app, feed_store, window, repeat)
    if sqlite:
        feed_store.close()
    with app.store.reading() as cur:
        reports = drift_reports(cur, NOW, DriftSettings())

    def drift() -> None:
        with app.store.reading() as cur:
            drift_reports(cur, NOW, DriftSettings())

    show("drift check alone", timed(drift, max(3, repeat // 10)), target=False)
    drifted = sum(1 for r in reports if r.drifted)
    print(
        f"  ({len(reports)} (step, model) pairs, at least {min(r.recent_n for r in reports)}"
        f" + {min(r.reference_n for r in reports)} samples each, {drifted} drifted)"
    )
    clock = FakeClock(start=NOW)
    with capturing(app.store) as capture:
        scrape_once(ClusterCollector(ClusterFigures(app.store, clock, 24 * HOUR)))
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
        llm_activity(app, args.runs)
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
        llm_activity(app, args.runs)
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
