"""Group commit on PostgreSQL: the checkpoints of several runs written in one statement
and one commit, and one run's failure its own.

Batches are made deterministic with a row lock: another session locks the first run's
row, so the first thread (the leader) waits inside its own checkpoint's fence; the
others queue behind it. When the lock is released the leader commits its checkpoint,
and the first queued thread then writes all the others in one statement.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from test_group_commit import RUNS, claimed, outcome  # a sibling module

import surestep.storage.postgres_steps as steps
from surestep import App, State
from surestep.errors import ConfigurationError, LeaseLostError, StorageError
from surestep.storage import ClaimedRun, StepOutcome
from surestep.storage.postgres import PostgresStore


@pytest.fixture
def app(postgres_schema_url: str) -> Iterator[App]:
    app = App(postgres_schema_url)

    @app.workflow(name="wf")
    def wf() -> None:
        return None

    yield app
    app.close()


def in_one_batch(
    app: App, url: str, first: ClaimedRun, writes: Sequence[Callable[[], None]]
) -> list[BaseException | None]:
    """Run ``writes`` from one thread each, the first one's fence held up by a lock on
    ``first``'s row until all the others have queued; return what each raised."""
    store = app.store
    assert isinstance(store, PostgresStore)
    results: list[BaseException | None] = [None] * len(writes)

    def call(i: int) -> None:
        try:
            writes[i]()
        except BaseException as exc:
            results[i] = exc

    group = store.group_commit
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(writes))]
    with psycopg.connect(url) as blocker:
        blocker.execute("SELECT 1 FROM surestep_runs WHERE id = %s FOR UPDATE", (first.id,))
        threads[0].start()
        wait_for(lambda: group._leading)
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: len(group._queue) == len(writes) - 1)
        blocker.rollback()
    for thread in threads:
        thread.join(timeout=30)
    return results


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the threads never queued"
        time.sleep(0.001)


def rows_of(url: str, run_id: str) -> tuple[int, int, int]:
    """How many step, attempt and step-event rows ``run_id`` has."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT COUNT(*) FROM surestep_steps WHERE run_id = %(r)s),"
            " (SELECT COUNT(*) FROM surestep_attempts WHERE run_id = %(r)s),"
            " (SELECT COUNT(*) FROM surestep_events WHERE run_id = %(r)s"
            " AND position IS NOT NULL)",
            {"r": run_id},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_checkpoints_queued_during_a_commit_share_one_statement_and_a_stale_one_is_refused(
    app: App, postgres_schema_url: str
) -> None:
    store = app.store
    assert isinstance(store, PostgresStore)
    runs = claimed(app, RUNS)
    stale = runs[3]
    before = (store.group_commit.commits, store.group_commit.writes)

    def write(run: ClaimedRun) -> None:
        token = run.token - 1 if run is stale else run.token  # another worker has it now
        store.record_step(run.id, token, "w", outcome())

    results = in_one_batch(
        app, postgres_schema_url, runs[0], [functools.partial(write, r) for r in runs]
    )
    errors = dict(zip([run.id for run in runs], results, strict=True))
    assert isinstance(errors.pop(stale.id), LeaseLostError)
    assert set(errors.values()) == {None}
    # The leader's own checkpoint, then the other five in one statement: two commits.
    commits = store.group_commit.commits - before[0]
    assert (commits, store.group_commit.writes - before[1], store.batch_fallbacks) == (2, RUNS, 0)
    for run in runs:
        expected = (0, 0, 0) if run is stale else (1, 1, 2)
        assert rows_of(postgres_schema_url, run.id) == expected, run.id
        if run is stale:
            continue
        [step] = app.get_run(run.id).steps
        assert step.state == State.SUCCESS and step.output == "ok"
        # Each run has its own two step events, in order, none of its neighbours'.
        step_events = [e for e in app.get_run(run.id).events if e.position == 0]
        assert [(e.from_state, e.to_state) for e in step_events] == [
            (State.PENDING, State.RUNNING),
            (State.RUNNING, State.SUCCESS),
        ]


def test_a_checkpoint_a_constraint_refuses_fails_alone_and_nothing_of_it_is_written(
    app: App, postgres_schema_url: str
) -> None:
    store = app.store
    assert isinstance(store, PostgresStore)
    runs = claimed(app, RUNS)
    broken = runs[2]

    def write(run: ClaimedRun) -> None:
        # A step without a name: NOT NULL refuses it, and with it the whole statement.
        store.record_step(run.id, run.token, "w", outcome(name=None if run is broken else "step"))

    results = in_one_batch(
        app, postgres_schema_url, runs[0], [functools.partial(write, r) for r in runs]
    )
    errors = dict(zip([run.id for run in runs], results, strict=True))
    failure = errors.pop(broken.id)
    assert isinstance(failure, StorageError) and "null value" in str(failure)
    assert set(errors.values()) == {None}
    assert store.batch_fallbacks == 1  # the batch was written again, one by one
    for run in runs:
        expected = (0, 0, 0) if run is broken else (1, 1, 2)
        assert rows_of(postgres_schema_url, run.id) == expected, run.id


def test_a_batch_retried_after_its_acknowledgement_was_lost_is_recorded_once(
    app: App, postgres_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = app.store
    assert isinstance(store, PostgresStore)
    runs = claimed(app, RUNS)
    real = store._connection
    lost: list[int] = []

    @contextmanager
    def losing_the_batch_ack() -> Iterator[Any]:
        in_batch = any(f.f_code.co_name == "_record_many" for f in _frames())
        with real() as conn:
            yield conn
        if in_batch and not lost:  # committed (autocommit), but the answer never came
            lost.append(1)
            raise StorageError("the connection was lost", transient=True)

    monkeypatch.setattr(store, "_connection", losing_the_batch_ack)

    def write(run: ClaimedRun) -> None:
        store.record_step(run.id, run.token, "w", outcome())

    writes = [functools.partial(write, r) for r in runs]
    assert in_one_batch(app, postgres_schema_url, runs[0], writes) == [None] * RUNS
    assert lost == [1]  # the batch did lose its acknowledgement, and was retried
    for run in runs:
        assert rows_of(postgres_schema_url, run.id) == (1, 1, 2), run.id


def _frames() -> Iterator[Any]:
    import sys

    frame = sys._getframe(1)
    while frame is not None:
        yield frame
        frame = frame.f_back  # type: ignore[assignment]


def test_a_batch_does_not_wait_for_a_locked_run_while_holding_its_neighbours(
    app: App, postgres_schema_url: str
) -> None:
    """A heartbeat's UPDATE locks this worker's runs in an order of its own: a batch that
    locked some of them and waited for another would deadlock with it."""
    store = app.store
    assert isinstance(store, PostgresStore)
    runs = claimed(app, RUNS)
    locked = runs[3]
    checkpoints = [steps.step_params(r.id, r.token, "w", outcome()) for r in runs]
    errors: list[BaseException | None] = [None] * RUNS
    with psycopg.connect(postgres_schema_url) as other:
        other.execute("SELECT 1 FROM surestep_runs WHERE id = %s FOR UPDATE", (locked.id,))
        batch = threading.Thread(target=store._record_many, args=(checkpoints, errors))
        batch.start()
        # The neighbours commit while the locked run's row is still held...
        wait_for(lambda: all(rows_of(postgres_schema_url, r.id) == (1, 1, 2) for r in runs[4:]))
        assert rows_of(postgres_schema_url, runs[0].id) == (1, 1, 2)
        assert rows_of(postgres_schema_url, locked.id) == (0, 0, 0)
        # ...so the other transaction can lock them as well, and end.
        other.execute("SELECT 1 FROM surestep_runs WHERE id = %s FOR UPDATE", (runs[0].id,))
    batch.join(timeout=30)
    assert errors == [None] * RUNS
    for run in runs:
        assert rows_of(postgres_schema_url, run.id) == (1, 1, 2), run.id


def test_a_batch_with_a_recorded_checkpoint_beside_a_new_one_of_its_run_adds_only_the_new(
    app: App,
) -> None:
    # An async workflow's gathered steps can put two checkpoints of one run in a batch;
    # if one of them was committed before (a retry after a lost acknowledgement), only
    # the other is written: its step and events, not the recorded one's events again.
    [run] = claimed(app, 1)
    store = app.store
    assert isinstance(store, PostgresStore)
    now = time.time()
    first, second = (
        steps.step_params(
            run.id,
            run.token,
            "w",
            StepOutcome(position, "step", State.PENDING, State.SUCCESS, 1, now, now, output="1"),
        )
        for position in (0, 1)
    )
    store._record_one(first)
    errors: list[BaseException | None] = [None, None]
    assert store._record_many([first, second], errors) == 1 and errors == [None, None]
    with store.reading() as cur:
        cur.execute(
            "SELECT position, COUNT(*) FROM surestep_events WHERE run_id = ?"
            " AND position IS NOT NULL GROUP BY position ORDER BY position",
            (run.id,),
        )
        assert [tuple(row) for row in cur.fetchall()] == [(0, 2), (1, 2)]


def test_a_batch_stores_each_value_exactly_as_a_lone_checkpoint_does(app: App) -> None:
    # A batch travels as one JSON document: text with quotes, backslashes, newlines and
    # characters outside ASCII, NULLs, and times to the last bit arrive as they were.
    runs = claimed(app, 4)
    store = app.store
    assert isinstance(store, PostgresStore)
    texts = ['"caf\u00e9 \u2713 \U0001f600"', '"a \\"quoted\\" \\\\ back\\nslash"', "null"]
    times = (1764467422.1234567, 0.1 + 0.2, 2.0**52 + 0.5, 1e-300)

    def checkpoint(run: ClaimedRun, i: int) -> dict[str, Any]:
        started = times[i]
        done = StepOutcome(
            0,
            f"st\u00e9p {i}",
            State.PENDING,
            State.FAILED,
            2,
            started,
            started * 3,
            output=texts[i % 3],
            error=None if i % 2 else "E\u00e9\n",
            next_attempt_at=None if i % 2 else started + 1,
            reason=f"r\\{i}",
            compensation=None,
            inputs='["x\\"y"]',
        )
        return steps.step_params(run.id, run.token, "w\u00fc", done)

    checkpoints = [checkpoint(run, i) for i, run in enumerate(runs)]
    lone, batched = checkpoints[:1], checkpoints[1:]
    store._record_one(lone[0])
    errors: list[BaseException | None] = [None] * len(batched)
    assert store._record_many(batched, errors) == 1 and errors == [None] * len(batched)
    with store.reading() as cur:
        for c in checkpoints:
            cur.execute(
                "SELECT s.name, s.state, s.output, s.error, s.attempts, s.started_at,"
                " s.finished_at, s.next_attempt_at, s.compensation, s.inputs, a.worker,"
                " a.state FROM surestep_steps s JOIN surestep_attempts a USING (run_id, position)"
                " WHERE s.run_id = ?",
                (c["run"],),
            )
            assert tuple(cur.fetchone()) == (
                c["name"],
                "failed",
                c["output"],
                c["error"],
                2,
                c["started"],
                c["finished"],
                c["next_at"],
                None,
                c["inputs"],
                "w\u00fc",
                "failed",
            )
            cur.execute(
                "SELECT from_state, to_state, at, actor, reason FROM surestep_events"
                " WHERE run_id = ? AND position = 0 ORDER BY id",
                (c["run"],),
            )
            assert [tuple(row) for row in cur.fetchall()] == [
                ("pending", "running", c["started"], "w\u00fc", None),
                ("running", "failed", c["finished"], "w\u00fc", c["reason"]),
            ]


def test_a_checkpoint_whose_text_cannot_be_sent_fails_alone(app: App) -> None:
    # A lone surrogate cannot be encoded for the server: the batch is written again one
    # checkpoint at a time, and only that one fails.
    runs = claimed(app, 3)
    store = app.store
    assert isinstance(store, PostgresStore)
    checkpoints = [steps.step_params(r.id, r.token, "w", outcome()) for r in runs]
    checkpoints[1]["reason"] = "bad \ud800 text"
    errors: list[BaseException | None] = [None] * 3
    assert store._record_many(checkpoints, errors) == 2
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], UnicodeEncodeError)
    assert store.batch_fallbacks == 1
    with store.reading() as cur:
        cur.execute("SELECT run_id FROM surestep_steps ORDER BY run_id")
        assert [row[0] for row in cur.fetchall()] == [runs[0].id, runs[2].id]


def test_group_commit_off_in_the_url_commits_each_checkpoint_alone(
    postgres_schema_url: str,
) -> None:
    sep = "&" if "?" in postgres_schema_url else "?"
    app = App(f"{postgres_schema_url}{sep}group_commit=off")
    try:

        @app.workflow(name="wf")
        def wf() -> None:
            return None

        store = app.store
        assert isinstance(store, PostgresStore)
        runs = claimed(app, 3)
        threads = [
            threading.Thread(target=store.record_step, args=(run.id, run.token, "w", outcome()))
            for run in runs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert (store.group_commit.commits, store.group_commit.writes) == (0, 0)
        assert [rows_of(postgres_schema_url, run.id) for run in runs] == [(1, 1, 2)] * 3
    finally:
        app.close()
    with pytest.raises(ConfigurationError, match=r"group_commit='maybe'.*on or off"):
        App(f"{postgres_schema_url}{sep}group_commit=maybe").store  # noqa: B018
