"""Saga compensation and cancellation, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

import pytest

import surestep
from surestep import App, InvalidOperationError, Retry, RunFailedError, State
from surestep.testing import drive, run_workflow


class WorkerCrash(BaseException):
    """Stands in for a crash of the worker process (the engine does not catch it)."""


@dataclass
class Ledger:
    """What the outside world saw, in order."""

    lines: list[str] = field(default_factory=list)
    crash_on: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)

    def __call__(self, line: str) -> None:
        if line in self.crash_on:
            self.crash_on.discard(line)
            raise WorkerCrash(f"worker crashed in {line}")  # not a step failure: a crash
        if line in self.broken:
            raise ConnectionError(f"{line}: service down")
        self.lines.append(line)


def order_saga(app: App, ledger: Ledger, ship_fails: bool = True) -> object:
    undo = Retry(max_attempts=2, initial_delay=1, jitter=False)

    @app.step(name="release_inventory", retry=undo)
    def release_inventory(order: str) -> None:
        ledger(f"release {order}")

    @app.step(name="refund_payment", retry=undo)
    def refund_payment(order: str) -> None:
        ledger(f"refund {order}")

    @app.step(name="reserve_inventory", compensate=release_inventory)
    def reserve_inventory(order: str) -> str:
        ledger(f"reserve {order}")
        return "r-1"

    @app.step(name="charge_payment", compensate=refund_payment)
    def charge_payment(order: str) -> str:
        ledger(f"charge {order}")
        return "c-1"

    # a bad address is not worth retrying: the step gives up and the run fails
    @app.step(name="ship", retry=Retry(give_up_on=(ValueError,)))
    def ship(order: str) -> str:
        if ship_fails:
            raise ValueError("address does not exist")
        ledger(f"ship {order}")
        return "s-1"

    @app.workflow(name="order")
    def order(order_id: str) -> str:
        reserve_inventory(order_id)
        charge_payment(order_id)
        ship(order_id)
        return "confirmed"

    return order


def test_a_failed_run_undoes_its_completed_steps_in_reverse_order(app: App) -> None:
    ledger = Ledger()
    order = order_saga(app, ledger)
    handle = run_workflow(app, order, "o-1", run_id="o-1")
    with pytest.raises(RunFailedError):
        handle.result()
    assert ledger.lines == ["reserve o-1", "charge o-1", "refund o-1", "release o-1"]
    run = app.get_run("o-1")
    assert run.state == State.FAILED and run.compensating is None
    assert "address does not exist" in (run.error or {}).get("message", "")
    undone = {s.position: (s.name, s.state) for s in run.steps if s.position < 0}
    assert undone == {
        -2: ("refund_payment", State.SUCCESS),
        -1: ("release_inventory", State.SUCCESS),
    }


def test_a_crash_during_compensation_resumes_compensating(app: App) -> None:
    ledger = Ledger(crash_on={"release o-2"})
    order = order_saga(app, ledger)
    handle = run_workflow(app, order, "o-2", run_id="o-2")
    assert handle.state == State.FAILED
    # refund ran once and was checkpointed before the crash; release ran after it
    assert ledger.lines == ["reserve o-2", "charge o-2", "refund o-2", "release o-2"]
    events = app.get_run("o-2").events
    assert any(e.reason and "worker error" in e.reason for e in events)


def test_a_compensation_that_exhausts_its_retries_dead_letters_and_can_be_redriven(
    app: App,
) -> None:
    ledger = Ledger(broken={"refund o-3"})
    order = order_saga(app, ledger)
    handle = run_workflow(app, order, "o-3", run_id="o-3")
    run = app.get_run("o-3")
    assert run.state == State.DEAD_LETTER and run.compensating == State.FAILED
    refund = next(s for s in run.steps if s.name == "refund_payment")
    assert refund.state == State.DEAD_LETTER and refund.attempts == 2
    assert "release o-3" not in ledger.lines  # not undone yet, and the record says so

    ledger.broken.clear()
    app.retry("o-3")
    drive(app, until=lambda: handle.state == State.FAILED)
    assert ledger.lines == ["reserve o-3", "charge o-3", "refund o-3", "release o-3"]


def test_cancelling_a_run_with_completed_steps_undoes_them(app: App) -> None:
    ledger = Ledger()

    @app.step(name="unbook")
    def unbook(room: str) -> None:
        ledger(f"unbook {room}")

    @app.step(name="book", compensate=unbook)
    def book(room: str) -> None:
        ledger(f"book {room}")

    @app.workflow(name="trip")
    def trip() -> object:
        book("101")
        return surestep.wait_for_event("confirm")

    handle = app.start(trip)
    drive(app, until=lambda: handle.state == State.WAITING)
    assert app.cancel(handle.id, reason="customer changed plans") == State.WAITING
    assert app.get_run(handle.id).compensating == State.CANCELLED
    drive(app, until=lambda: handle.state == State.CANCELLED)
    assert ledger.lines == ["book 101", "unbook 101"]


def test_a_plain_function_can_be_a_compensation(app: App) -> None:
    undone: list[str] = []

    def forget(key: str) -> None:
        undone.append(key)

    @app.step(name="remember", compensate=forget)
    def remember(key: str) -> None: ...

    @app.workflow()
    def flaky(key: str) -> None:
        remember(key)
        raise RuntimeError("the workflow itself fails")

    assert run_workflow(app, flaky, "k").state == State.FAILED
    assert undone == ["k"]


def test_except_exception_cannot_swallow_a_cancellation(db_url: str) -> None:
    app = App(db_url)
    entered, release = threading.Event(), threading.Event()
    swallowed: list[str] = []

    @app.step(name="slow")
    def slow() -> None:
        entered.set()
        release.wait(10)

    @app.step(name="after")
    def after() -> None: ...

    @app.workflow(name="stubborn")
    def stubborn() -> str:
        try:
            slow()
            after()
        except Exception as error:  # must not see the cancellation
            swallowed.append(repr(error))
        return "finished anyway"

    handle = app.start(stubborn)
    driver = threading.Thread(
        target=drive, args=(app, lambda: handle.state == State.CANCELLED), daemon=True
    )
    driver.start()
    assert entered.wait(10)
    app.cancel(handle.id, reason="stop")
    release.set()
    driver.join(20)
    time.sleep(0.05)
    run = app.get_run(handle.id)
    assert run.state == State.CANCELLED and swallowed == []
    assert [e.to_state for e in run.events if e.step is None][-1] == State.CANCELLED
    app.close()


def test_cancel_racing_completion_has_exactly_one_winner(db_url: str) -> None:
    app = App(db_url)

    @app.step(name="tick")
    def tick(i: int) -> int:
        return i

    @app.workflow(name="quick")
    def quick(i: int) -> int:
        return tick(i)

    outcomes: dict[str, int] = {"success": 0, "cancelled": 0}
    for i in range(20):
        handle = app.start(quick, i)
        driver = threading.Thread(
            target=drive,
            args=(app, lambda h=handle: h.state in (State.SUCCESS, State.CANCELLED)),
        )
        driver.start()
        time.sleep(0.001 * (i % 5))
        with contextlib.suppress(InvalidOperationError):  # completion won, cancel said so
            app.cancel(handle.id, reason="race")
        driver.join(20)
        run = app.get_run(handle.id)
        ends = [
            e.to_state
            for e in run.events
            if e.step is None and e.to_state in (State.SUCCESS, State.CANCELLED, State.FAILED)
        ]
        assert len(ends) == 1, ends  # exactly one outcome recorded
        assert run.state == ends[0]
        outcomes[run.state.value] += 1
    assert sum(outcomes.values()) == 20
    app.close()


def test_cancelling_interrupts_a_running_async_step(db_url: str) -> None:
    app = App(db_url)
    started, interrupted = threading.Event(), threading.Event()

    @app.step(name="long_call")
    async def long_call() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    @app.workflow(name="waits_long")
    async def waits_long() -> None:
        await long_call()

    handle = app.start(waits_long)
    # The worker runs until the step is interrupted: only its watch for cancelled runs
    # can do that (its own shutdown, which also cancels tasks, comes only afterwards).
    driver = threading.Thread(target=drive, args=(app, interrupted.is_set), daemon=True)
    driver.start()
    assert started.wait(10)
    app.cancel(handle.id, reason="not needed")
    assert interrupted.wait(10)  # well before the step's 30 s
    driver.join(10)
    assert handle.state == State.CANCELLED
    assert app.get_run(handle.id).steps == ()
    app.close()


def test_a_run_keeps_its_error_through_a_retried_compensation(app: App) -> None:
    attempts = {"undo": 0}

    @app.step(name="unlock", retry=Retry(max_attempts=3, initial_delay=1, jitter=False))
    def unlock(door: str) -> None:
        attempts["undo"] += 1
        if attempts["undo"] == 1:
            raise ConnectionError("lock service flaked")

    @app.step(name="lock", compensate=unlock)
    def lock(door: str) -> None: ...

    @app.workflow()
    def burglary() -> None:
        lock("front")
        raise RuntimeError("alarm went off")

    handle = run_workflow(app, burglary)
    run = app.get_run(handle.id)
    assert run.state == State.FAILED and attempts["undo"] == 2
    assert run.error is not None and run.error["message"] == "alarm went off"
