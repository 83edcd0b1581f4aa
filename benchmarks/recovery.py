"""Crash recovery on SQLite: how long after a SIGKILL a restarted worker takes to finish.

    python benchmarks/recovery.py [--runs 50] [--steps 10] [--step-ms 50]
                                  [--concurrency 10] [--rounds 3] [--against PATH]

W runs of K steps that each sleep S ms are started; a worker process (this script with
``--worker``) executes them until half of all steps have committed, and is killed with
SIGKILL. A new worker process is started at once, and the clock runs from its launch
(interpreter start-up included) until every run has succeeded. The floor is the step
time left divided by the worker's concurrency. ``--against PATH`` runs the same rounds,
interleaved, with another surestep checkout (a git worktree of an older commit, say) on
``PYTHONPATH``, so that two builds are compared in one run on this noisy machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def build(url: str, step_ms: float) -> object:
    from surestep import App

    app = App(url)

    @app.step(name="slow")
    def slow(i: int) -> int:
        time.sleep(step_ms / 1000)
        return i

    @app.workflow(name="recover")
    def recover(k: int) -> int:
        return sum(slow(i) for i in range(k))

    return app


def committed_steps(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM surestep_steps").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        conn.close()


def first_claim_after(db: Path, at: float) -> float:
    """When the first run was claimed (or taken over) at or after ``at``."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        query = "SELECT MIN(at) FROM surestep_events WHERE at >= ? AND to_state = 'running'"
        return float(conn.execute(query, (at,)).fetchone()[0])
    finally:
        conn.close()


def finished_runs(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        query = "SELECT COUNT(*) FROM surestep_runs WHERE state = 'success'"
        return int(conn.execute(query).fetchone()[0])
    finally:
        conn.close()


def spawn(db: Path, args: argparse.Namespace, checkout: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, str(HERE), "--worker", str(db), "--step-ms", str(args.step_ms)]
    command += ["--concurrency", str(args.concurrency)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


def one_round(args: argparse.Namespace, checkout: Path) -> tuple[float, float]:
    """Seconds from the restart to all done, and from the new worker's first claim."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "recovery.db"
        starter = [sys.executable, str(HERE), "--start", str(db), "--runs", str(args.runs)]
        starter += ["--steps", str(args.steps)]
        subprocess.run(starter, check=True, env={**os.environ, "PYTHONPATH": str(checkout)})
        total = args.runs * args.steps
        first = spawn(db, args, checkout)
        while committed_steps(db) < total // 2:
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait()
        t0, wall0 = time.perf_counter(), time.time()
        second = spawn(db, args, checkout)
        while finished_runs(db) < args.runs:
            time.sleep(0.005)
        elapsed, wall1 = time.perf_counter() - t0, time.time()
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        return elapsed, wall1 - first_claim_after(db, wall0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another surestep checkout to compare")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.start:
        app = build(f"sqlite:///{args.start}", args.step_ms)
        for _ in range(args.runs):
            app.start("recover", args.steps)  # type: ignore[attr-defined]
        return
    if args.worker:
        app = build(f"sqlite:///{args.worker}", args.step_ms)
        app.worker(concurrency=args.concurrency, poll_interval=0.01).run()  # type: ignore[attr-defined]
        return
    builds = {"this checkout": ROOT, **({str(args.against): args.against} if args.against else {})}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, checkout in builds.items():
            times[name].append(one_round(args, checkout))
    floor = args.runs * args.steps * args.step_ms / 1000 / 2 / args.concurrency
    print(
        f"workload              {args.runs} runs x {args.steps} steps of {args.step_ms:g} ms, "
        f"worker concurrency {args.concurrency}, SIGKILL at half the steps, median of "
        f"{args.rounds} rounds"
    )
    print(f"floor                 {floor:.2f} s (the step time left over {args.concurrency} slots)")
    for name, rounds in times.items():
        total = sorted(r[0] for r in rounds)
        working = sorted(r[1] for r in rounds)
        print(
            f"{name:<22}all done {statistics.median(total):.2f} s after the restart, "
            f"{statistics.median(working):.2f} s after its first claim (rounds: "
            f"{', '.join(f'{t:.2f}' for t in total)} / {', '.join(f'{t:.2f}' for t in working)};"
            f" the first includes the new process's start-up)"
        )


if __name__ == "__main__":
    main()
