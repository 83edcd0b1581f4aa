"""What only PostgreSQL does: wake idle workers by NOTIFY."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import POSTGRES_URL, require_postgres  # tests/conftest.py

from surestep import App, State


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
