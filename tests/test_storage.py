"""The storage contract. Each test runs against every backend in ``store``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from surestep import (
    IdempotencyConflictError,
    IllegalTransitionError,
    InvalidOperationError,
    LeaseLostError,
    RunNotFoundError,
    State,
    StorageError,
)
from surestep.storage import StepOutcome, Store, open_store

WF = [("wf", "1")]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = open_store(db_url)
    yield store
    store.close()


def outcome(position: int = 0, to_state: State = State.SUCCESS) -> StepOutcome:
    return StepOutcome(position, "s", State.PENDING, to_state, 1, 10.0, 11.0, output='"x"')


def test_create_is_idempotent_and_refuses_conflicting_reuse(store: Store) -> None:
    assert store.create_run("r", "wf", "1", '{"a": 1}', 1.0, "me") is True
    assert store.create_run("r", "wf", "1", '{"a":1}', 2.0, "you") is False
    with pytest.raises(IdempotencyConflictError, match="other inputs"):
        store.create_run("r", "wf", "1", '{"a": 2}', 3.0, "me")
    with pytest.raises(IdempotencyConflictError, match="workflow 'wf'"):
        store.create_run("r", "other", "1", '{"a": 1}', 3.0, "me")
    assert [e.to_state for e in store.get_run("r").events] == [State.PENDING]


def test_claim_leases_due_runs_once_and_only_of_known_workflows(store: Store) -> None:
    store.create_run("a", "wf", "1", "{}", 1.0, "me")
    store.create_run("b", "wf", "2", "{}", 1.0, "me")
    store.create_run("c", "other", "1", "{}", 1.0, "me")
    first = store.claim("w1", WF, 10, 5.0, 30.0)
    assert [c.id for c in first] == ["a"] and first[0].token == 1
    assert store.claim("w2", WF, 10, 5.0, 30.0) == []
    run = store.get_run("a")
    assert (run.state, run.lease_owner) == (State.RUNNING, "w1")


def test_a_fenced_write_with_a_stale_token_is_refused_and_leaves_nothing(
    store: Store,
) -> None:
    store.create_run("r", "wf", "1", "{}", 1.0, "me")
    (old,) = store.claim("w1", WF, 1, 2.0, 30.0)
    # w1's lease lapses; another worker recovers and claims the run
    assert store.expired_leases(40.0) == [("r", old.token, "w1")]
    assert store.release([("r", old.token)], "w2", "lease expired", 40.0).count == 1
    (new,) = store.claim("w2", WF, 1, 41.0, 30.0)
    assert new.token == old.token + 1
    with pytest.raises(LeaseLostError):
        store.record_step("r", old.token, "w1", outcome())
    with pytest.raises(LeaseLostError):
        store.finish("r", old.token, "w1", State.SUCCESS, 42.0, output="1")
    assert store.recorded_steps("r") == {}
    store.record_step("r", new.token, "w2", outcome())
    store.finish("r", new.token, "w2", State.SUCCESS, 43.0, output="1")
    assert store.get_run("r").state == State.SUCCESS


def test_a_cancelled_run_fences_off_its_worker(store: Store) -> None:
    store.create_run("r", "wf", "1", "{}", 1.0, "me")
    (claimed,) = store.claim("w1", WF, 1, 2.0, 30.0)
    assert store.cancel("r", "alice", "not needed", 3.0) == State.RUNNING
    with pytest.raises(LeaseLostError):
        store.record_step("r", claimed.token, "w1", outcome())
    assert store.get_run("r").state == State.CANCELLED


def test_illegal_transitions_are_refused_by_the_store(store: Store) -> None:
    store.create_run("r", "wf", "1", "{}", 1.0, "me")
    (claimed,) = store.claim("w1", WF, 1, 2.0, 30.0)
    with pytest.raises(IllegalTransitionError):
        store.finish("r", claimed.token, "w1", State.RUNNING, 3.0)
    with pytest.raises(IllegalTransitionError):
        store.record_step("r", claimed.token, "w1", outcome(to_state=State.PENDING))
    bad_start = StepOutcome(0, "s", State.SUCCESS, State.SUCCESS, 2, 1.0, 2.0)
    with pytest.raises(IllegalTransitionError):
        store.record_step("r", claimed.token, "w1", bad_start)
    store.finish("r", claimed.token, "w1", State.SUCCESS, 3.0, output="null")
    with pytest.raises(InvalidOperationError, match="already finished"):
        store.cancel("r", "alice", "late", 4.0)
    with pytest.raises(InvalidOperationError, match="not dead_letter"):
        store.redrive("r", "alice", "again", 4.0)
    with pytest.raises(RunNotFoundError):
        store.cancel("nope", "alice", "x", 4.0)
    # nothing of the refused attempts was written
    assert [e.to_state for e in store.get_run("r").events] == [
        State.PENDING,
        State.RUNNING,
        State.SUCCESS,
    ]


def test_redrive_gives_dead_lettered_steps_a_fresh_budget(store: Store) -> None:
    store.create_run("r", "wf", "1", "{}", 1.0, "me")
    (c,) = store.claim("w1", WF, 1, 2.0, 30.0)
    store.record_step("r", c.token, "w1", outcome(0))
    dead = StepOutcome(1, "t", State.PENDING, State.DEAD_LETTER, 3, 3.0, 4.0, error='{"type":"E"}')
    store.record_step("r", c.token, "w1", dead)
    store.finish("r", c.token, "w1", State.DEAD_LETTER, 5.0, error='{"type":"E"}')
    assert store.redrive("r", "ops", "fixed", 6.0) == ["t"]
    steps = store.recorded_steps("r")
    assert steps[0].state == State.SUCCESS
    assert (steps[1].state, steps[1].attempts, steps[1].retry_base) == (State.PENDING, 3, 3)
    assert store.get_run("r").state == State.PENDING


def test_list_runs_filters_and_orders_newest_first(store: Store) -> None:
    for i in range(5):
        store.create_run(f"r{i}", "wf" if i % 2 else "other", "1", "{}", float(i), "me")
    assert [r.id for r in store.list_runs(limit=3)] == ["r4", "r3", "r2"]
    assert [r.id for r in store.list_runs(workflow="wf")] == ["r3", "r1"]
    store.cancel("r3", "me", "x", 9.0)
    assert [r.id for r in store.list_runs(state=State.CANCELLED)] == ["r3"]


def test_the_event_log_is_append_only(store: Store) -> None:
    store.create_run("r", "wf", "1", "{}", 1.0, "me")
    with pytest.raises(StorageError, match="append-only"), store.transaction() as cur:
        cur.execute("UPDATE surestep_events SET actor = 'mallory'")
    with pytest.raises(StorageError, match="append-only"), store.transaction() as cur:
        cur.execute("DELETE FROM surestep_events")
    assert [e.actor for e in store.get_run("r").events] == ["me"]
    # retention: once a run is deleted, its events may go
    with store.transaction() as cur:
        cur.execute("DELETE FROM surestep_runs")
        cur.execute("DELETE FROM surestep_events")


def test_prune_deletes_old_finished_runs_only(store: Store) -> None:
    for i, (state, age) in enumerate(
        [
            ("success", 100),
            ("failed", 100),
            ("cancelled", 100),
            ("success", 1),
            ("dead_letter", 100),
            ("pending", 100),
        ]
    ):
        store.create_run(f"r{i}", "wf", "1", "{}", 0.0, "me")
        with store.transaction() as cur:
            cur.execute(
                "UPDATE surestep_runs SET state = ?, updated_at = ? WHERE id = ?",
                (state, 1000.0 - age, f"r{i}"),
            )
    assert store.prune(before=950.0, batch=2) == 3
    assert sorted(r.id for r in store.list_runs()) == ["r3", "r4", "r5"]
    with store.reading() as cur:
        cur.execute("SELECT COUNT(*) FROM surestep_events WHERE run_id IN ('r0', 'r1', 'r2')")
        assert cur.fetchone()[0] == 0
