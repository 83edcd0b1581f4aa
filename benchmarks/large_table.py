"""1,000,000 finished runs: the claim, list, lease and prune queries on PostgreSQL and SQLite.

    python benchmarks/large_table.py [--url postgresql://postgres@127.0.0.1:5432/test]
                                     [--runs 1000000] [--repeat 200] [--backlog 100000]
                                     [--only postgresql|sqlite]

Fills a fresh schema (PostgreSQL: ``bench_large``, dropped afterwards) or a temporary
SQLite file with finished runs spread over 30 days, each with one step, one attempt and
three events, plus a handful of pending, waiting, running and dead-lettered runs; then
times each store operation (median of up to --repeat calls, at most ~2 s each) and
prints the plan of every statement the operation ran, as the store ran it (captured, not
copied): EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL, both the plan for the given values and
the generic plan the server may switch to once psycopg prepares the statement, and
EXPLAIN QUERY PLAN on SQLite. A hot-path statement whose plan reads surestep_runs whole
(PostgreSQL ``Seq Scan``, SQLite ``SCAN`` without an index) prints FAIL, and the script
exits 1 at the end.

With a small --runs the planner rightly prefers reading small tables whole, so the FAIL
checks mean something at the default size only.

Last, --backlog due runs of a workflow the worker does not serve are queued ahead of its
own, and claim and next_due are timed again: the claimable index is ordered by due time
only, so they step over that backlog.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from surestep import App, State
from surestep.storage import SQLStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "bench_large"
DAY = 86400.0
NOW = time.time()
WORKER = "benchhost/0:4242:abcdef"
# The App serves two workflows, so the claim filters on two (name, version) pairs.
SERVED = ("bench", "wf_1")


def mod(a: str, n: int) -> str:
    # No %: the store's PostgreSQL cursor would read it as a placeholder.
    return f"(({a}) - (({a}) / {n}) * {n})"


PERCENTILE = mod("g", 100)
FINISHED = (
    f"CASE WHEN {PERCENTILE} < 90 THEN 'success' WHEN {PERCENTILE} < 97 THEN 'failed'"
    " ELSE 'cancelled' END"
)

# -- filling --------------------------------------------------------------------------


def run_id_sql(dialect: str, g: str) -> str:
    """A 32-hex-digit id from the integer ``g``, scattered like uuid4().hex."""
    if dialect == "postgresql":
        scattered = f"to_hex({mod(f'({g})::bigint * 2654435761', 4294967296)})"
        return f"lpad({scattered}, 8, '0') || lpad(({g})::text, 24, '0')"
    return f"printf('%08x%024d', {mod(f'({g}) * 2654435761', 4294967296)}, {g})"


def fill_statements(dialect: str, runs: int) -> list[str]:
    """INSERT ... SELECT statements for ``runs`` finished runs and their children."""
    start, gap = NOW - 31 * DAY, 30 * DAY / runs
    created = f"{start} + g * {gap}"
    # updated_at stays in created_at's order, so the oldest N runs are easy to name
    updated = f"{created} + 0.5 + {mod('g', 7)} * 0.1"

    def series(n: int) -> tuple[str, str]:
        if dialect == "postgresql":
            return "", f"generate_series(1, {n}) AS s(g)"
        return (
            f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) ",
            "s",
        )

    head, source = series(runs)
    rid = run_id_sql(dialect, "g")
    statements = [
        f"{head}INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
        f" output, error, created_at, updated_at, lease_token)"
        f" SELECT {rid}, 'wf_' || {mod('g', 20)}, '1', {FINISHED}, '{{\"k\":10}}',"
        f" CASE WHEN {PERCENTILE} < 90 THEN '45' END,"
        f' CASE WHEN {PERCENTILE} >= 90 THEN \'{{"type":"ValueError","message":"no"}}\' END,'
        f" {created}, {updated}, 1 FROM {source}",
        f"{head}INSERT INTO surestep_steps (run_id, position, name, state, output, attempts,"
        f" started_at, finished_at) SELECT {rid}, 0, 'noop', 'success', '45', 1, {created},"
        f" {created} + 0.2 FROM {source}",
        f"{head}INSERT INTO surestep_attempts (run_id, position, attempt, state, started_at,"
        f" finished_at, worker) SELECT {rid}, 0, 1, 'success', {created}, {created} + 0.2,"
        f" 'w' FROM {source}",
    ]
    head, source = series(3 * runs)
    run = "(g + 2) / 3"
    statements.append(
        f"{head}INSERT INTO surestep_events (run_id, from_state, to_state, at, actor, reason)"
        f" SELECT {run_id_sql(dialect, run)},"
        f" CASE {mod('g', 3)} WHEN 1 THEN NULL WHEN 2 THEN 'pending' ELSE 'running' END,"
        f" CASE {mod('g', 3)} WHEN 1 THEN 'pending' WHEN 2 THEN 'running' ELSE 'success' END,"
        f" {start} + g * {gap / 3}, 'app', NULL FROM {source}"
    )
    return statements


def run_row(
    run_id: str,
    workflow: str,
    state: str,
    available: float | None = None,
    owner: str | None = None,
    lease: float | None = None,
) -> tuple[Any, ...]:
    """A row for HOT_INSERT."""
    at = NOW - 600
    return (run_id, workflow, "1", state, '{"k":10}', at, at, available, owner, 1, lease)


def hot_runs() -> list[tuple[Any, ...]]:
    """The runs a worker or an operator is looking for, among the finished ones."""
    rows = [run_row(f"pending-{i:04d}", "bench", "pending", NOW - 60 + i) for i in range(40)]
    rows += [run_row(f"backoff-{i:04d}", "bench", "waiting", NOW + 3600 + i) for i in range(10)]
    rows += [run_row(f"retry-{i:04d}", "wf_1", "waiting", NOW - 5 - i) for i in range(10)]
    rows += [
        run_row(f"running-{i:04d}", "bench", "running", owner="otherhost/1:7:abc", lease=NOW + 30)
        for i in range(4)
    ]
    rows.append(
        run_row("lapsed-0000", "bench", "running", owner="otherhost/1:8:d", lease=NOW - 100)
    )
    rows += [run_row(f"parked-{i:04d}", "bench", "dead_letter") for i in range(5)]
    rows += [run_row(f"parked-wf3-{i:04d}", "wf_3", "dead_letter") for i in range(5)]
    return rows


HOT_INSERT = (
    "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs, created_at,"
    " updated_at, available_at, lease_owner, lease_token, lease_expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def fill(store: SQLStore, dialect: str, runs: int) -> float:
    t0 = time.perf_counter()
    with store.transaction() as cur:
        for statement in fill_statements(dialect, runs):
            cur.execute(statement)
        cur.executemany(HOT_INSERT, hot_runs())
    with store.transaction() as cur:
        cur.execute("ANALYZE")
    return time.perf_counter() - t0


# -- capturing the statements an operation runs -----------------------------------------


@dataclass
class Statement:
    sql: str
    params: Sequence[Any]


@dataclass
class Capture:
    """The statements the store ran while installed on it (qmark SQL, first params)."""

    statements: list[Statement] = field(default_factory=list)

    def wrap(self, cursor: Any) -> Any:
        capture = self

        class Recording:
            rowcount = property(lambda _: cursor.rowcount)

            def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
                capture.statements.append(Statement(sql, list(params)))
                return cursor.execute(sql, params)

            def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any:
                params = list(params)
                if params:
                    capture.statements.append(Statement(sql, list(params[0])))
                return cursor.executemany(sql, params)

            def fetchone(self) -> Any:
                return cursor.fetchone()

            def fetchall(self) -> list[Any]:
                return list(cursor.fetchall())

        return Recording()


@contextmanager
def capturing(store: SQLStore) -> Iterator[Capture]:
    """Record what ``store`` runs through its transaction() and reading() cursors."""
    capture = Capture()
    originals = {"transaction": store.transaction, "reading": store.reading}

    def wrapped(name: str) -> Callable[[], Any]:
        @contextmanager
        def opened() -> Iterator[Any]:
            with originals[name]() as cur:
                yield capture.wrap(cur)

        return opened

    for name in originals:
        setattr(store, name, wrapped(name))
    try:
        yield capture
    finally:
        for name in originals:
            delattr(store, name)


# -- plans ----------------------------------------------------------------------------


class Planner:
    """EXPLAIN for one dialect; ``full_scans`` names tables a plan reads whole."""

    def __init__(self, dialect: str, target: str) -> None:
        self.dialect = dialect
        if dialect == "postgresql":
            import psycopg

            self.conn: Any = psycopg.connect(target, prepare_threshold=None)
            self.client = psycopg.ClientCursor(self.conn)
        else:
            self.conn = sqlite3.connect(target)

    def close(self) -> None:
        self.conn.close()

    def plans(self, st: Statement) -> list[tuple[str, list[str]]]:
        """[(label, plan lines)]: PostgreSQL's custom and generic plans, or SQLite's."""
        if self.dialect == "sqlite":
            rows = self.conn.execute(f"EXPLAIN QUERY PLAN {st.sql}", st.params).fetchall()
            return [("query plan", [row[3] for row in rows])]
        pg_sql = st.sql.replace("?", "%s")
        try:
            # ANALYZE runs the statement: writes and row locks are rolled back.
            rows = self.conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {pg_sql}", st.params)
            custom = [row[0] for row in rows.fetchall()]
        finally:
            self.conn.rollback()
        return [("explain analyze", custom), ("generic plan", self._generic(st))]

    def _generic(self, st: Statement) -> list[str]:
        numbered = iter(range(1, st.sql.count("?") + 1))
        dollar = re.sub(r"\?", lambda _: f"${next(numbered)}", st.sql)
        marks = ", ".join("%s" for _ in st.params)
        execute = f"EXECUTE surestep_probe({marks})" if st.params else "EXECUTE surestep_probe"
        try:
            self.conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            self.conn.execute(f"PREPARE surestep_probe AS {dollar}")
            self.client.execute(f"EXPLAIN {execute}", st.params)
            return [row[0] for row in self.client.fetchall()]
        finally:
            # psycopg prepares nothing on this connection, so DEALLOCATE ALL is safe.
            self.conn.rollback()
            self.conn.execute("DEALLOCATE ALL")
            self.conn.rollback()

    def full_scans(self, plan: list[str]) -> list[str]:
        if self.dialect == "postgresql":
            return re.findall(r"Seq Scan on (surestep_\w+)", "\n".join(plan))
        return [m for line in plan if (m := _sqlite_scan(line))]


def _sqlite_scan(line: str) -> str | None:
    found = re.match(r"SCAN (surestep_\w+)", line)
    return found.group(1) if found and "INDEX" not in line else None


# -- timing ---------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    call: Callable[[], Any]
    hot: bool = True  # a hot path: a plan reading surestep_runs whole is a FAIL
    reset: Callable[[Any], None] | None = None  # undoes what ``call`` changed


def timed(case: Case, repeat: int, budget: float = 2.0) -> tuple[float, int]:
    """(median seconds, calls): ``repeat`` calls, or fewer once ``budget`` s are spent;
    the case's reset runs after each call, outside the clock."""
    times: list[float] = []
    spent = time.perf_counter()
    while len(times) < repeat and (len(times) < 5 or time.perf_counter() - spent < budget):
        t0 = time.perf_counter()
        outcome = case.call()
        times.append(time.perf_counter() - t0)
        if case.reset is not None:
            case.reset(outcome)
    return statistics.median(times), len(times)


def claim_case(app: App) -> Case:
    store = app.store
    keys = [(wf.name, wf.version) for wf in app.registry.workflows()]
    due = {row[0]: row[7] for row in hot_runs() if row[3] in ("pending", "waiting")}

    def claim() -> Any:
        return store.claim(WORKER, keys, 8, time.time(), 30.0)

    def reset(claimed: Any) -> None:
        # Put the claimed runs back as they were, so every call claims the same way.
        with store.transaction() as cur:
            cur.executemany(
                "UPDATE surestep_runs SET state = CASE WHEN substr(id, 1, 6) = 'retry-'"
                " THEN 'waiting' ELSE 'pending' END, available_at = ?, lease_owner = NULL,"
                " lease_expires_at = NULL WHERE id = ?",
                [(due[run.id], run.id) for run in claimed],
            )

    return Case("claim (limit 8)", claim, reset=reset)


def cases(app: App, some_run: str) -> list[Case]:
    store = app.store
    keys = [(wf.name, wf.version) for wf in app.registry.workflows()]
    return [
        claim_case(app),
        Case("next_due", lambda: store.next_due(keys)),
        Case("expired_leases", lambda: store.expired_leases(time.time())),
        Case("leases_of (this host)", lambda: store.leases_of("benchhost/0:")),
        Case("get_run", lambda: app.get_run(some_run)),
        Case("list_runs state=dead_letter", lambda: app.list_runs(state="dead_letter")),
        Case("list_runs workflow=wf_3", lambda: app.list_runs(workflow="wf_3", limit=50)),
        Case(
            "list_runs dead_letter+wf_3",
            lambda: app.list_runs(state="dead_letter", workflow="wf_3"),
        ),
        Case("list_runs state=success", lambda: app.list_runs(state=State.SUCCESS)),
        Case("list_runs (no filter)", lambda: app.list_runs()),
        # not called by the engine or the CLI; shown for what it costs
        Case("count_by_state", store.count_by_state, hot=False),
    ]


# -- one database ---------------------------------------------------------------------


def make_app(url: str) -> App:
    app = App(url)
    for name in SERVED:

        @app.workflow(name=name)
        def served(k: int) -> int:
            return k

    return app


@dataclass
class Report:
    dialect: str
    store: SQLStore
    planner: Planner
    failures: list[str] = field(default_factory=list)

    def plans(self, case: str, statements: list[Statement], hot: bool, full: bool) -> None:
        """Plans of the statements a case ran; with ``full``, the first one's in full."""
        seen: set[str] = set()
        for st in statements:
            if st.sql in seen:
                continue
            seen.add(st.sql)
            print(f"  > {shorten(st.sql, width=None)}")
            for label, plan in self.planner.plans(st):
                scans = self.planner.full_scans(plan)
                if (full and len(seen) == 1) or scans:
                    print(f"    {label}:")
                    print("\n".join(f"      {shorten(line)}" for line in plan))
                else:
                    print(f"    {label}: {summary(plan)}")
                if hot and "surestep_runs" in scans:
                    self.failures.append(
                        f"{self.dialect} {case}: {label} reads surestep_runs whole"
                    )
                    print(f"FAIL  {case}: the {label} reads surestep_runs whole")


def shorten(text: str, width: int | None = 240) -> str:
    """SQL or a plan line, with long lists of placeholders or values cut short."""
    text = re.sub(r"\?(?:, \?){4,}", lambda m: f"?, ... ({m.group(0).count('?')} values)", text)
    return text if width is None or len(text) <= width else f"{text[: width - 4]} ..."


def summary(plan: list[str]) -> str:
    """The access paths of a plan, on one line."""
    nodes = [
        re.sub(r"\s+\(cost=.*", "", line).strip(" ->")
        for line in plan
        if "Scan" in line or "SEARCH" in line or "SCAN" in line
    ]
    return "; ".join(nodes) or (plan[0].strip() if plan else "(no table read)")


def measure(case: Case, report: Report, repeat: int, *, full: bool, first_only: bool) -> None:
    """Time one case, then print the plans of the statements its first call ran."""
    store = report.store
    with capturing(store) as capture:
        outcome = case.call()
    if case.reset is not None:
        case.reset(outcome)
    median, calls = timed(case, repeat)
    print(f"{case.name:<30}{median * 1e3:8.3f} ms  (median of {calls})")
    statements = capture.statements[:1] if first_only else capture.statements
    report.plans(case.name, statements, case.hot, full)


def exercise(app: App, report: Report, repeat: int) -> None:
    with app.store.reading() as cur:
        cur.execute("SELECT id FROM surestep_runs WHERE state = 'success' LIMIT 1")
        some_run = cur.fetchone()[0]
    for case in cases(app, some_run):
        full = case.name.startswith(("claim", "list_runs", "next_due"))
        measure(case, report, repeat, full=full, first_only=False)


def oldest_cutoff(store: SQLStore, size: int) -> float:
    """A time just after the ``size``-th oldest finished run was last changed."""
    with store.reading() as cur:
        cur.execute(
            "SELECT updated_at FROM surestep_runs WHERE state IN ('success', 'failed',"
            " 'cancelled') ORDER BY updated_at LIMIT 1 OFFSET ?",
            (size - 1,),
        )
        row = cur.fetchone()
    return NOW if row is None else float(row[0]) + 1e-3


def prune_slices(app: App, report: Report, runs: int, slices: int = 3) -> None:
    """Prune the oldest 10,000 finished runs (fewer in a small table) ``slices`` times;
    print the median."""
    store, size = app.store, min(10_000, runs // 10)
    times, statements, first = [], [], 0.0
    for i in range(slices):
        before = oldest_cutoff(store, size)
        with capturing(store) if i == 0 else _nothing() as capture:
            t0 = time.perf_counter()
            pruned = store.prune(before, 1000)
            times.append(time.perf_counter() - t0)
        if capture is not None:
            statements, first = capture.statements, before
        if pruned != size:
            report.failures.append(f"{report.dialect} prune: deleted {pruned}, not {size}")
    median = statistics.median(times)
    print(
        f"{f'prune {size:,} old runs':<30}{median * 1e3:8.1f} ms  (median of {slices}; "
        f"{size / median:,.0f} runs/s with their steps, attempts and events, batch 1000)"
    )
    # The first slice's runs are gone: plan its statements with the next slice's cutoff
    # (the DELETEs, by the first slice's ids, now find nothing; their plans still show).
    following = oldest_cutoff(store, size)
    replanned = [
        Statement(st.sql, [following if p == first else p for p in st.params]) for st in statements
    ]
    report.plans("prune", replanned, True, True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def backlog(app: App, report: Report, n: int, repeat: int) -> None:
    """Queue ``n`` due runs of a workflow this App does not serve ahead of its own."""
    with app.store.transaction() as cur:
        cur.executemany(
            HOT_INSERT,
            [run_row(f"other-{i:07d}", "other", "pending", NOW - DAY + i * 1e-3) for i in range(n)],
        )
    with app.store.transaction() as cur:
        cur.execute("ANALYZE")
    print(f"-- with {n:,} due runs of another workflow queued ahead ({report.dialect})")
    keys = [(wf.name, wf.version) for wf in app.registry.workflows()]
    for case in (claim_case(app), Case("next_due", lambda: app.store.next_due(keys))):
        # No FAIL here: the plans are the same as above, only slower.
        case.hot = False
        measure(case, report, repeat, full=True, first_only=True)


# -- main -----------------------------------------------------------------------------


def heading(dialect: str, runs: int, seconds: float) -> None:
    print(
        f"== {dialect}: {runs:,} finished runs (90% success, 7% failed, 3% cancelled; 1 step,"
        f" 1 attempt, 3 events each) + {len(hot_runs())} pending/waiting/running/dead-letter"
        f" runs; filled and analysed in {seconds:.0f} s"
    )


def mebibytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB" if size >= 2**20 else f"{size / 1024:,.0f} KiB"


def postgres_sizes(app: App) -> None:
    with app.store.reading() as cur:
        cur.execute(
            "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
            " AND substr(c.relname, 1, 13) = 'surestep_runs' ORDER BY c.relkind DESC, c.relname"
        )
        sizes = ", ".join(f"{name} {mebibytes(size)}" for name, size in cur.fetchall())
    print(f"sizes                 {sizes}")


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
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        heading(
            f"PostgreSQL {version[0] if version else '?'}",
            args.runs,
            fill(app.store, "postgresql", args.runs),
        )
        postgres_sizes(app)
        planner = Planner("postgresql", url)
        report = Report("postgresql", app.store, planner)
        run_all(app, report, args)
        return report.failures
    finally:
        app.close()
        if planner is not None:
            planner.close()
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def sqlite(args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "large.db")
        app = make_app(f"sqlite:///{path}")
        seconds = fill(app.store, "sqlite", args.runs)
        heading(f"SQLite {sqlite3.sqlite_version}", args.runs, seconds)
        print(f"sizes                 file {mebibytes(path.stat().st_size)}")
        planner = Planner("sqlite", str(path))
        try:
            report = Report("sqlite", app.store, planner)
            run_all(app, report, args)
            return report.failures
        finally:
            planner.close()
            app.close()


def run_all(app: App, report: Report, args: argparse.Namespace) -> None:
    exercise(app, report, args.repeat)
    prune_slices(app, report, args.runs)
    if args.backlog:
        backlog(app, report, args.backlog, args.repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=100_000)
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
    print("ok    no hot-path plan reads surestep_runs whole")


if __name__ == "__main__":
    main()
