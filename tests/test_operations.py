"""Operating runs from a program: waiting on results, workers in threads, bulk redrive."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

import surestep
from surestep import App, ConfigurationError, FakeClock, ResultTimeoutError, Retry, State
from surestep.testing import drive, run_workflow


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
    assert "needs review (review task 1 (run_deadline: deadline breached" in message
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


# -- bulk redrive ------------------------------------------------------------------------


def dead_letters(app: App, clock: FakeClock) -> None:
    """Dead letters: a-1, a-2 (ConnectionError), a-3 (ValueError, later), b-1; and ok-1."""

    @app.step(name="flaky", retry=Retry(max_attempts=1))
    def flaky(kind: str) -> str:
        if kind == "value":
            raise ValueError("bad document")
        raise ConnectionError("api is down")

    @app.workflow(name="a")
    def a(kind: str) -> str:
        return flaky(kind)

    @app.workflow(name="b")
    def b(kind: str) -> str:
        return flaky(kind)

    @app.workflow(name="fine")
    def fine() -> int:
        return 1

    run_workflow(app, a, "conn", run_id="a-1")
    run_workflow(app, a, "conn", run_id="a-2")
    run_workflow(app, b, "conn", run_id="b-1")
    clock.advance(3600)
    run_workflow(app, a, "value", run_id="a-3")
    run_workflow(app, fine, run_id="ok-1")


def states(app: App) -> dict[str, State]:
    return {run.id: run.state for run in app.list_runs()}


def test_retry_many_dry_run_changes_nothing(app: App, clock: FakeClock) -> None:
    dead_letters(app, clock)
    before = states(app)

    outcomes = app.retry_many(dry_run=True)

    assert [(o.run_id, o.steps, o.ok, o.dry_run) for o in outcomes] == [
        ("a-1", ("flaky",), True, True),
        ("a-2", ("flaky",), True, True),
        ("b-1", ("flaky",), True, True),
        ("a-3", ("flaky",), True, True),
    ]
    assert states(app) == before


def test_retry_many_by_id_reports_each_failure_and_redrives_the_rest(
    app: App, clock: FakeClock
) -> None:
    dead_letters(app, clock)

    outcomes = app.retry_many(["a-1", "ok-1", "no-such-run", "a-2"])

    assert [o.run_id for o in outcomes] == ["a-1", "ok-1", "no-such-run", "a-2"]
    assert [o.ok for o in outcomes] == [True, False, False, True]
    assert "is success, not dead_letter" in str(outcomes[1].error)
    assert "no run with id 'no-such-run'" in str(outcomes[2].error)
    assert outcomes[0].steps == ("flaky",)
    now = states(app)
    assert (now["a-1"], now["a-2"], now["b-1"]) == (State.PENDING, State.PENDING, State.DEAD_LETTER)


def test_retry_many_selects_dead_letters_by_workflow_error_and_age(
    app: App, clock: FakeClock
) -> None:
    dead_letters(app, clock)

    by_workflow = app.retry_many(workflow="b", dry_run=True)
    by_error = app.retry_many(error="ValueError", dry_run=True)
    by_age = app.retry_many(since=clock.now() - 60, dry_run=True)
    redriven = app.retry_many(workflow="a", error="ConnectionError")

    assert [o.run_id for o in by_workflow] == ["b-1"]
    assert [o.run_id for o in by_error] == ["a-3"]
    assert [o.run_id for o in by_age] == ["a-3"]
    assert [o.run_id for o in redriven] == ["a-1", "a-2"]
    assert [r.id for r in app.list_runs(state=State.DEAD_LETTER)] == ["a-3", "b-1"]
    with pytest.raises(ConfigurationError, match="cannot be combined with run_ids"):
        app.retry_many(["a-3"], workflow="a")
