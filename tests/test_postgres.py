"""What only PostgreSQL does: wake idle workers by NOTIFY; claim and finish a run in one
statement each."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from conftest import POSTGRES_URL, require_postgres  # tests/conftest.py

import surestep.storage.postgres_ends as ends
from surestep import App, LeaseLostError, State
from surestep.storage import StepOutcome, open_store


@pytest.fixture
def database_url() -> Iterator[str]:
    """A URL of a new, empty database (dropped afterwards): NOTIFY reaches every session
    listening in one database, whatever its schema, so only a database of its own keeps
    other tests' (and other processes') notifications away."""
    require_postgres()
    import psycopg

    name = f"surestep_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(POSTGRES_URL)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_notify_wakes_an_idle_worker_for_a_run_started_elsewhere(
    postgres_schema_url: str,
) -> None:
    worker_app, client = App(postgres_schema_url), App(postgres_schema_url)
    for app in (worker_app, client):

        @app.step(name="shout")
        def shout(text: str) -> str:
            return text.upper()

        @app.workflow(name="greet")
        def greet(text: str) -> str:
            return shout(text)

    # A poll interval of a minute: only a notification can make this worker claim the
    # run below within the test's timeout.
    worker = worker_app.worker(concurrency=2, poll_interval=60)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    thread.start()
    try:
        for attempt in range(3):  # a few starts, each one a separate notification
            handle = client.start("greet", f"hi {attempt}")
            assert handle.result(timeout=20) == f"HI {attempt}"
            assert client.get_run(handle.id).state == State.SUCCESS
    finally:
        worker.stop()
        thread.join(15)
        worker_app.close()
        client.close()
    assert not thread.is_alive()


def test_notify_wakes_an_idle_worker_when_a_queues_place_frees(database_url: str) -> None:
    """A worker held back by a full queue sleeps until its next poll (a minute here):
    the end of a queued run in another worker wakes it to take the freed place."""
    released = threading.Event()
    holder, waiter, client = (App(database_url) for _ in range(3))
    for app in (holder, waiter, client):
        app.queue("llm", concurrency=1)
    for app in (holder, client):

        @app.workflow(name="hold", queue="llm")
        def hold() -> str:
            released.wait(30)
            return "held"

    for app in (waiter, client):

        @app.workflow(name="quick", queue="llm")
        def quick() -> str:
            return "quick"

    workers = [app.worker(concurrency=2, poll_interval=60) for app in (holder, waiter)]
    threads = [threading.Thread(target=lambda w=w: asyncio.run(w.run_async())) for w in workers]
    for thread in threads:
        thread.start()
    try:
        held = client.start("hold")
        deadline = time.monotonic() + 20
        while held.state != State.RUNNING:
            assert time.monotonic() < deadline, "the holder never claimed its run"
            time.sleep(0.02)
        quick = client.start("quick")  # the waiter tries, and the full queue holds it back
        time.sleep(1.0)  # (had it not tried yet, it would now; the test then shows less)
        assert client.get_run(quick.id).state == State.PENDING
        released.set()
        assert quick.result(timeout=20) == "quick"  # well before the waiter's next poll
        events = client.get_run(held.id).events + client.get_run(quick.id).events
        ended = next(e.id for e in events if e.run_id == held.id and e.to_state == "success")
        claimed = next(e.id for e in events if e.run_id == quick.id and e.to_state == "running")
        assert ended < claimed
    finally:
        released.set()
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(15)
        for app in (holder, waiter, client):
            app.close()


# -- the claim and the finish in one statement each -------------------------------------

WF = [("wf", "1")]


def _ok(position: int) -> StepOutcome:
    return StepOutcome(position, "s", State.PENDING, State.SUCCESS, 1, 3.0, 3.5, output='"x"')


def test_the_one_statement_claim_skips_a_run_another_transaction_holds(
    postgres_schema_url: str,
) -> None:
    store = open_store(postgres_schema_url)
    try:
        store.create_run("held", "wf", "1", "{}", 1.0, "me")
        store.create_run("free", "wf", "1", "{}", 2.0, "me")
        with psycopg.connect(postgres_schema_url) as other:
            # Another worker's claim (or a cancel) has the earliest run's row locked.
            other.execute("SELECT 1 FROM surestep_runs WHERE id = 'held' FOR UPDATE")
            assert [c.id for c in store.claim("w1", WF, 2, 5.0, 30.0)] == ["free"]
            other.rollback()
        (claimed,) = store.claim("w2", WF, 2, 6.0, 30.0)
        assert (claimed.id, claimed.token) == ("held", 1)
        events = store.get_run("held").events
        assert [(e.from_state, e.to_state, e.actor, e.reason) for e in events][-1] == (
            State.PENDING,
            State.RUNNING,
            "w2",
            "claimed",
        )
    finally:
        store.close()


def test_a_reclaimed_run_comes_with_its_steps_and_the_old_lease_is_fenced_off(
    postgres_schema_url: str,
) -> None:
    store = open_store(postgres_schema_url)
    try:
        store.create_run("r", "wf", "1", "{}", 1.0, "me")
        (first,) = store.claim("w1", WF, 1, 2.0, 30.0)
        assert first.recorded == {}
        store.record_step("r", first.token, "w1", _ok(0))
        store.record_step("r", first.token, "w1", _ok(1))
        store.release([("r", first.token)], "w1", "shutting down", 4.0)
        (second,) = store.claim("w2", WF, 1, 5.0, 30.0)
        assert second.token == first.token + 1
        assert sorted(second.recorded) == [0, 1] and second.recorded[1].output == '"x"'
        with pytest.raises(LeaseLostError):
            store.record_step("r", first.token, "w1", _ok(2))
        with pytest.raises(LeaseLostError):
            store.finish("r", first.token, "w1", State.SUCCESS, 6.0, output="1")
        store.finish("r", second.token, "w2", State.SUCCESS, 7.0, output="1")
        assert store.get_run("r").state == State.SUCCESS
    finally:
        store.close()


@pytest.mark.parametrize("parent", [None, "p"], ids=["one statement", "general path"])
def test_a_finish_retried_after_its_acknowledgement_was_lost_ends_the_run_once(
    postgres_schema_url: str, parent: str | None
) -> None:
    store = open_store(postgres_schema_url)
    try:
        store.create_run("p", "other", "1", "{}", 1.0, "me")
        store.create_run("r", "wf", "1", "{}", 1.0, "me", parent_id=parent)
        (claimed,) = store.claim("w1", WF, 1, 2.0, 30.0)
        store.finish("r", claimed.token, "w1", State.SUCCESS, 3.0, output="1", parent_id=parent)
        # The retry of a commit that went through: the same finish, once more.
        store.finish("r", claimed.token, "w1", State.SUCCESS, 3.0, output="1", parent_id=parent)
        ends = [e for e in store.get_run("r").events if e.to_state == State.SUCCESS]
        assert len(ends) == 1
        # Not this finish (another time): the run is no longer held.
        with pytest.raises(LeaseLostError):
            store.finish("r", claimed.token, "w1", State.SUCCESS, 4.0, output="1")
    finally:
        store.close()


def test_a_runs_end_commits_without_waiting_for_the_wal_flush_and_a_claim_waits(
    postgres_schema_url: str,
) -> None:
    open_store(postgres_schema_url).close()  # the schema
    with psycopg.connect(postgres_schema_url) as conn:  # a transaction to look into
        conn.execute(
            "INSERT INTO surestep_runs (id, workflow, workflow_version, state,"
            " inputs, created_at, updated_at, available_at)"
            " VALUES ('r', 'wf', '1', 'pending', '{}', 1, 1, 1)"
        )
        conn.commit()

        def synchronous_commit() -> str:
            row = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
            assert row is not None
            return str(row[0])

        server = synchronous_commit()
        assert server != "off"  # as PostgreSQL ships; else this test proves nothing
        claimed = conn.execute(ends.CLAIM, ends.claim_params("w1", WF, 1, 2.0, 30.0)).fetchall()
        assert [row[0] for row in claimed] == ["r"]
        assert synchronous_commit() == server  # a lost claim would reissue its token
        ending = ends.Ending("r", 1, "w1", State.SUCCESS, 3.0)
        row = conn.execute(ends.finish_sql(()), ends.finish_params(ending, {})).fetchone()
        assert row is not None and row[1]  # ended
        assert synchronous_commit() == "off"  # for this transaction's commit only
        conn.commit()
        assert synchronous_commit() == server


def test_end_listeners_are_called_whenever_their_probe_says_they_have_work(
    postgres_schema_url: str,
) -> None:
    store = open_store(postgres_schema_url)
    heard: list[tuple[str, State]] = []

    def listener(cur: Any, run_id: str, to_state: State, *rest: Any) -> None:
        cur.execute("SELECT 1")  # listeners run SQL in the finish's transaction
        heard.append((run_id, to_state))

    try:
        for due, run_id in enumerate(("quiet", "busy", "parked", "unprobed")):
            store.create_run(run_id, "wf", "1", "{}", 1.0 + due / 10, "me")
        store.end_listeners = (listener,)
        store.end_probes = {listener: "ending.run_id = 'busy'"}
        for expected in ("quiet", "busy"):
            (c,) = store.claim("w1", WF, 1, 2.0, 30.0)
            assert c.id == expected
            store.finish(c.id, c.token, "w1", State.SUCCESS, 3.0, output="1")
        (c,) = store.claim("w1", WF, 1, 2.0, 30.0)
        store.finish(c.id, c.token, "w1", State.WAITING, 3.0, available_at=50.0)
        store.end_probes = {}  # a listener without a probe: always called
        (c,) = store.claim("w1", WF, 1, 2.0, 30.0)
        store.finish(c.id, c.token, "w1", State.FAILED, 3.0, error='{"type": "E"}')
        # Not for "quiet" (its probe is false) nor "parked" (listeners hear of ends only).
        assert heard == [("busy", State.SUCCESS), ("unprobed", State.FAILED)]
        assert [store.get_run(r).state for r in ("quiet", "parked")] == [
            State.SUCCESS,
            State.WAITING,
        ]
    finally:
        store.close()


def test_a_finish_that_makes_a_run_claimable_notifies(postgres_schema_url: str) -> None:
    store = open_store(postgres_schema_url)
    woken = threading.Event()
    try:
        store.create_run("r", "wf", "1", "{}", 1.0, "me")
        (c,) = store.claim("w1", WF, 1, 2.0, 30.0)
        connected = threading.Event()
        unlisten = store.listen(lambda: woken.set() if connected.is_set() else connected.set())
        assert connected.wait(10)
        store.finish("r", c.token, "w1", State.PENDING, 3.0, available_at=3.5, reason="retry")
        assert woken.wait(10)
        unlisten()
        run = store.get_run("r")
        assert (run.state, run.lease_owner) == (State.PENDING, None)
    finally:
        store.close()
