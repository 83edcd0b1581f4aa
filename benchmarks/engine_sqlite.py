"""W workflows of K no-op steps on SQLite: throughput, per-step overhead, latency, RSS.

    python benchmarks/engine_sqlite.py [--workflows 1000] [--steps 10] [--concurrency 1]
                                       [--rounds 3] [--metrics]

Each round runs the whole workload on a fresh database file and measures the raw
INSERT+COMMIT cost on the same disk right after; the figures printed are medians over
the rounds (the machine is shared and noisy, so compare ratios from one run).

With ``--metrics`` each round also runs the workload with per-process metrics on
(:class:`WorkerMetrics` subscribed to the hooks; no HTTP server), right after the plain
workload on a fresh file, and the overhead metrics add per step is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from workload import add_noop_workflow  # benchmarks/workload.py

from surestep import App
from surestep.observe.metrics import WorkerMetrics


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


def plain_cost(steps: int, n: int = 20000) -> float:
    """Seconds per step when the same no-op functions are called plainly."""

    def noop(i: int) -> int:
        return i

    t0 = time.perf_counter()
    for _ in range(n // steps):
        total = 0
        for i in range(steps):
            total += noop(i)
    return (time.perf_counter() - t0) / n


def hook_cost(steps: int, n: int = 20000) -> float:
    """Seconds per step that WorkerMetrics' hooks take, called directly: one after_step
    per step, and per run one claim and one finish spread over its steps."""
    from surestep.engine.context import StepContext
    from surestep.states import State

    metrics = WorkerMetrics()
    step = StepContext("run", 0, "noop", 1, "bench")
    t0 = time.perf_counter()
    for i in range(n):
        metrics.after_step(step, State.SUCCESS, 0.0001)
        if i % steps == 0:
            metrics.on_claim("run", "bench", 0.0, 0.001)
            metrics.on_run_state("run", State.RUNNING, State.SUCCESS, "bench")
    return (time.perf_counter() - t0) / n


def one_round(
    folder: Path, workflows: int, steps: int, concurrency: int, metrics: bool = False
) -> dict[str, Any]:
    app = App(f"sqlite:///{folder / ('metrics.db' if metrics else 'bench.db')}")
    latencies: list[float] = []
    finished: list[str] = []
    began: dict[str, float] = {}
    bench = add_noop_workflow(app)

    @app.hook("before_step")
    def before(step: Any) -> None:
        began[step.idempotency_key] = time.perf_counter()

    @app.hook("after_step")
    def after(step: Any, state: Any, seconds: float) -> None:
        # from the step call to its checkpoint committed
        latencies.append(time.perf_counter() - began.pop(step.idempotency_key))

    @app.hook("on_run_state")
    def settled(run_id: str, from_state: Any, to_state: Any, *_: Any) -> None:
        finished.append(run_id)

    for _ in range(workflows):
        app.start(bench, steps)
    worker = app.worker(concurrency=concurrency, poll_interval=0.01)
    if metrics:
        collected = WorkerMetrics()
        collected.track_slots(lambda: len(worker._running), concurrency)
        app.hooks.subscribe(collected)
    t0 = time.perf_counter()
    asyncio.run(worker.run_async(until=lambda: len(finished) >= workflows))
    elapsed = time.perf_counter() - t0
    app.close()
    latencies.sort()
    return {
        "elapsed": elapsed,
        "p50": latencies[len(latencies) // 2],
        "p95": latencies[int(len(latencies) * 0.95)],
        "raw": raw_commit_cost(folder / "raw.db"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metrics", action="store_true", help="also time metrics on")
    args = parser.parse_args()
    total_steps = args.workflows * args.steps
    rounds, metered = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rounds.append(one_round(Path(tmp), args.workflows, args.steps, args.concurrency))
            if args.metrics:
                metered.append(
                    one_round(Path(tmp), args.workflows, args.steps, args.concurrency, True)
                )
    plain = plain_cost(args.steps)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    per_step = median("elapsed") / total_steps
    overhead = per_step - plain
    ratios = sorted((r["elapsed"] / total_steps - plain) / r["raw"] for r in rounds)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"workload              {args.workflows} workflows x {args.steps} no-op steps, "
        f"concurrency {args.concurrency}, SQLite WAL synchronous=FULL, "
        f"median of {args.rounds} rounds"
    )
    print(f"steps/s               {total_steps / median('elapsed'):,.0f}")
    print(
        f"per-step overhead     {overhead * 1e3:.3f} ms (wall per step {per_step * 1e3:.3f} ms"
        f" - plain call {plain * 1e6:.2f} us; includes each run's claim and finish)"
    )
    print(
        f"step latency          p50 {median('p50') * 1e3:.3f} ms, p95 {median('p95') * 1e3:.3f}"
        f" ms (step call to checkpoint committed)"
    )
    print(f"raw INSERT+COMMIT     {median('raw') * 1e3:.3f} ms (same disk, same pragmas)")
    print(
        f"overhead / commit     {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    if metered:
        # Paired by round (same disk moments): the median of the differences, since the
        # shared machine's noise is larger than what the hooks cost.
        pairs = zip(rounds, metered, strict=True)
        diffs = sorted((m["elapsed"] - r["elapsed"]) / total_steps for r, m in pairs)
        added = statistics.median(diffs)
        direct = hook_cost(args.steps)
        print(
            f"metrics on            {added * 1e6:+.1f} us per step, {added / per_step * 100:+.1f}%"
            f" (median of paired rounds: {', '.join(f'{d / per_step * 100:+.1f}%' for d in diffs)})"
        )
        print(
            f"metrics hooks alone   {direct * 1e6:.1f} us per step"
            f" ({direct / per_step * 100:.1f}% of the per-step cost; timed in a loop)"
        )
    print(f"peak RSS              {rss_mb:.0f} MiB")
    print(f"vs DBOS 3.4 (~310/s)  {total_steps / median('elapsed') / 310:.1f}x")


if __name__ == "__main__":
    main()
