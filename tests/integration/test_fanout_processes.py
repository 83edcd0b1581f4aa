"""A map of 1,000 children over two real worker processes, one of them SIGKILLed while
children run, on a SQLite file shared by processes and on PostgreSQL: every child runs,
the parent gets every result, and never more than the map's concurrency run at once
(checked from the event log, which every process appends to)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import fanout_app  # siblings in tests/integration
import processes
import pytest

from surestep import App, State

FANOUT_APP = Path(__file__).with_name("fanout_app.py")
CHILDREN, CONCURRENCY = 1000, 20


def running_at_once(app: App, parent: str) -> int:
    """The most children in state running at any moment, from their run events."""
    with app.store.reading() as cur:
        cur.execute(
            "SELECT e.id, e.from_state, e.to_state FROM surestep_events e"
            " JOIN surestep_runs r ON r.id = e.run_id"
            " WHERE r.parent_id = ? AND e.position IS NULL",
            (parent,),
        )
        return processes.most_running_at_once(cur.fetchall())


@pytest.mark.slow
def test_a_map_of_1000_children_over_two_workers_one_killed(db_url: str, tmp_path: Path) -> None:
    app = fanout_app.build(db_url)
    workers: list[processes.WorkerProcess] = []
    try:
        handle = app.start("batch", CHILDREN, CONCURRENCY)
        argv = [sys.executable, str(FANOUT_APP), db_url]
        for n in range(2):
            workers.append(processes.WorkerProcess(argv, tmp_path, tmp_path / f"w{n}.err"))

        def finished_children() -> int:
            with app.store.reading() as cur:
                cur.execute(
                    "SELECT COUNT(*) FROM surestep_runs WHERE parent_id = ? AND state = 'success'",
                    (handle.id,),
                )
                return int(cur.fetchone()[0])

        workers[0].wait_until(lambda: finished_children() >= 200, "200 children done")
        workers[0].kill()  # mid-map, with children of its own running
        workers.append(processes.WorkerProcess(argv, tmp_path, tmp_path / "w2.err"))
        workers[-1].wait_serving(app)  # so that the SIGTERM below is a graceful stop
        deadline = time.monotonic() + 120
        while handle.state != State.SUCCESS:
            assert time.monotonic() < deadline, f"map not done: {finished_children()} children"
            time.sleep(0.1)
        assert handle.result() == sum(n * 2 for n in range(CHILDREN))
        assert finished_children() == CHILDREN
        peak = running_at_once(app, handle.id)
        assert CONCURRENCY // 2 <= peak <= CONCURRENCY  # used, and never exceeded
        for worker in workers[1:]:
            assert worker.stop() == 0
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.kill()
        app.close()
