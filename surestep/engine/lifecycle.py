"""How a run's execution begins and ends: the workflow function is called (or, for a
run undoing its steps, its compensations), and the run is settled from the ``Verdict``
its halt left, or from what the workflow returned or raised.

The per-step path in between is :mod:`surestep.engine.runtime`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from surestep.engine.context import CURRENT_RUN
from surestep.engine.halts import Halt, Verdict, error_info
from surestep.engine.runtime import USER_ERRORS, RunExecution
from surestep.errors import Cancelled, CorruptRecordError, LeaseLostError, SerializationError
from surestep.hooks import Hooks
from surestep.registry import StepDef
from surestep.serialization import dumps
from surestep.states import State
from surestep.storage import RecordedStep

log = logging.getLogger("surestep.runtime")


def execute_sync(run: RunExecution) -> None:
    """Run a plain (def) workflow to its end or its halt; called in a worker thread.

    A run that is undoing its steps (it failed or was cancelled before) goes straight
    to its compensations: the workflow function is not called again.
    """
    if run.compensating is not None:
        compensate(run)
        return
    token = CURRENT_RUN.set(run)
    try:
        try:
            args, kwargs = _inputs(run)
            value = run.workflow.fn(*args, **kwargs)
        except (Halt, Cancelled):
            undo = _settle(run, None, None)
        except USER_ERRORS as exc:
            undo = _settle(run, None, exc)
        else:
            undo = _settle(run, value, None)
    finally:
        CURRENT_RUN.reset(token)
    if undo:
        compensate(run)


async def execute_async(run: RunExecution) -> None:
    """Run an ``async def`` workflow to its end or its halt."""
    token = CURRENT_RUN.set(run)
    run.main_task = asyncio.current_task()
    try:
        value: Any = None
        raised: BaseException | None = None
        try:
            args, kwargs = _inputs(run)
            value = await run.workflow.fn(*args, **kwargs)
        except (Halt, Cancelled):
            pass
        except USER_ERRORS as exc:
            raised = exc
        # Steps still running concurrently (gather after a sibling halted, or tasks
        # the workflow did not await) get to record their outcome before we settle.
        while run.inflight:
            await asyncio.wait(list(run.inflight))
        undo = _settle(run, value, raised)
    finally:
        CURRENT_RUN.reset(token)
    if undo:
        # Compensations may be plain functions: run them off the event loop.
        await asyncio.to_thread(compensate, run)


def compensate(run: RunExecution) -> None:
    """Undo the run's completed steps in reverse order, each compensation a
    checkpointed step of its own (at position ``-(p + 1)`` for step ``p``), then end
    the run in the state it was headed for (failed or cancelled)."""
    assert run.compensating is not None
    log.info(
        "run %s: undoing %d completed step(s), then %s",
        run.run_id,
        len(run.compensable),
        run.compensating,
        extra={"run_id": run.run_id, "workflow": run.workflow.name, "worker": run.worker},
    )
    token = CURRENT_RUN.set(run)
    try:
        try:
            for position in sorted(run.compensable, reverse=True):
                recorded = run.compensable[position]
                step = _compensation(run, recorded)
                where = f"compensation of step {recorded.name!r} in run {run.run_id!r}"
                args, kwargs = step.codec.decode_args(recorded.inputs or "{}", where)
                run.run_step_at(step, -(position + 1), args, kwargs)
        except (Halt, Cancelled):
            _settle(run, None, None)
            return
        except Exception as exc:  # a compensation that cannot even be called
            info = error_info(exc)
            run.verdict = Verdict(State.DEAD_LETTER, info["message"], error=info)
            _settle(run, None, None)
            return
        _finish(
            run,
            run.compensating,
            error=run.store.compensation_outcome(run.run_id),
            reason=f"undid {len(run.compensable)} completed step(s)",
        )
    finally:
        CURRENT_RUN.reset(token)


def _compensation(run: RunExecution, recorded: RecordedStep) -> StepDef:
    if run.steps is None or recorded.compensation is None:
        raise RuntimeError("compensation needs the App's step registry")
    return run.steps(recorded.compensation)


def _inputs(run: RunExecution) -> tuple[tuple[Any, ...], dict[str, Any]]:
    where = f"workflow {run.workflow.name!r} (run {run.run_id!r})"
    try:
        return run.workflow.codec.decode_args(run.claimed.inputs, where)
    except SerializationError as exc:
        run.code_changed(exc)


def _settle(run: RunExecution, value: Any, raised: BaseException | None) -> bool:
    """End this execution of the run; return True if it must now undo its steps."""
    verdict = run.verdict
    output = error = None
    available_at: float | None = None
    waiting_for: tuple[str, ...] = ()
    if verdict is not None:
        if verdict.state is None:
            log.info("run %s: %s; stopping without writing", run.run_id, verdict.reason)
            return False
        to_state, reason, available_at = verdict.state, verdict.reason, verdict.available_at
        waiting_for = verdict.waiting_for
        error = None if verdict.error is None else dumps(verdict.error, "error")
    elif isinstance(raised, CorruptRecordError):
        # A record of the run cannot be read: quarantine it for repair and retry.
        to_state, reason = State.DEAD_LETTER, raised.reason
        error = dumps(error_info(raised), "error")
    elif raised is not None:
        info = error_info(raised)
        to_state, reason = State.FAILED, f"{info['type']}: {info['message']}"
        error = dumps(info, "error")
    else:
        to_state, reason = State.SUCCESS, "workflow returned"
        try:
            where = f"output of workflow {run.workflow.name!r}"
            output = run.workflow.codec.encode_result(value, where)
        except SerializationError as exc:
            to_state, reason = State.FAILED, str(exc)
            error = dumps(error_info(exc), "error")
    if to_state == State.FAILED and run.compensable and run.compensating is None:
        try:
            run.store.begin_compensation(run.run_id, run.token, State.FAILED, error)
        except LeaseLostError as exc:
            log.info("run %s: %s; its outcome is discarded", run.run_id, exc)
            return False
        run.compensating = State.FAILED
        return True
    _finish(
        run,
        to_state,
        output=output,
        error=error,
        available_at=available_at,
        reason=reason,
        waiting_for=waiting_for,
    )
    return False


def _finish(
    run: RunExecution,
    to_state: State,
    *,
    output: str | None = None,
    error: str | None = None,
    available_at: float | None = None,
    reason: str | None = None,
    waiting_for: tuple[str, ...] = (),
) -> None:
    try:
        run.store.finish(
            run.run_id,
            run.token,
            run.worker,
            to_state,
            run.clock.now(),
            output=output,
            error=error,
            available_at=available_at,
            reason=reason,
            waiting_for=waiting_for,
            parent_id=run.parent_id,
        )
    except LeaseLostError as exc:
        log.info("run %s: %s; its outcome is discarded", run.run_id, exc)
        return
    if run.hooks.on_run_state:
        Hooks.emit(run.hooks.on_run_state, run.run_id, State.RUNNING, to_state, run.workflow.name)
