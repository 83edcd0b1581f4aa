"""What only PostgreSQL does: wake idle workers by NOTIFY."""

from __future__ import annotations

import asyncio
import threading

from surestep import App, State


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
