"""W workflows of K no-op steps on SQLite: throughput at several concurrencies, fsyncs
per step, per-step cost against a raw commit, latency, RSS.

    python benchmarks/engine_sqlite.py [--workflows 1000] [--steps 10]
                                       [--concurrency 1,4,16,64] [--rounds 3]
                                       [--metrics] [--tracing]

Each round runs the whole workload once per concurrency (one worker, in this process),
each on a fresh database file, in rotating order, and measures the raw INSERT+COMMIT
cost on the same disk right after; the figures printed are medians over the rounds (the
machine is shared and noisy, so compare ratios from one run).

fsyncs per step are counted with ``strace -f -c -e trace=fsync,fdatasync`` (when strace
is installed) around a worker process that only executes: the runs are started by this
process beforehand, since each ``start()`` commits its run durably (one fsync per run,
paid by the caller). The store's own counters give the commits per step and how many
checkpoints each group commit held.

``--metrics`` also runs each round with per-process metrics on (``WorkerMetrics``
subscribed to the hooks, no HTTP server), and prints what they add per step.
``--tracing`` runs each round three times, in rotating order: tracing off; on with the
OpenTelemetry API alone (no SDK configured: its no-op tracer, what ``app.trace()``
costs until an SDK is set up); and on with the SDK's TracerProvider and no exporter
(spans are made and recorded, then dropped). It prints the per-step cost tracing adds:
from rounds side by side (noisy on a shared machine), as the CPU time the tracing hooks
took inside the engine, as the same hooks cost called in a loop, and what one bare SDK
span costs.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workload import add_noop_workflow  # benchmarks/workload.py

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


def one_round(
    folder: Path, workflows: int, steps: int, concurrency: int, tracing: str = "off"
) -> dict[str, Any]:
    app = App(f"sqlite:///{folder / 'bench.db'}")
    spent: dict[str, float] = {}
    if tracing == "sdk":
        from opentelemetry.sdk.trace import TracerProvider  # pip install 'surestep[otel]'

        app.trace(TracerProvider())  # no span processor: the SDK's cost, no export
        spent = time_tracing_hooks(app)
    elif tracing == "api":
        app.trace()  # the global provider, which nothing here configures: the no-op
        spent = time_tracing_hooks(app)
    elif tracing == "metrics":
        from surestep.observe.metrics import WorkerMetrics

        app.hooks.subscribe(WorkerMetrics())
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
    store = app.store
    synced0, unsynced0 = store.synced_commits, store.unsynced_commits  # type: ignore[attr-defined]
    worker = app.worker(concurrency=concurrency, poll_interval=0.01)
    t0, cpu0 = time.perf_counter(), time.process_time()
    asyncio.run(worker.run_async(until=lambda: len(finished) >= workflows))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    group = store.group_commit  # type: ignore[attr-defined]
    figures = {
        "elapsed": elapsed,
        "cpu": cpu,
        "synced": store.synced_commits - synced0,  # type: ignore[attr-defined]
        "unsynced": store.unsynced_commits - unsynced0,  # type: ignore[attr-defined]
        "batch": group.writes / max(group.commits, 1),
    }
    app.close()
    latencies.sort()
    return {
        **figures,
        "p50": latencies[len(latencies) // 2],
        "p95": latencies[int(len(latencies) * 0.95)],
        "raw": raw_commit_cost(folder / "raw.db"),
        "hooks_cpu": spent.get("cpu", 0.0) / (workflows * steps),
    }


def count_fsyncs(workflows: int, steps: int, concurrency: int) -> float | None:
    """fsync + fdatasync calls per step of a worker process executing W x K runs, counted
    by strace; None when strace is missing or not permitted here."""
    if shutil.which("strace") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        app = App(url)
        bench = add_noop_workflow(app)
        for _ in range(workflows):
            app.start(bench, steps)
        app.close()
        out = Path(tmp) / "strace.txt"
        command = [
            "strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out),
            sys.executable, __file__, "--execute", url, "--workflows", str(workflows),
            "--concurrency", str(concurrency),
        ]  # fmt: skip
        if subprocess.run(command, capture_output=True, check=False).returncode != 0:
            return None
        calls = 0
        for line in out.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync"):
                calls += int(parts[3])  # % time, seconds, usecs/call, calls
        return calls / (workflows * steps)


def execute_only(url: str, workflows: int, concurrency: int) -> None:
    """The worker process ``count_fsyncs`` traces: execute the runs already started."""
    app = App(url)
    add_noop_workflow(app)
    finished: list[str] = []
    app.hooks.on_run_state.append(lambda run_id, *_: finished.append(run_id))
    worker = app.worker(concurrency=concurrency, poll_interval=0.01)
    asyncio.run(worker.run_async(until=lambda: len(finished) >= workflows))
    app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metrics", action="store_true", help="also measure with metrics on")
    parser.add_argument("--tracing", action="store_true", help="also measure with tracing on")
    parser.add_argument("--execute", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.execute:
        execute_only(args.execute, args.workflows, concurrencies[0])
        return
    modes = [
        "off",
        *(["metrics"] if args.metrics else []),
        *(["api", "sdk"] if args.tracing else []),
    ]
    # Every concurrency with everything off; the other modes at the first concurrency.
    cases = [(c, "off") for c in concurrencies] + [(concurrencies[0], m) for m in modes[1:]]
    by_case: dict[tuple[int, str], list[dict[str, Any]]] = {case: [] for case in cases}
    for number in range(args.rounds):
        # Rotate which goes first, so that none always gets the warmer disk cache.
        for case in cases[number % len(cases) :] + cases[: number % len(cases)]:
            with tempfile.TemporaryDirectory() as tmp:
                figures = one_round(Path(tmp), args.workflows, args.steps, *case)
            by_case[case].append(figures)
    print(
        f"workload              {args.workflows} workflows x {args.steps} no-op steps, one "
        f"worker, SQLite WAL synchronous=FULL, median of {args.rounds} rounds"
    )
    print_concurrency_table(by_case, concurrencies, args.workflows * args.steps)
    rounds = by_case[(concurrencies[0], "off")]
    print_sequential(rounds, args.workflows, args.steps, concurrencies[0])
    for c in sorted({concurrencies[0], 16}):
        fsyncs = count_fsyncs(min(args.workflows, 300), args.steps, c)
        counted = "strace not available" if fsyncs is None else f"{fsyncs:.3f}"
        print(
            f"fsyncs per step       {counted} at concurrency {c} (strace, a worker process "
            f"executing {min(args.workflows, 300)} runs; each start() adds one, paid by its caller)"
        )
    print(
        f"peak RSS              {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    print("peers                 see docs/performance.md for how DBOS and LangGraph were measured")
    print_modes(by_case, concurrencies[0], args.workflows * args.steps, args.steps)


def print_concurrency_table(
    by_case: dict[tuple[int, str], list[dict[str, Any]]], concurrencies: list[int], steps: int
) -> None:
    base = statistics.median(r["elapsed"] for r in by_case[(concurrencies[0], "off")])
    print(
        f"{'concurrency':<12}{'steps/s':>9}{'ratio':>8}   {'step p50 / p95 ms':<20}"
        f"{'fsynced commits/step':>22}{'unsynced/step':>15}{'checkpoints/commit':>20}"
    )
    for c in concurrencies:
        rounds = by_case[(c, "off")]

        def median(key: str, rounds: list[dict[str, Any]] = rounds) -> float:
            return statistics.median(r[key] for r in rounds)

        print(
            f"{c:<12}{steps / median('elapsed'):>9,.0f}{base / median('elapsed'):>7.2f}x   "
            f"{median('p50') * 1e3:>6.2f} / {median('p95') * 1e3:<10.2f}"
            f"{median('synced') / steps:>22.3f}{median('unsynced') / steps:>15.3f}"
            f"{median('batch'):>20.2f}"
        )


def print_sequential(rounds: list[dict[str, Any]], workflows: int, steps: int, c: int) -> None:
    total_steps = workflows * steps
    plain = plain_cost(steps)

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    per_step = median("elapsed") / total_steps
    ratios = sorted((r["elapsed"] / total_steps - plain) / r["raw"] for r in rounds)
    print(
        f"per-step cost         {per_step * 1e3:.3f} ms at concurrency {c} (wall per step, "
        f"including each run's claim and finish; CPU {median('cpu') / total_steps * 1e6:.0f} us)"
    )
    print(f"raw INSERT+COMMIT     {median('raw') * 1e3:.3f} ms (same disk, same pragmas)")
    print(
        f"cost / raw commit     {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


def print_modes(
    by_case: dict[tuple[int, str], list[dict[str, Any]]], c: int, total_steps: int, steps: int
) -> None:
    rounds = by_case[(c, "off")]
    per_step = statistics.median(r["elapsed"] for r in rounds) / total_steps
    if (c, "metrics") in by_case:
        print_tracing_cost(rounds, by_case[(c, "metrics")], total_steps, "metrics on", "metrics")
        alone = metrics_hooks_cost(steps)
        print(
            f"metrics hooks alone   {alone * 1e6:.1f} us a step = "
            f"{alone / per_step * 100:.1f} % of the wall per step off (called in a loop)"
        )
    for mode, what in (("api", "API only, no-op"), ("sdk", "SDK, no exporter")):
        if (c, mode) in by_case:
            print_tracing_cost(rounds, by_case[(c, mode)], total_steps, what)
            in_engine = statistics.median(r["hooks_cpu"] for r in by_case[(c, mode)])
            print(
                f"tracing hooks in situ {in_engine * 1e6:.1f} us CPU a step = "
                f"{in_engine / per_step * 100:.1f} % of the wall per step off ({what}; "
                f"their own CPU time as the engine called them, median of the rounds)"
            )
            alone = tracing_hooks_cost(mode, steps)
            print(
                f"tracing hooks alone   {alone * 1e6:.1f} us a step = "
                f"{alone / per_step * 100:.1f} % of the wall per step off ({what}; whole "
                f"runs' hooks called in a loop, no database: caches warm, the least they cost)"
            )
    if (c, "sdk") in by_case:
        sampled = tracing_hooks_cost("sampled", steps)
        print(
            f"tracing hooks alone   {sampled * 1e6:.1f} us a step = "
            f"{sampled / per_step * 100:.1f} % of the wall per step off (SDK, a run in 10"
            f" sampled: ParentBased(TraceIdRatioBased(0.1)); as above)"
        )
        bare = bare_span_cost()
        print(
            f"bare SDK span         {bare * 1e6:.1f} us = {bare / per_step * 100:.1f} % of the"
            f" wall per step off (tracer.start_span(name).end() in a loop, no attributes)"
        )


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def tracing_hooks_cost(mode: str, steps: int = 10, runs: int = 2000) -> float:
    """Seconds per step that the tracing hooks of whole runs take, called in a loop with
    no database: per run a slice (with its stored trace context), ``steps`` step attempts
    and the run's state change; the slice's share spread over its steps."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from surestep import State
    from surestep.engine.context import StepContext
    from surestep.observe.tracing import Tracing

    provider = {
        "sdk": TracerProvider(),
        # a run's sampling decision is made once, at its start: each run a trace of its own
        "sampled": TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.1))),
    }.get(mode)
    tracing = Tracing(provider)
    parent = None if mode == "sampled" else TRACEPARENT
    contexts = [
        [StepContext(f"r{r}", i, "noop", 1, "bench") for i in range(steps)] for r in range(runs)
    ]
    t0 = time.perf_counter()
    for attempts in contexts:
        run_id = attempts[0].run_id
        tracing.run_started(run_id, "bench", parent)
        for step in attempts:
            tracing.step_started(step)
            tracing.step_finished(step, State.SUCCESS, 0.0)
        tracing.run_state(run_id, State.RUNNING, State.SUCCESS, "bench")
        tracing.run_ended(run_id)
    return (time.perf_counter() - t0) / (runs * steps)


def bare_span_cost(n: int = 20000) -> float:
    """Seconds one ``tracer.start_span(name).end()`` takes with the SDK, no exporter: the
    least one span a step can cost."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("bench")
    t0 = time.perf_counter()
    for _ in range(n):
        tracer.start_span("surestep.step noop").end()
    return (time.perf_counter() - t0) / n


def time_tracing_hooks(app: App) -> dict[str, float]:
    """Wrap the App's tracing hooks so that they add up the CPU time they take in the
    engine (their own thread's, so the fsyncs' waits and other threads are not in it)."""
    spent = {"cpu": 0.0}

    def timed(hook: Any) -> Any:
        def run(*args: Any) -> None:
            t0 = time.thread_time()
            try:
                hook(*args)
            finally:
                spent["cpu"] += time.thread_time() - t0

        return run

    for name in ("before_step", "after_step", "on_run_start", "on_run_state", "on_run_end"):
        hooks = getattr(app.hooks, name)
        hooks[:] = [timed(h) if getattr(h, "__self__", None) is app.tracing else h for h in hooks]
    return spent


def metrics_hooks_cost(steps: int, n: int = 20000) -> float:
    """Seconds per step that WorkerMetrics' hooks take, called directly: one after_step
    per step, and per run one claim and one finish spread over its steps."""
    from surestep import State
    from surestep.engine.context import StepContext
    from surestep.observe.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    step = StepContext("run", 0, "noop", 1, "bench")
    t0 = time.perf_counter()
    for i in range(n):
        metrics.after_step(step, State.SUCCESS, 0.0001)
        if i % steps == 0:
            metrics.on_claim("run", "bench", 0.0, 0.001)
            metrics.on_run_state("run", State.RUNNING, State.SUCCESS, "bench")
    return (time.perf_counter() - t0) / n


def print_tracing_cost(
    rounds: list[dict[str, Any]],
    traced: list[dict[str, Any]],
    total_steps: int,
    mode: str,
    label: str = "tracing",
) -> None:
    """What tracing adds per step, from rounds run side by side with and without it:
    in wall time (what a user sees, noisy on a shared disk) and in the process's CPU
    time (what the spans themselves cost: the fsyncs' waits are not in it)."""
    for key, what in (("elapsed", "wall"), ("cpu", "CPU ")):
        off = statistics.median(r[key] for r in rounds) / total_steps
        on = statistics.median(r[key] for r in traced) / total_steps
        pairs = sorted(t[key] / r[key] - 1 for r, t in zip(rounds, traced, strict=True))
        print(
            f"{label} {what} per step   {on * 1e3:.3f} ms on vs {off * 1e3:.3f} ms off: "
            f"{(on - off) * 1e6:+.1f} us ({(on / off - 1) * 100:+.1f} %; paired rounds: "
            f"{', '.join(f'{p * 100:+.1f} %' for p in pairs)}; {mode})"
        )


if __name__ == "__main__":
    main()
