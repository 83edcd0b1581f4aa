"""W workflows of K no-op steps on SQLite: throughput, per-step overhead, latency, RSS.

    python benchmarks/engine_sqlite.py [--workflows 1000] [--steps 10] [--concurrency 1]

Prints the raw INSERT+COMMIT cost on the same file for comparison. Figures are medians
of what one run measured; the machine is shared, so compare ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from surestep import App


def raw_commit_cost(path: Path, n: int = 2000) -> float:
    """Median seconds of one INSERT+COMMIT, with the pragmas surestep uses."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, v TEXT)")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO raw (v) VALUES (?)", ("x" * 32,))
        conn.execute("COMMIT")
        times.append(time.perf_counter() - t0)
    conn.close()
    return statistics.median(times)


def build(url: str, steps: int) -> tuple[App, object, list[float], list[str]]:
    app = App(url)
    latencies: list[float] = []
    finished: list[str] = []

    @app.step()
    def noop(i: int) -> int:
        return i

    @app.workflow(name="bench")
    def bench(k: int) -> int:
        total = 0
        for i in range(k):
            total += noop(i)
        return total

    last: dict[str, float] = {}

    @app.hook("before_step")
    def before(step: object) -> None:
        last["t"] = time.perf_counter()

    @app.hook("after_step")
    def after(step: object, state: object, seconds: float) -> None:
        latencies.append(time.perf_counter() - last["t"])

    @app.hook("on_run_state")
    def settled(run_id: str, from_state: object, to_state: object) -> None:
        finished.append(run_id)

    return app, bench, latencies, finished


def plain_cost(steps: int, n: int = 20000) -> float:
    def noop(i: int) -> int:
        return i

    t0 = time.perf_counter()
    for _ in range(n // steps):
        total = 0
        for i in range(steps):
            total += noop(i)
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        app, bench, latencies, finished = build(f"sqlite:///{db}", args.steps)
        for _ in range(args.workflows):
            app.start(bench, args.steps)
        worker = app.worker(concurrency=args.concurrency, poll_interval=0.01)
        t0 = time.perf_counter()
        asyncio.run(worker.run_async(until=lambda: len(finished) >= args.workflows))
        elapsed = time.perf_counter() - t0
        total_steps = args.workflows * args.steps
        plain = plain_cost(args.steps)
        raw = raw_commit_cost(Path(tmp) / "raw.db")
        per_step = elapsed / total_steps
        lat = sorted(latencies)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"workload              {args.workflows} workflows x {args.steps} no-op steps, "
            f"concurrency {args.concurrency}, SQLite WAL synchronous=FULL"
        )
        print(f"steps/s               {total_steps / elapsed:,.0f}")
        print(
            f"per-step overhead     {(per_step - plain) * 1e3:.3f} ms "
            f"(wall per step {per_step * 1e3:.3f} ms - plain call {plain * 1e6:.2f} us; "
            f"includes claim + finish of each run)"
        )
        print(
            f"step latency          p50 {lat[len(lat) // 2] * 1e3:.3f} ms, "
            f"p95 {lat[int(len(lat) * 0.95)] * 1e3:.3f} ms"
        )
        print(f"raw INSERT+COMMIT     {raw * 1e3:.3f} ms (median, same directory)")
        print(f"overhead / commit     {(per_step - plain) / raw:.2f}x")
        print(f"peak RSS              {rss_mb:.0f} MiB")
        print(f"vs DBOS 3.4 (~310/s)  {total_steps / elapsed / 310:.1f}x")
        app.close()
        os.sync()


if __name__ == "__main__":
    main()
