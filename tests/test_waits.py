"""Durable sleep, events, deadlines and child runs, on both databases, with a fake clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import surestep
from surestep import (
    App,
    EventTimeoutError,
    FakeClock,
    InvalidOperationError,
    RunNotFoundError,
    State,
    StepError,
)
from surestep.testing import drive, run_workflow


def test_a_durable_sleep_releases_the_run_and_survives_a_restart(
    db_url: str, clock: FakeClock
) -> None:
    def build() -> App:
        app = App(db_url, clock=clock)

        @app.step(name="note")
        def note(text: str) -> str:
            return text

        @app.workflow(name="nap")
        def nap() -> str:
            note("before")
            surestep.sleep(timedelta(hours=1))
            return note("after")

        return app

    app = build()
    handle = app.start("nap")
    drive(app, until=lambda: handle.state == State.WAITING)
    run = app.get_run(handle.id)
    slept_at = run.steps[1].started_at
    assert run.lease_owner is None and run.available_at == pytest.approx(slept_at + 3600)
    assert [(s.name, s.state) for s in run.steps] == [
        ("note", State.SUCCESS),
        ("surestep.sleep", State.WAITING),
    ]
    app.close()  # the worker process goes away; the wait does not

    app = build()
    drive(app, until=lambda: app.get_run(handle.id).state == State.SUCCESS)
    run = app.get_run(handle.id)
    assert app.handle(handle.id).result() == "after"
    woke = next(e for e in run.events if e.step == "surestep.sleep" and e.to_state == State.SUCCESS)
    assert woke.at >= slept_at + 3600
    app.close()


def test_a_sleep_of_a_year(app: App, clock: FakeClock) -> None:
    @app.workflow()
    def patient() -> float:
        surestep.sleep(timedelta(days=365))
        return 1.0

    started = clock.now()
    assert run_workflow(app, patient).result() == 1.0
    assert clock.now() - started >= 365 * 86400


def test_an_event_sent_before_the_wait_is_buffered_not_lost(app: App) -> None:
    @app.workflow()
    def approval() -> object:
        return surestep.wait_for_event("approved")

    handle = app.start(approval)
    app.send_event(handle.id, "approved", {"by": "alice"})  # no worker has run it yet
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == {"by": "alice"}


def test_an_event_wakes_a_waiting_run(app: App) -> None:
    @app.step(name="after")
    def after(payload: dict[str, str]) -> str:
        return payload["answer"]

    @app.workflow()
    def survey() -> str:
        answer = surestep.wait_for_event("answered")
        return after(answer)

    handle = app.start(survey)
    drive(app, until=lambda: handle.state == State.WAITING)
    run = app.get_run(handle.id)
    assert run.waiting_for == ("event:answered",) and run.available_at is None
    app.send_event(handle.id, "answered", {"answer": "yes"})
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == "yes"


def test_an_event_the_run_does_not_wait_for_does_not_wake_it(app: App) -> None:
    @app.workflow()
    def picky() -> object:
        return surestep.wait_for_event("wanted")

    handle = app.start(picky)
    drive(app, until=lambda: handle.state == State.WAITING)
    app.send_event(handle.id, "other", 1)
    assert app.get_run(handle.id).available_at is None  # still asleep, event buffered
    app.send_event(handle.id, "wanted", 2)
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == 2


def test_wait_timeouts_return_none_or_raise(app: App) -> None:
    @app.workflow()
    def lenient() -> object:
        return surestep.wait_for_event("never", timeout=timedelta(minutes=5))

    @app.workflow()
    def strict() -> str:
        try:
            surestep.wait_for_event("never", timeout=60, raise_on_timeout=True)
        except EventTimeoutError as error:
            return f"timed out: {error}"
        return "no"

    assert run_workflow(app, lenient).result() is None
    assert run_workflow(app, strict).result().startswith("timed out: no event 'never'")


def test_wait_for_any_returns_the_first_of_several(app: App) -> None:
    @app.workflow()
    def either() -> list[object]:
        got = surestep.wait_for_any(["approved", "rejected"])
        assert got is not None
        return [got[0], got[1]]

    handle = app.start(either)
    drive(app, until=lambda: handle.state == State.WAITING)
    app.send_event(handle.id, "rejected", "too expensive")
    app.send_event(handle.id, "approved", "late")
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == ["rejected", "too expensive"]


def test_events_to_finished_or_unknown_runs_are_refused(app: App) -> None:
    @app.workflow()
    def quick() -> int:
        return 1

    handle = run_workflow(app, quick)
    with pytest.raises(InvalidOperationError, match=r"already finished.*'late'"):
        app.send_event(handle.id, "late", None)
    with pytest.raises(RunNotFoundError, match="'nope'"):
        app.send_event("nope", "x", None)


def test_async_workflows_sleep_and_wait(app: App) -> None:
    @app.step(name="double")
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow()
    async def flow() -> int:
        await surestep.sleep_async(30)
        value = await surestep.wait_for_event_async("number")
        return await double(value)

    handle = app.start(flow)
    drive(app, until=lambda: app.get_run(handle.id).waiting_for == ("event:number",))
    app.send_event(handle.id, "number", 21)
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == 42
    assert asyncio.run(_noop()) is None


async def _noop() -> None:
    await surestep.sleep_async(0)  # outside a workflow: a plain asyncio.sleep


@pytest.mark.parametrize(
    ("on_deadline", "ends"),
    [("fail", State.FAILED), ("cancel", State.CANCELLED), ("review", State.NEEDS_REVIEW)],
)
def test_a_deadline_that_passes_while_no_worker_runs(
    app: App, clock: FakeClock, on_deadline: str, ends: State
) -> None:
    @app.workflow()
    def slow() -> object:
        return surestep.wait_for_event("never")

    handle = app.start(slow)
    drive(app, until=lambda: handle.state == State.WAITING)
    # the deadline is set on start; start another run with one, then let time pass
    late = app.start(slow, deadline=timedelta(hours=4), on_deadline=on_deadline)
    clock.advance(5 * 3600)  # nobody is running a worker now
    drive(app, until=lambda: late.state == ends)
    run = app.get_run(late.id)
    assert run.deadline_breached_at is not None
    breach = [e for e in run.events if e.step is None][-1]  # a review task may follow it
    assert breach.to_state == ends and breach.reason is not None
    assert breach.reason.startswith(f"deadline breached; on_deadline={on_deadline}")
    assert app.store.count_deadline_breaches() == 1
    assert handle.state == State.WAITING  # the run without a deadline is untouched


def test_a_child_workflow_returns_its_result_and_records_its_parent(app: App) -> None:
    @app.step(name="square")
    def square(x: int) -> int:
        return x * x

    @app.workflow(name="child")
    def child(x: int) -> int:
        return square(x)

    @app.workflow(name="parent")
    def parent(n: int) -> int:
        return sum(surestep.run_child(child, i) for i in range(1, n + 1))

    handle = run_workflow(app, parent, 3, run_id="p")
    assert handle.result() == 14
    children = [r for r in app.list_runs(workflow="child")]
    assert sorted(r.id for r in children) == ["p:0", "p:1", "p:2"]
    assert {r.parent_id for r in children} == {"p"}
    assert [s.name for s in app.get_run("p").steps] == ["child:child"] * 3


def test_a_failed_child_raises_in_the_parent(app: App) -> None:
    @app.step(name="explode", on_exhausted="fail", retry=surestep.Retry(max_attempts=1))
    def explode() -> None:
        raise ValueError("bad input")

    @app.workflow(name="kid")
    def kid() -> None:
        explode()

    @app.workflow(name="mom")
    def mom() -> str:
        try:
            surestep.run_child(kid)
        except StepError as error:
            return f"child failed: {error.error_type}"
        return "no"

    assert run_workflow(app, mom).result() == "child failed: surestep.errors.StepError"


def test_cancelling_a_parent_cancels_its_children(app: App) -> None:
    @app.workflow(name="waiter")
    def waiter() -> object:
        return surestep.wait_for_event("never")

    @app.workflow(name="boss")
    def boss() -> object:
        return surestep.run_child(waiter)

    handle = app.start(boss, run_id="boss")
    drive(
        app,
        until=lambda: (
            app.get_run("boss:0").state == State.WAITING
            if app.list_runs(workflow="waiter")
            else False
        ),
    )
    app.cancel("boss", reason="no longer needed")
    assert app.get_run("boss").state == State.CANCELLED
    child = app.get_run("boss:0")
    assert child.state == State.CANCELLED
    assert child.events[-1].reason == "parent run cancelled"
    assert handle.state == State.CANCELLED
