"""One reviewer's inbox page and one decision, with 10,000 and 100,000 open review tasks.

    python benchmarks/review_inbox.py [--sizes 10000,100000] [--groups 50]
                                      [--repeat 300] [--decisions 100]
                                      [--only sqlite|postgresql]

The open tasks are spread over --groups groups (one group each; one task in ten is also
assigned to a user). They are written straight into the tables in the shape the review
store writes (a run parked in needs_review, its step, the task, its inbox rows), with
executemany in a few transactions: opening 100,000 tasks through workflows would take
longer than the measurement.

Measured, after one warm-up call:

- inbox: ``app.reviews.inbox("u7", ["g0", "g1", "g2"], limit=50)``: a user and three
  groups, 50 rows by priority (a union of index ranges, one per principal, then the 50
  task rows);
- decision: ``app.reviews.decide(task, "approve", by="u7")`` on tasks of that inbox:
  locks the run and the task, records the decision in the audit chain, resumes the run.

p50 and p95 of --repeat inbox calls and --decisions decisions, on SQLite (a temporary
file) and on PostgreSQL (``SURESTEP_BENCH_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``, in a fresh schema ``bench_review_<n>``
dropped afterwards). Then the plan of the inbox query as the store ran it (captured):
EXPLAIN QUERY PLAN on SQLite, EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL. A plan that reads
a review table whole prints FAIL; an inbox slower than 2x at the largest size than at
the smallest prints FAIL too; either makes the script exit 1. The machine may be
shared and noisy: compare the ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from surestep import App
from surestep.storage import SQLStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
USER, GROUPS = "u7", ("g0", "g1", "g2")
KIND, WORKFLOW = "approve_invoice", "invoice"
NOW = time.time()
BATCH = 10_000
NO_DUE = 1e18  # surestep.review.store.NO_DUE: no due time sorts last


@dataclass
class Figures:
    dialect: str
    tasks: int
    fill_seconds: float
    inbox: list[float]
    decide: list[float]
    plan: list[str]
    full_scans: list[str]


# -- filling ----------------------------------------------------------------------------


def task_rows(first: int, last: int, groups: int) -> tuple[list[Any], ...]:
    """Rows for runs, steps, tasks and inbox entries of tasks first..last-1 (ids from 1)."""
    rng = random.Random(first)
    runs, steps, tasks, inbox = [], [], [], []
    for i in range(first, last):
        run_id = f"bench-{i:07d}"
        group = f"g{i % groups}"
        assignee = f"u{(i // 10) % 100}" if i % 10 == 0 else None
        priority = rng.randint(0, 100)
        due_at = NOW + rng.uniform(600, 7 * 86400) if i % 4 else None
        created = NOW - rng.uniform(0, 86400)
        payload = json.dumps({"vendor": f"ACME {i}", "total": f"{rng.uniform(1, 9000):.2f}"})
        runs.append(
            (run_id, WORKFLOW, "1", "needs_review", "[]", created, created, 1, f'["review:{i}"]')
        )
        steps.append((run_id, 0, f"review:{KIND}", "needs_review", 0, created))
        tasks.append(
            (i, run_id, 0, KIND, WORKFLOW, "open", payload, "[]", payload, 0.5, None, None,
             None, assignee, json.dumps([group]), "[]", 0, priority, None, due_at, "keep",
             created, created)
        )  # fmt: skip
        who = ([f"user:{assignee}"] if assignee else []) + [f"group:{group}"]
        sort_due = NO_DUE if due_at is None else due_at
        inbox += [(p, priority, sort_due, i, KIND) for p in who]
    return runs, steps, tasks, inbox


INSERTS = (
    "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs, created_at,"
    " updated_at, lease_token, waiting_for) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO surestep_steps (run_id, position, name, state, attempts, started_at)"
    " VALUES (?, ?, ?, ?, ?, ?)",
    "INSERT INTO surestep_review_tasks (id, run_id, position, kind, workflow, state, payload,"
    " sensitive, proposal, confidence, form, instructions, context, assignee, groups,"
    " escalate_to, level, priority, sla, due_at, on_expiry, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO surestep_review_inbox (principal, priority, due_at, task_id, kind)"
    " VALUES (?, ?, ?, ?, ?)",
)


def fill(app: App, dialect: str, tasks: int, groups: int) -> float:
    started = time.perf_counter()
    for first in range(1, tasks + 1, BATCH):
        last = min(first + BATCH, tasks + 1)
        rows = task_rows(first, last, groups)
        with app.store.transaction() as cur:
            for sql, batch in zip(INSERTS, rows, strict=True):
                cur.executemany(sql, batch)
    with app.store.transaction() as cur:
        if dialect == "postgresql":
            # Ids were given explicitly: later tasks must not reuse them.
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('surestep_review_tasks', 'id'),"
                " (SELECT MAX(id) FROM surestep_review_tasks))"
            )
        cur.execute("ANALYZE")
    return time.perf_counter() - started


# -- measuring ------------------------------------------------------------------------


def timed(call: Callable[[], object], times: int) -> list[float]:
    call()  # warm: connections, statement caches, pages
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def measure_decisions(app: App, count: int) -> list[float]:
    """Decide tasks from the reviewer's inbox, one at a time."""
    pending = [t.id for t in app.reviews.inbox(USER, GROUPS, limit=min(count + 1, 1000))]
    if len(pending) <= count:
        raise SystemExit(f"only {len(pending)} tasks in the inbox; lower --decisions")
    app.reviews.decide(pending.pop(), "approve", by=USER)  # warm
    samples = []
    for task_id in pending[:count]:
        started = time.perf_counter()
        app.reviews.decide(task_id, "approve", by=USER, comment="ok")
        samples.append(time.perf_counter() - started)
    return samples


class Recording:
    """A cursor that notes each statement it executes (qmark SQL and parameters)."""

    def __init__(self, cursor: Any, seen: list[tuple[str, list[Any]]]) -> None:
        self._cursor, self._seen = cursor, seen

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._seen.append((sql, list(params)))
        return self._cursor.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@contextmanager
def first_read(store: SQLStore) -> Iterator[list[tuple[str, list[Any]]]]:
    """Capture the first statement the store reads with (the inbox's union)."""
    seen: list[tuple[str, list[Any]]] = []
    original = store.reading

    @contextmanager
    def reading() -> Iterator[Any]:
        with original() as cur:
            yield Recording(cur, seen)

    store.reading = reading  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del store.reading


def inbox_plan(app: App, dialect: str, target: str) -> list[str]:
    with first_read(app.store) as seen:  # type: ignore[arg-type]
        app.reviews.inbox(USER, GROUPS, limit=50)
    sql, params = seen[0]
    if dialect == "sqlite":
        with sqlite3.connect(target) as conn:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        depth: dict[int, int] = {0: -1}
        lines = []
        for node, parent, _, detail in rows:  # indented as the sqlite3 shell shows it
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + detail)
        return lines
    import psycopg

    with psycopg.connect(target, prepare_threshold=None) as conn:
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql.replace('?', '%s')}", params)
        return [row[0] for row in rows.fetchall()]


def full_scans(dialect: str, plan: list[str]) -> list[str]:
    if dialect == "postgresql":
        return re.findall(r"Seq Scan on (surestep_review_\w+)", "\n".join(plan))
    found = [re.match(r"\s*SCAN (surestep_review_\w+)", line) for line in plan]
    return [m.group(1) for m, line in zip(found, plan, strict=True) if m and "INDEX" not in line]


def bench(app: App, dialect: str, target: str, tasks: int, args: argparse.Namespace) -> Figures:
    filled = fill(app, dialect, tasks, args.groups)
    inbox = timed(lambda: app.reviews.inbox(USER, GROUPS, limit=50), args.repeat)
    plan = inbox_plan(app, dialect, target)
    decide = measure_decisions(app, args.decisions)
    return Figures(dialect, tasks, filled, inbox, decide, plan, full_scans(dialect, plan))


# -- databases --------------------------------------------------------------------------


def on_sqlite(tasks: int, args: argparse.Namespace) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "review.db"
        app = App(f"sqlite:///{path}")
        try:
            return bench(app, "sqlite", str(path), tasks, args)
        finally:
            app.close()


def on_postgres(tasks: int, args: argparse.Namespace) -> Figures:
    import psycopg

    schema = f"bench_review_{tasks}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}options={quote(f'-csearch_path={schema}')}"
    app = App(url)
    try:
        return bench(app, "postgresql", url, tasks, args)
    finally:
        app.close()
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- report ---------------------------------------------------------------------------


def ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(results: list[Figures]) -> list[str]:
    failures: list[str] = []
    print(
        f"{'database':<11}{'open tasks':>11}{'fill s':>8}{'inbox p50':>11}{'inbox p95':>11}"
        f"{'decide p50':>12}{'decide p95':>12}"
    )
    for r in results:
        print(
            f"{r.dialect:<11}{r.tasks:>11,}{r.fill_seconds:>8.1f}{ms(r.inbox, 0.5):>9.2f}ms"
            f"{ms(r.inbox, 0.95):>9.2f}ms{ms(r.decide, 0.5):>10.2f}ms{ms(r.decide, 0.95):>10.2f}ms"
        )
    for dialect in dict.fromkeys(r.dialect for r in results):
        mine = sorted((r for r in results if r.dialect == dialect), key=lambda r: r.tasks)
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        ratios = {
            name: statistics.median(getattr(large, name)) / statistics.median(getattr(small, name))
            for name in ("inbox", "decide")
        }
        verdict = "ok" if ratios["inbox"] <= 2 else "FAIL (target: within 2x)"
        print(
            f"{dialect}: {large.tasks:,}/{small.tasks:,} p50 ratio: inbox {ratios['inbox']:.2f}x"
            f" ({verdict}), decide {ratios['decide']:.2f}x"
        )
        if ratios["inbox"] > 2:
            failures.append(f"{dialect}: inbox {ratios['inbox']:.2f}x slower at {large.tasks:,}")
    for r in results:
        print(f"\n-- {r.dialect}, {r.tasks:,} open tasks: plan of the inbox query")
        print("\n".join(f"   {line}" for line in r.plan))
        if r.full_scans:
            print(f"   FAIL: reads {', '.join(sorted(set(r.full_scans)))} whole")
            failures.append(f"{r.dialect} {r.tasks:,}: full scan of {r.full_scans}")
        else:
            print("   index-backed: no review table is read whole")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("SURESTEP_BENCH_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    results: list[Figures] = []
    for dialect, run in (("sqlite", on_sqlite), ("postgresql", on_postgres)):
        if args.only in (None, dialect):
            for size in sizes:
                print(f"{dialect}: {size:,} open tasks ...", file=sys.stderr, flush=True)
                results.append(run(size, args))
    failures = report(results)
    if failures:
        print("\nFAIL:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
