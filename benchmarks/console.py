"""The console's pages rendered server-side with 100,000 open review tasks and 1,000,000 runs.

    python benchmarks/console.py [--runs 1000000] [--tasks 100000] [--repeat 200]
                                 [--url postgresql://postgres@127.0.0.1:5432/test]
                                 [--only sqlite|postgresql]

Fills a fresh SQLite file and a fresh PostgreSQL schema (``bench_console``, dropped
afterwards) with large_table.py's finished runs (each with a step, an attempt and three
events) and review_inbox.py's open tasks (each with its parked run, step and inbox rows,
spread over 50 groups), then requests pages through the whole ASGI app (session cookie,
role check, CSRF token, library call, Jinja2, security headers), in process with
starlette's TestClient, as a signed-in reviewer (user u7 of groups g0, g1, g2) and an
operator:

- inbox: ``GET /console/inbox`` (the reviewer's 50 first tasks by priority);
- task: ``GET /console/tasks/ID`` (one task of that inbox, its form and instructions);
- run: ``GET /console/runs/ID`` of a finished run (steps, attempts, events, model calls);
- run in review: the same for a run parked on a review;
- runs list: ``GET /console/runs`` (newest 50).

p50 and p95 of --repeat requests each, after one warm-up. Target: inbox and run page
under 100 ms p95 on both databases (FAIL otherwise, exit 1). The machine may be shared:
figures vary between runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import large_table
import review_inbox
from starlette.testclient import TestClient

from surestep import App
from surestep.web import create_app

TARGET_MS = 100.0
SCHEMA = "bench_console"


class Args(argparse.Namespace):
    runs: int
    tasks: int
    repeat: int
    url: str
    only: str | None
    groups: int = 50


def fill(app: App, dialect: str, args: Args) -> float:
    started = time.perf_counter()
    large_table.fill(app.store, dialect, args.runs)  # type: ignore[arg-type]
    review_inbox.fill(app, dialect, args.tasks, args.groups)
    return time.perf_counter() - started


def client_of(api: object, app: App, name: str, role: str, groups: list[str]) -> TestClient:
    token = app.users.add(name, role, groups)
    opened = app.sessions.open(token)
    assert opened is not None
    client = TestClient(api, base_url="http://127.0.0.1")  # type: ignore[arg-type]
    client.cookies.set("surestep_session", opened[0], path="/console/")
    return client


def timed(get: Callable[[], object], repeat: int) -> list[float]:
    get()  # warm: connections, statement caches, templates
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        get()
        samples.append(time.perf_counter() - started)
    return samples


def page(client: TestClient, path: str) -> Callable[[], object]:
    def get() -> object:
        answer = client.get(path)
        if answer.status_code != 200:
            raise SystemExit(f"GET {path}: {answer.status_code} {answer.text[:300]}")
        return answer

    return get


def measure(app: App, args: Args) -> dict[str, list[float]]:
    api = create_app(app)
    reviewer = client_of(api, app, review_inbox.USER, "reviewer", list(review_inbox.GROUPS))
    operator = client_of(api, app, "olga", "operator", [])
    with reviewer, operator:
        task = app.reviews.inbox(review_inbox.USER, review_inbox.GROUPS, limit=1)[0]
        finished = app.list_runs(limit=1, before=large_table.NOW - 86400)[0]
        paths = {
            "inbox": (reviewer, "/console/inbox"),
            "task": (reviewer, f"/console/tasks/{task.id}"),
            "run": (operator, f"/console/runs/{quote(finished.id)}"),
            "run in review": (operator, f"/console/runs/{quote(task.run_id)}"),
            "runs list": (operator, "/console/runs"),
        }
        return {name: timed(page(c, p), args.repeat) for name, (c, p) in paths.items()}


def on_sqlite(args: Args) -> tuple[float, dict[str, list[float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        app = App(f"sqlite:///{Path(tmp) / 'console.db'}")
        try:
            return fill(app, "sqlite", args), measure(app, args)
        finally:
            app.close()


def on_postgres(args: Args) -> tuple[float, dict[str, list[float]]]:
    import psycopg

    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        admin.execute(f"CREATE SCHEMA {SCHEMA}")
    sep = "&" if "?" in args.url else "?"
    app = App(f"{args.url}{sep}options={quote(f'-csearch_path={SCHEMA}')}")
    try:
        return fill(app, "postgresql", args), measure(app, args)
    finally:
        app.close()
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument(
        "--url", default=os.environ.get("SURESTEP_BENCH_POSTGRES_URL", large_table.DEFAULT_URL)
    )
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args(namespace=Args())
    failures = []
    print(f"{args.runs:,} finished runs and {args.tasks:,} open review tasks; {args.repeat} "
          f"requests a page\n")  # fmt: skip
    print(f"{'database':<12}{'page':<15}{'p50':>10}{'p95':>10}")
    for dialect, run in (("sqlite", on_sqlite), ("postgresql", on_postgres)):
        if args.only not in (None, dialect):
            continue
        print(f"{dialect}: filling ...", file=sys.stderr, flush=True)
        filled, figures = run(args)
        print(f"{dialect}: filled in {filled:.0f} s", file=sys.stderr, flush=True)
        for name, samples in figures.items():
            p95 = ms(samples, 0.95)
            verdict = ""
            if name in ("inbox", "run", "run in review"):
                verdict = "ok" if p95 < TARGET_MS else f"FAIL (target < {TARGET_MS:.0f} ms)"
                if p95 >= TARGET_MS:
                    failures.append(f"{dialect} {name}: p95 {p95:.1f} ms")
            print(f"{dialect:<12}{name:<15}{ms(samples, 0.5):>8.1f}ms{p95:>8.1f}ms  {verdict}")
    if failures:
        print("\nFAIL:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
