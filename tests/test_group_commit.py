"""Group commit on SQLite: checkpoints of several runs share one transaction, and one
run's failure is its own.

Batches are made deterministic by holding the store's connection lock: the first thread
becomes the leader and waits for the lock; the others queue behind it. When the lock is
released the leader commits its own checkpoint, and the first queued thread then commits
all the others in one transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from surestep import App, State
from surestep.errors import LeaseLostError, StorageError
from surestep.storage import ClaimedRun, StepOutcome
from surestep.storage.sqlite import SQLiteStore

RUNS = 6


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = App(f"sqlite:///{tmp_path / 'runs.db'}")

    @app.workflow(name="wf")
    def wf() -> None:
        return None

    yield app
    app.close()


def claimed(app: App, count: int) -> list[ClaimedRun]:
    for i in range(count):
        app.start("wf", run_id=f"run-{i}")
    [workflow] = app.registry.workflows()
    # The App's clock (on PostgreSQL aligned to the server's: runs are due by it).
    runs = app.store.claim("w", [("wf", workflow.version)], count, app.clock.now(), 600)
    assert len(runs) == count
    return sorted(runs, key=lambda run: run.id)


def outcome(position: int = 0, name: Any = "step", output: str = '"ok"') -> StepOutcome:
    now = time.time()
    return StepOutcome(position, name, State.PENDING, State.SUCCESS, 1, now, now, output=output)


def in_one_batch(
    store: SQLiteStore, writes: list[Callable[[], None]]
) -> list[BaseException | None]:
    """Run ``writes`` from one thread each, all queued before any commits; return what
    each raised."""
    results: list[BaseException | None] = [None] * len(writes)

    def call(i: int) -> None:
        try:
            writes[i]()
        except BaseException as exc:
            results[i] = exc

    group = store.group_commit
    with store._lock:  # the leader (the first thread) waits here; the rest queue
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(writes))]
        threads[0].start()
        wait_for(lambda: group._leading)
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: len(group._queue) == len(writes) - 1)
    for thread in threads:
        thread.join(timeout=30)
    return results


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the threads never queued"
        time.sleep(0.001)


def stored_steps(app: App, run_id: str) -> list[int]:
    return [step.position for step in app.get_run(run_id).steps]


def test_checkpoints_queued_during_a_commit_share_the_next_one(app: App) -> None:
    store = app.store
    assert isinstance(store, SQLiteStore)
    runs = claimed(app, RUNS)
    before = (store.group_commit.commits, store.group_commit.writes, store.synced_commits)
    writes = [lambda run=run: store.record_step(run.id, run.token, "w", outcome()) for run in runs]
    assert in_one_batch(store, writes) == [None] * RUNS
    commits, batched, synced = (
        store.group_commit.commits - before[0],
        store.group_commit.writes - before[1],
        store.synced_commits - before[2],
    )
    # The leader's own checkpoint, then the other five together: two fsyncs for six.
    assert (commits, batched, synced) == (2, RUNS, 2)
    for run in runs:
        assert stored_steps(app, run.id) == [0]
        [step] = app.get_run(run.id).steps
        assert step.state == State.SUCCESS and step.output == "ok"
        # Each run has its own two step events, none of its neighbours'.
        step_events = [e for e in app.get_run(run.id).events if e.position == 0]
        assert [(e.from_state, e.to_state) for e in step_events] == [
            (State.PENDING, State.RUNNING),
            (State.RUNNING, State.SUCCESS),
        ]


def test_one_failed_checkpoint_in_a_batch_leaves_its_neighbours_committed(app: App) -> None:
    store = app.store
    assert isinstance(store, SQLiteStore)
    runs = claimed(app, RUNS)
    stale, broken = runs[2], runs[4]

    def write(run: ClaimedRun) -> None:
        if run is stale:  # another worker has the run now: fenced off
            store.record_step(run.id, run.token - 1, "w", outcome())
        elif run is broken:  # a NOT NULL column without a value: a constraint failure
            store.record_step(run.id, run.token, "w", outcome(name=None))
        else:
            store.record_step(run.id, run.token, "w", outcome())

    results = in_one_batch(store, [lambda run=run: write(run) for run in runs])
    errors = dict(zip([run.id for run in runs], results, strict=True))
    assert isinstance(errors.pop(stale.id), LeaseLostError)
    failure = errors.pop(broken.id)
    assert isinstance(failure, StorageError) and "NOT NULL" in str(failure)
    assert set(errors.values()) == {None}
    for run in runs:
        expected = [] if run in (stale, broken) else [0]
        assert stored_steps(app, run.id) == expected, run.id
        attempts = [e for e in app.get_run(run.id).events if e.position is not None]
        assert len(attempts) == 2 * len(expected), run.id  # nothing half-written


def test_a_full_disk_in_a_batch_loses_no_checkpoint_it_acknowledged(app: App) -> None:
    store = app.store
    assert isinstance(store, SQLiteStore)
    runs = claimed(app, RUNS)
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 20}")  # a real SQLITE_FULL
    big = runs[3]

    def write(run: ClaimedRun) -> None:
        output = '"' + "x" * 400_000 + '"' if run is big else '"ok"'
        store.record_step(run.id, run.token, "w", outcome(output=output))

    results = in_one_batch(store, [lambda run=run: write(run) for run in runs])
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    failure = results[3]
    assert isinstance(failure, StorageError) and "full" in str(failure)
    for run, result in zip(runs, results, strict=True):
        # Whether SQLite undid the statement or the whole transaction, a checkpoint is
        # stored exactly when its thread was told it was.
        assert stored_steps(app, run.id) == ([0] if result is None else []), run.id
    assert stored_steps(app, big.id) == []


def test_claims_and_ends_ride_on_the_next_fsync_and_checkpoints_have_their_own(
    app: App,
) -> None:
    store = app.store
    assert isinstance(store, SQLiteStore)
    app.start("wf", run_id="r")
    synced, unsynced = store.synced_commits, store.unsynced_commits
    [workflow] = app.registry.workflows()
    [run] = store.claim("w", [("wf", workflow.version)], 1, time.time(), 600)
    store.record_step(run.id, run.token, "w", outcome())
    store.finish(run.id, run.token, "w", State.SUCCESS, time.time(), output="null")
    assert (store.synced_commits - synced, store.unsynced_commits - unsynced) == (1, 2)
    assert app.get_run("r").state == State.SUCCESS
    # Every transaction leaves the connection syncing again, even one that failed.
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(LeaseLostError):
        store.finish(run.id, run.token, "w", State.SUCCESS, time.time(), output="null")
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_with_synchronous_normal_every_commit_is_an_ordinary_one(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'runs.db'}?synchronous=normal")
    try:
        store = app.store
        assert isinstance(store, SQLiteStore)
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        with store.unsynced() as cur:
            cur.execute("SELECT 1")
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    finally:
        app.close()
