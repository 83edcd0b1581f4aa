"""How long an idle worker takes to pick up a run started by another process.

    python benchmarks/pickup_latency.py [--url postgresql://…] [--runs 50]

Starts one worker (in a thread, on its own App) and, from a second App, starts runs one
at a time, each only after the previous finished, so the worker is idle every time.
Prints the median and p95 time from `start()` returning to the run's first step
starting. On PostgreSQL the worker is woken by NOTIFY; on SQLite it polls every 0.1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from typing import Any
from urllib.parse import quote

from surestep import App


def measure(url: str, runs: int) -> list[float]:
    worker_app, client = App(url), App(url)
    began: dict[str, float] = {}
    for app in (worker_app, client):

        @app.step(name="mark")
        def mark(key: str) -> None:
            began.setdefault(key, time.perf_counter())

        @app.workflow(name="ping")
        def ping(key: str) -> None:
            mark(key)

    worker = worker_app.worker(concurrency=1)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    thread.start()
    time.sleep(0.5)
    delays = []
    try:
        for i in range(runs):
            key = f"k{i}"
            time.sleep(0.05)  # let the worker go idle
            t0 = time.perf_counter()
            handle = client.start("ping", key)
            handle.result(timeout=30)
            delays.append(began[key] - t0)
    finally:
        worker.stop()
        thread.join(10)
        worker_app.close()
        client.close()
    return delays


def postgres_schema(base: str) -> tuple[str, Any]:
    import psycopg

    schema = f"pickup_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    return f"{base}?options={quote(f'-csearch_path={schema}')}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    url, drop = postgres_schema(args.url)
    try:
        pg = sorted(measure(url, args.runs))
    finally:
        drop()
    with tempfile.TemporaryDirectory() as tmp:
        lite = sorted(measure(f"sqlite:///{tmp}/pickup.db", args.runs))
    for name, delays in (("PostgreSQL (NOTIFY)", pg), ("SQLite (poll 0.1 s)", lite)):
        p95 = delays[int(len(delays) * 0.95)]
        print(
            f"{name:22s} start() to first step: median {statistics.median(delays) * 1e3:.1f} ms,"
            f" p95 {p95 * 1e3:.1f} ms ({len(delays)} runs, worker idle each time)"
        )


if __name__ == "__main__":
    main()
