"""A queue's limit held across three real worker processes, two of them SIGKILLed while
runs of the queue run, on a SQLite file shared by processes and on PostgreSQL: every run
finishes, never more than the queue's concurrency (nor a tenant's cap) run at once, as
the event log (which every process appends to) shows."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import processes  # siblings in tests/integration
import pytest
import queue_app

from surestep import App

QUEUE_APP = Path(__file__).with_name("queue_app.py")
TENANTS, PER_TENANT_RUNS = ("a", "b", "c"), 100


def running_at_once(app: App, key: str | None = None) -> int:
    """The most runs of queue llm (of one key) in state running at any moment."""
    with app.store.reading() as cur:
        cur.execute(
            "SELECT e.id, e.from_state, e.to_state, r.concurrency_key FROM surestep_events e"
            " JOIN surestep_runs r ON r.id = e.run_id"
            " WHERE r.queue = 'llm' AND e.position IS NULL",
        )
        rows = [row[:3] for row in cur.fetchall() if key is None or row[3] == key]
    return processes.most_running_at_once(rows)


@pytest.mark.slow
def test_a_queue_limit_held_across_three_workers_with_kills(db_url: str, tmp_path: Path) -> None:
    app = queue_app.build(db_url)
    workers: list[processes.WorkerProcess] = []
    try:
        for n in range(PER_TENANT_RUNS):
            for tenant in TENANTS:
                app.start("job", tenant, n)
        total = len(TENANTS) * PER_TENANT_RUNS
        argv = [sys.executable, str(QUEUE_APP), db_url]

        def start() -> None:
            err = tmp_path / f"w{len(workers)}.err"
            workers.append(processes.WorkerProcess(argv, tmp_path, err))

        def done() -> int:
            return sum(r.state == "success" for r in app.list_runs(limit=total))

        for _ in range(3):
            start()
        workers[0].wait_until(lambda: done() >= 60, "60 runs done")
        workers[0].kill()  # with runs of the queue running
        workers[1].wait_until(lambda: done() >= 150, "150 runs done")
        workers[1].kill()
        start()
        workers[-1].wait_serving(app)  # so that the SIGTERM below is a graceful stop
        deadline = time.monotonic() + 180
        while done() < total:
            assert time.monotonic() < deadline, f"only {done()} of {total} runs done"
            time.sleep(0.1)
        assert running_at_once(app) == queue_app.QUEUE_LIMIT  # used, and never exceeded
        for tenant in TENANTS:
            assert running_at_once(app, tenant) <= queue_app.PER_TENANT
        for worker in workers[2:]:
            assert worker.stop() == 0
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.kill()
        app.close()


@pytest.mark.slow
def test_a_rate_shared_by_three_workers_is_never_exceeded(db_url: str, tmp_path: Path) -> None:
    """Three worker processes claim a rate-limited queue's runs: in no interval of the
    event log do more start than the token bucket allows (a second's worth, then RATE a
    second), whichever worker made the claims."""
    app = queue_app.build(db_url)
    workers: list[processes.WorkerProcess] = []
    runs = 100
    try:
        for n in range(runs):
            app.start("tick", n)
        argv = [sys.executable, str(QUEUE_APP), db_url]
        for n in range(3):
            workers.append(processes.WorkerProcess(argv, tmp_path, tmp_path / f"w{n}.err"))

        def done() -> int:
            return sum(r.state == "success" for r in app.list_runs(workflow="tick", limit=runs))

        workers[0].wait_until(lambda: done() == runs, f"{runs} ticks done", timeout=90)
        with app.store.reading() as cur:
            cur.execute(
                "SELECT e.at, e.actor FROM surestep_events e"
                " JOIN surestep_runs r ON r.id = e.run_id WHERE r.workflow = 'tick'"
                " AND e.position IS NULL AND e.to_state = 'running' ORDER BY e.id"
            )
            claims = cur.fetchall()
        times = [float(at) for at, _ in claims]
        rate, burst = queue_app.RATE, queue_app.RATE
        assert processes.starts_over_rate(times, rate, burst, skew=0.02) <= 1e-9
        assert len({actor for _, actor in claims}) >= 2  # the workers shared the rate
        for worker in workers:
            assert worker.stop() == 0
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.kill()
        app.close()
