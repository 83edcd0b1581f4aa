"""Operating runs from a program: waiting on results, workers in threads, bulk redrive."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import surestep
from surestep import App, FakeClock, ResultTimeoutError, State
from surestep.testing import drive


def test_result_of_a_run_waiting_for_an_event_names_the_event(app: App) -> None:
    @app.workflow(name="approval")
    def approval() -> object:
        return surestep.wait_for_event("approved", timeout=timedelta(days=1))

    handle = app.start(approval, run_id="needs-ok")
    drive(app, until=lambda: handle.state == State.WAITING)

    with pytest.raises(ResultTimeoutError) as caught:
        handle.result(timeout=0.05)

    message = str(caught.value)
    assert "is still waiting" in message
    assert "it waits for event 'approved' until " in message
    assert "surestep send needs-ok approved" in message
    assert "is a worker running" not in message


def test_result_of_a_run_in_needs_review_says_it_waits_for_a_person(
    app: App, clock: FakeClock
) -> None:
    @app.workflow(name="slow_approval")
    def slow_approval() -> object:
        return surestep.wait_for_event("approved")

    handle = app.start(
        slow_approval, run_id="late", deadline=timedelta(minutes=5), on_deadline="review"
    )
    drive(app, until=lambda: handle.state == State.WAITING)
    clock.advance(600)
    drive(app, until=lambda: handle.state == State.NEEDS_REVIEW)

    with pytest.raises(ResultTimeoutError) as caught:
        handle.result(timeout=0.05)

    message = str(caught.value)
    assert "needs review (deadline breached" in message
    assert "waits for a person's decision" in message
    assert "is a worker running" not in message


def test_a_worker_runs_in_a_thread_other_than_the_main_thread(db_url: str) -> None:
    app = App(db_url)  # the real clock: the worker really waits and polls

    @app.workflow(name="double")
    def double(x: int) -> int:
        return 2 * x

    worker = app.worker(concurrency=2, poll_interval=0.02)
    crashed: list[BaseException] = []

    def serve() -> None:
        try:
            worker.run()
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=serve, name="not-main")
    thread.start()
    try:
        assert app.start(double, 21).result(timeout=10) == 42
    finally:
        worker.stop()
        thread.join(timeout=10)
        app.close()
    assert not thread.is_alive()
    assert crashed == []
