"""The engine against a real SQLite file, with an injected clock."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from pydantic import BaseModel

import surestep
from surestep import (
    App,
    FakeClock,
    Retry,
    RunFailedError,
    State,
    StepError,
    current_step,
)
from surestep.states import SETTLED
from surestep.testing import drive, run_workflow


class _WorkerCrash(BaseException):
    """Stands in for a crash of the worker process (the engine does not catch it)."""


def step_states(app: App, run_id: str) -> list[tuple[str, State, int]]:
    return [(s.name, s.state, s.attempts) for s in app.get_run(run_id).steps]


def test_steps_are_checkpointed_and_the_output_returned(app: App) -> None:
    @app.step()
    def fetch(doc_id: str) -> str:
        return f"text of {doc_id}"

    @app.workflow(name="summarize")
    def summarize(doc_id: str) -> dict[str, str]:
        return {"summary": fetch(doc_id)[:7]}

    handle = run_workflow(app, summarize, "doc-1", run_id="doc-1")
    assert handle.result() == {"summary": "text of"}
    run = app.get_run("doc-1")
    assert run.state == State.SUCCESS and run.inputs == {"doc_id": "doc-1"}
    assert [(s.name, s.state, s.output) for s in run.steps] == [
        ("fetch", State.SUCCESS, "text of doc-1")
    ]
    transitions = [(e.step is None, e.from_state, e.to_state) for e in run.events]
    assert transitions == [
        (True, None, State.PENDING),
        (True, State.PENDING, State.RUNNING),
        (False, State.PENDING, State.RUNNING),
        (False, State.RUNNING, State.SUCCESS),
        (True, State.RUNNING, State.SUCCESS),
    ]
    assert all(e.actor for e in run.events)


def test_a_resumed_run_does_not_rerun_completed_steps(app: App) -> None:
    calls: list[int] = []
    crash_once = {"armed": True}

    @app.step()
    def work(i: int) -> int:
        calls.append(i)
        if i == 3 and crash_once["armed"]:
            crash_once["armed"] = False
            raise _WorkerCrash("simulated crash of the worker")  # not a step failure
        return i * 10

    @app.workflow()
    def job(n: int) -> int:
        return sum(work(i) for i in range(n))

    handle = run_workflow(app, job, 5)
    assert handle.result() == 100
    assert calls == [0, 1, 2, 3, 3, 4]  # steps 0-2 replayed from checkpoints, not re-run
    events = app.get_run(handle.id).events
    assert any(
        e.to_state == State.PENDING and e.reason and "worker error" in e.reason for e in events
    )


def test_backoff_waits_are_durable_and_follow_the_policy(app: App, clock: FakeClock) -> None:
    failures = {"left": 3}

    @app.step(retry=Retry(max_attempts=5, initial_delay=2.0, backoff=3.0, jitter=False))
    def flaky() -> str:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("connection reset")
        return "ok"

    @app.workflow()
    def wf() -> str:
        return flaky()

    handle = run_workflow(app, wf)
    assert handle.result() == "ok"
    (step,) = app.get_run(handle.id).steps
    attempts = step.attempt_records
    assert [a.state for a in attempts] == [State.FAILED] * 3 + [State.SUCCESS]
    gaps = [attempts[i + 1].started_at - attempts[i].finished_at for i in range(3)]
    assert gaps == pytest.approx([2.0, 6.0, 18.0], abs=0.2)
    assert attempts[0].error is not None
    assert attempts[0].error["type"] == "ConnectionError"
    assert "connection reset" in attempts[0].error["message"]
    assert "Traceback" in attempts[0].error["traceback"]
    # while waiting, the run itself was released: waiting, not holding a worker
    run_moves = [
        (e.from_state, e.to_state) for e in app.get_run(handle.id).events if e.step is None
    ]
    assert run_moves.count((State.RUNNING, State.WAITING)) == 3


def test_a_waiting_run_is_not_claimed_before_its_time(app: App, clock: FakeClock) -> None:
    @app.step(retry=Retry(max_attempts=2, initial_delay=3600, max_delay=3600, jitter=False))
    def slow_retry() -> None:
        raise TimeoutError("upstream timed out")

    @app.workflow()
    def wf() -> None:
        slow_retry()

    handle = app.start(wf)
    drive(app, until=lambda: handle.state == State.WAITING)
    run = app.get_run(handle.id)
    failed_at = run.steps[0].attempt_records[0].finished_at
    assert run.available_at == pytest.approx(failed_at + 3600)
    assert run.lease_owner is None  # a waiting run holds no worker
    assert app.store.claim("probe", [("wf", "1")], 10, failed_at + 3599, 30) == []
    claimed = app.store.claim("probe", [("wf", "1")], 10, failed_at + 3600.5, 30)
    assert [c.id for c in claimed] == [handle.id]


def test_exhausted_retries_dead_letter_and_redrive_resumes_at_the_failed_step(
    app: App,
) -> None:
    calls = {"prepare": 0, "publish": 0}
    broken = {"yes": True}

    @app.step()
    def prepare() -> int:
        calls["prepare"] += 1
        return 41

    @app.step(retry=Retry(max_attempts=2, initial_delay=1, jitter=False))
    def publish(x: int) -> int:
        calls["publish"] += 1
        if broken["yes"]:
            raise ConnectionError("search index is down")
        return x + 1

    @app.workflow()
    def pipeline() -> int:
        return publish(prepare())

    handle = run_workflow(app, pipeline, run_id="p-1")
    assert handle.state == State.DEAD_LETTER
    with pytest.raises(RunFailedError, match=r"dead_letter.*surestep retry"):
        handle.result()
    assert [r.id for r in app.list_runs(state="dead_letter")] == ["p-1"]
    assert app.get_run("p-1").error["message"].startswith("search index is down")  # type: ignore[index]

    broken["yes"] = False
    redriven = app.retry("p-1")
    assert redriven == ["publish"]
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == 42
    assert calls == {"prepare": 1, "publish": 3}
    (_, publish_step) = app.get_run("p-1").steps
    assert publish_step.attempts == 3 and publish_step.state == State.SUCCESS


def test_give_up_on_raises_a_step_error_the_workflow_can_catch(app: App) -> None:
    attempts = {"n": 0}

    @app.step(retry=Retry(max_attempts=5, give_up_on=(ValueError,)))
    def parse(raw: str) -> int:
        attempts["n"] += 1
        return int(raw)

    @app.workflow()
    def wf(raw: str) -> str:
        try:
            return str(parse(raw))
        except StepError as error:
            return f"fallback after {error.error_type}"

    handle = run_workflow(app, wf, "not a number")
    assert handle.result() == "fallback after ValueError"
    assert attempts["n"] == 1
    (step,) = app.get_run(handle.id).steps
    assert step.state == State.FAILED


def test_an_uncaught_step_error_fails_the_run(app: App) -> None:
    @app.step(retry=Retry(max_attempts=3), on_exhausted="fail")
    def always() -> None:
        raise ConnectionError("nope")

    @app.workflow()
    def wf() -> None:
        always()

    handle = run_workflow(app, wf)
    with pytest.raises(RunFailedError) as caught:
        handle.result()
    assert caught.value.state == State.FAILED
    assert caught.value.error["type"] == "surestep.errors.StepError"
    assert app.get_run(handle.id).steps[0].attempts == 3


def test_a_sync_step_over_its_timeout_counts_as_a_failed_attempt(app: App) -> None:
    release = threading.Event()
    runs = {"n": 0}

    @app.step(
        timeout=0.05,
        retry=Retry(max_attempts=2, initial_delay=0, jitter=False),
        on_exhausted="fail",
    )
    def slow() -> str:
        runs["n"] += 1
        if runs["n"] == 1:
            release.wait(5)
        return "fast enough"

    @app.workflow()
    def wf() -> str:
        return slow()

    handle = run_workflow(app, wf)
    release.set()
    assert handle.result() == "fast enough"
    first, second = app.get_run(handle.id).steps[0].attempt_records
    assert first.error is not None and first.error["type"] == "surestep.errors.StepTimeoutError"
    assert second.state == State.SUCCESS


def test_an_async_step_over_its_timeout_is_cancelled(app: App) -> None:
    cancelled = []

    @app.step(timeout=0.05, retry=Retry(max_attempts=1), on_exhausted="fail")
    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    @app.workflow()
    async def wf() -> str:
        try:
            await hang()
        except StepError as error:
            return error.error_type
        return "no"

    handle = run_workflow(app, wf)
    assert handle.result() == "surestep.errors.StepTimeoutError"
    assert cancelled == [True]


def test_gathered_async_steps_record_and_replay_in_call_order(app: App) -> None:
    order: list[str] = []
    crash = {"armed": True}

    def make(name: str):  # type: ignore[no-untyped-def]
        @app.step(name=name)
        async def step(x: int) -> str:
            await asyncio.sleep(random.random() / 100)
            order.append(name)
            return f"{name}{x}"

        return step

    a, b, c = make("a"), make("b"), make("c")

    @app.step(name="after")
    def after(parts: list[str]) -> str:
        if crash["armed"]:
            crash["armed"] = False
            raise _WorkerCrash("crash after the gather")
        return "+".join(parts)

    @app.workflow()
    async def fan_out() -> str:
        parts = await asyncio.gather(c(3), a(1), b(2))
        return after(list(parts))

    handle = run_workflow(app, fan_out)
    assert handle.result() == "c3+a1+b2"
    steps = app.get_run(handle.id).steps
    assert [(s.position, s.name) for s in steps] == [(0, "c"), (1, "a"), (2, "b"), (3, "after")]
    assert sorted(order) == ["a", "b", "c"]  # the replay after the crash ran none again


def test_a_changed_workflow_is_dead_lettered_and_retried_after_a_rollback(
    db_url: str, clock: FakeClock
) -> None:
    """Code v-a, then v-b under the same name: NonDeterminismError parks the run in
    dead_letter; with v-a restored, `retry` finishes it from its checkpoints."""
    calls: list[str] = []

    def version_a() -> App:
        app = App(db_url, clock=clock)

        @app.step(name="extract")
        def extract() -> str:
            calls.append("extract")
            return "text"

        @app.step(name="summarize")
        def summarize(text: str) -> str:
            calls.append("summarize")
            return text.upper()

        @app.workflow(name="doc")
        def doc() -> str:
            text = extract()
            surestep.wait_for_event("go")
            return summarize(text)

        return app

    old = version_a()
    handle = old.start("doc", run_id="d-1")
    drive(old, until=lambda: handle.state == State.WAITING)
    old.close()

    new = App(db_url, clock=clock)

    @new.step(name="classify")
    def classify() -> str:
        return "x"

    @new.workflow(name="doc")
    def doc_changed() -> str:
        return classify()

    new.send_event("d-1", "go")
    drive(new, until=lambda: new.get_run("d-1").state in SETTLED)
    run = new.get_run("d-1")
    assert run.state == State.DEAD_LETTER
    assert run.error is not None and run.error["type"].endswith(".NonDeterminismError")
    assert "'classify'" in run.error["message"] and "'extract'" in run.error["message"]
    assert "surestep retry" in run.error["message"]
    new.close()

    restored = version_a()
    restored.retry("d-1")
    drive(restored, until=lambda: restored.get_run("d-1").state in SETTLED)
    assert restored.handle("d-1").result() == "TEXT"
    assert calls == ["extract", "summarize"]  # extract replayed, not re-run
    restored.close()


def test_a_recorded_output_that_no_longer_decodes_is_dead_lettered_then_retried(
    db_url: str, clock: FakeClock
) -> None:
    def version(returns_model: bool) -> App:
        app = App(db_url, clock=clock)

        def extract_v1() -> str:
            return "INV-1"

        def extract_v2() -> Fields:
            return Fields(invoice_no="INV-2", total=1.0)

        # The same step name, its return annotation changed from str to Fields.
        extract = app.step(name="extract")(extract_v2 if returns_model else extract_v1)

        @app.workflow(name="invoice")
        def invoice() -> str:
            got = extract()
            surestep.wait_for_event("go")
            return str(got)

        return app

    old = version(returns_model=False)
    handle = old.start("invoice", run_id="i-1")
    drive(old, until=lambda: handle.state == State.WAITING)
    old.close()

    new = version(returns_model=True)
    new.send_event("i-1", "go")
    drive(new, until=lambda: new.get_run("i-1").state in SETTLED)
    run = new.get_run("i-1")
    assert run.state == State.DEAD_LETTER
    assert (
        run.error is not None
        and "no longer matches the return annotation" in (run.error["message"])
    )
    new.close()

    restored = version(returns_model=False)
    restored.retry("i-1")
    drive(restored, until=lambda: restored.get_run("i-1").state in SETTLED)
    assert restored.handle("i-1").result() == "INV-1"
    restored.close()


def test_stored_inputs_that_no_longer_decode_dead_letter_the_run_for_a_retry(
    db_url: str, clock: FakeClock
) -> None:
    def version(takes_fields: bool) -> App:
        app = App(db_url, clock=clock)

        def ingest_v1(doc: str) -> str:
            return doc

        def ingest_v2(doc: Fields) -> str:
            return doc.invoice_no

        app.workflow(name="ingest")(ingest_v2 if takes_fields else ingest_v1)
        return app

    old = version(takes_fields=False)
    old.start("ingest", "INV-9", run_id="in-1")  # started, then the code changes
    old.close()

    new = version(takes_fields=True)
    drive(new, until=lambda: new.get_run("in-1").state in SETTLED)
    run = new.get_run("in-1")
    assert run.state == State.DEAD_LETTER and run.error is not None
    assert "argument 'doc' of workflow 'ingest'" in run.error["message"]
    assert "no longer matches its annotation" in run.error["message"]
    new.close()

    restored = version(takes_fields=False)
    restored.retry("in-1")
    drive(restored, until=lambda: restored.get_run("in-1").state in SETTLED)
    assert restored.handle("in-1").result() == "INV-9"
    restored.close()


def test_idempotency_key_is_stable_across_retries(app: App) -> None:
    keys: list[str] = []

    @app.step(retry=Retry(max_attempts=3, initial_delay=1, jitter=False))
    def charge(order: str) -> str:
        keys.append(current_step().idempotency_key)
        if len(keys) < 3:
            raise ConnectionError("gateway 502")
        return "charged"

    @app.workflow()
    def order(order_id: str) -> str:
        return charge(order_id)

    run_workflow(app, order, "o-9", run_id="order-o-9")
    assert keys == ["order-o-9:0"] * 3


def test_starting_the_same_run_id_twice_runs_once(app: App) -> None:
    runs = []

    @app.step()
    def once() -> int:
        runs.append(1)
        return len(runs)

    @app.workflow()
    def wf(x: int) -> int:
        return once()

    first = app.start(wf, 1, run_id="same")
    second = app.start(wf, 1, run_id="same")
    assert first == second
    drive(app, until=lambda: first.state == State.SUCCESS)
    assert app.start(wf, 1, run_id="same").result() == 1
    assert runs == [1]


def test_a_step_called_outside_a_workflow_is_a_plain_call(app: App) -> None:
    @app.step()
    def double(x: int) -> int:
        return x * 2

    @app.step()
    async def triple(x: int) -> int:
        return x * 3

    assert double(4) == 8
    assert asyncio.run(triple(2)) == 6
    assert app.list_runs() == []


def test_cancelling_a_pending_run_is_immediate_and_recorded(app: App) -> None:
    @app.workflow()
    def wf() -> None: ...

    handle = app.start(wf)
    app.cancel(handle.id, reason="duplicate upload", actor="alice")
    run = app.get_run(handle.id)
    assert run.state == State.CANCELLED
    last = run.events[-1]
    assert (last.from_state, last.to_state, last.actor, last.reason) == (
        State.PENDING,
        State.CANCELLED,
        "alice",
        "duplicate upload",
    )


def test_cancelling_a_running_run_stops_it_at_the_next_step_boundary(db_url: str) -> None:
    app = App(db_url)
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    @app.step()
    def first() -> str:
        entered.set()
        release.wait(10)
        ran.append("first")
        return "first"

    @app.step()
    def second() -> str:
        ran.append("second")
        return "second"

    @app.workflow()
    def wf() -> str:
        return first() + second()

    handle = app.start(wf)
    driver = threading.Thread(
        target=drive, args=(app, lambda: handle.state in (State.CANCELLED, State.SUCCESS))
    )
    driver.start()
    assert entered.wait(10)
    app.cancel(handle.id, reason="user asked")
    release.set()
    driver.join(10)
    time.sleep(0.05)
    assert ran == ["first"]
    run = app.get_run(handle.id)
    assert run.state == State.CANCELLED
    assert run.steps == ()  # the result of the step in flight was discarded
    app.close()


class Fields(BaseModel):
    invoice_no: str
    total: float


class Report(BaseModel):
    title: str
    pages: int


def test_async_workflows_with_pydantic_outputs_round_trip(app: App) -> None:
    @app.step()
    async def build(title: str) -> Report:
        return Report(title=title, pages=3)

    @app.workflow()
    async def report(title: str) -> Report:
        made = await build(title)
        assert isinstance(made, Report)  # the decoded checkpoint, also on first run
        return made

    handle = run_workflow(app, report, "Q3")
    assert handle.result() == Report(title="Q3", pages=3)


def test_an_unserialisable_step_output_dead_letters_with_a_clear_error(app: App) -> None:
    @app.step(name="leaky")
    def leaky() -> object:
        return threading.Lock()

    @app.workflow()
    def wf() -> None:
        leaky()

    handle = run_workflow(app, wf)
    assert handle.state == State.DEAD_LETTER
    (step,) = app.get_run(handle.id).steps
    assert step.error is not None
    assert "output of step 'leaky'" in step.error["message"]
    assert "lock" in step.error["message"]


def test_a_failing_hook_is_logged_and_does_not_fail_the_run(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    @app.hook("after_step")
    def broken(*args: object) -> None:
        raise RuntimeError("metrics exporter is down")

    @app.step()
    def s() -> int:
        return 1

    @app.workflow()
    def wf() -> int:
        return s()

    assert run_workflow(app, wf).result() == 1
    assert "metrics exporter is down" in caplog.text


def test_a_workflow_that_swallows_the_halt_still_waits(app: App) -> None:
    @app.step(retry=Retry(max_attempts=2, initial_delay=5, jitter=False), on_exhausted="fail")
    def flaky() -> None:
        raise ConnectionError("x")

    @app.workflow()
    def sloppy() -> str:
        try:
            flaky()
        except BaseException:
            return "swallowed"
        return "no"

    handle = app.start(sloppy)
    drive(app, until=lambda: handle.state == State.WAITING)
    assert app.get_run(handle.id).output is None


def test_a_full_disk_hands_the_run_back_instead_of_failing_it(app: App, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite only: its max_page_count makes a real 'database or disk is full'")
    calls = {"small": 0, "big": 0}

    @app.step()
    def small() -> str:
        calls["small"] += 1
        return "ok"

    @app.step()
    def big() -> str:
        calls["big"] += 1
        return "x" * 400_000

    @app.workflow()
    def wf() -> int:
        return len(small() + big())

    handle = app.start(wf)
    conn = app.store._conn  # type: ignore[attr-defined]  # a real SQLITE_FULL, not a mock
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 20}")
    drive(
        app,
        until=lambda: any(
            e.reason and "storage error" in e.reason for e in app.get_run(handle.id).events
        ),
    )
    run = app.get_run(handle.id)
    assert run.state == State.PENDING and run.lease_owner is None
    assert [s.state for s in run.steps] == [State.SUCCESS]  # the checkpoint before stands

    conn.execute("PRAGMA max_page_count = 1073741823")
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == 400_002
    assert calls == {"small": 1, "big": 2}


def test_a_step_that_keeps_crashing_its_worker_is_dead_lettered(app: App) -> None:
    calls = {"ok": 0, "poison": 0}

    @app.step()
    def fine() -> int:
        calls["ok"] += 1
        return 1

    @app.step()
    def poison() -> int:
        calls["poison"] += 1
        raise _WorkerCrash("the process dies here every time")

    @app.workflow()
    def wf() -> int:
        return fine() + poison()

    handle = app.start(wf)
    limit = 3
    ends: list[tuple[str, State, State, str]] = []
    app.hook("on_run_state")(lambda *change: ends.append(change))

    async def drive_with_limit() -> None:
        worker = app.worker(concurrency=1, poll_interval=0.01, max_recoveries=limit)
        await worker.run_async(until=lambda: handle.state == State.DEAD_LETTER)

    asyncio.run(drive_with_limit())
    run = app.get_run(handle.id)
    assert calls == {"ok": 1, "poison": limit}
    assert run.error is not None and run.error["type"] == "RecoveryLimit"
    assert "3 times in a row without progress" in run.error["message"]
    # The hooks (metrics, logs) hear of it like of any end.
    assert ends[-1] == (handle.id, State.RUNNING, State.DEAD_LETTER, "wf")
    # an operator fixes the cause and redrives it: the count starts afresh
    app.retry(handle.id)
    assert app.get_run(handle.id).state == State.PENDING


def test_shutdown_stops_runs_at_the_next_step_boundary_and_releases_them(db_url: str) -> None:
    app = App(db_url)
    started = threading.Event()

    @app.step()
    def tick(i: int) -> int:
        started.set()
        time.sleep(0.02)
        return i

    @app.workflow()
    def long_job(n: int) -> int:
        return sum(tick(i) for i in range(n))

    handle = app.start(long_job, 200)
    worker = app.worker(concurrency=2, grace_period=10)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    thread.start()
    assert started.wait(10)
    time.sleep(0.1)
    worker.stop()
    thread.join(10)
    run = app.get_run(handle.id)
    assert run.state == State.PENDING and run.lease_owner is None
    assert 0 < len(run.steps) < 200  # stopped at a boundary, long before the end
    assert all(s.state == State.SUCCESS for s in run.steps)
    assert run.events[-1].reason == "worker shutting down"
    # another worker resumes where it stopped
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == sum(range(200))
    app.close()


def test_a_worker_with_every_slot_busy_still_applies_deadlines(db_url: str) -> None:
    import threading
    from datetime import timedelta

    app = App(db_url)  # the real clock: the busy step really holds the slot
    release = threading.Event()

    @app.step()
    def hold() -> None:
        release.wait(30)

    @app.workflow(name="busy")
    def busy() -> None:
        hold()

    @app.workflow(name="queued")
    def queued() -> None: ...

    try:
        held = app.start("busy")
        late = app.start("queued", deadline=timedelta(seconds=0.5), on_deadline="cancel")
        worker = app.worker(concurrency=1, poll_interval=0.05)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while late.state != State.CANCELLED:
                assert time.monotonic() < deadline, "the deadline was not applied"
                time.sleep(0.05)
            assert held.state == State.RUNNING  # the one slot was busy all along
        finally:
            release.set()
            worker.stop()
            thread.join(30)
    finally:
        app.close()
