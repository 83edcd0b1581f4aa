"""Executes one run of a workflow: the engine's per-step path (how the execution
begins and ends is :mod:`surestep.engine.lifecycle`).

A run is executed by calling its workflow function. Each step call takes the next
position; a position with a recorded success returns the recorded output without
calling the step, and the first unrecorded position runs an attempt whose outcome is
committed (one transaction) before the workflow moves on. A retry wait, a dead letter
or a lost lease unwinds the workflow with ``Halt`` and the run is settled from the
``Verdict``; otherwise the workflow's return value or exception settles it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from surestep.clock import Clock
from surestep.engine.context import CURRENT_STEP, ActiveRun, StepContext
from surestep.engine.halts import STORAGE_RETRY_SECONDS, Halt, Verdict, error_info
from surestep.engine.steps import await_with_timeout, call_with_timeout
from surestep.errors import (
    Cancelled,
    CorruptRecordError,
    LeaseLostError,
    NonDeterminismError,
    OutputValidationError,
    SerializationError,
    StepError,
    StorageError,
    SurestepError,
)
from surestep.hooks import Hooks
from surestep.registry import StepDef, WorkflowDef
from surestep.retry import Escalate, GiveUp, RetryAfter
from surestep.serialization import dumps
from surestep.states import State
from surestep.storage import ClaimedRun, RecordedStep, StepOutcome, Store

log = logging.getLogger("surestep.runtime")

#: What user code (a step, a workflow body) may raise that fails *it*, not the worker.
#: SystemExit and KeyboardInterrupt are included: a library calling ``sys.exit()`` (a CLI
#: framework, argparse) or a stray ``raise KeyboardInterrupt`` in a step is that attempt's
#: error, named, and goes through the step's retry policy; the default ``retry_on=
#: (Exception,)`` gives up on them at once. (A real Ctrl-C never lands in a step: the
#: worker handles SIGINT itself.) The engine's own BaseExceptions (Halt, Cancelled,
#: asyncio.CancelledError) are not caught.
USER_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


@dataclass(frozen=True, slots=True)
class _Attempt:
    number: int
    from_state: State
    retry_base: int


class RunExecution:
    """One execution of one claimed run, by one worker; it implements the
    :class:`~surestep.engine.context.ActiveRun` seam that steps and waits stand on."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        hooks: Hooks,
        worker: str,
        claimed: ClaimedRun,
        workflow: WorkflowDef,
        recorded: dict[int, RecordedStep],
        loop: asyncio.AbstractEventLoop | None,
        draining: threading.Event | None = None,
        steps: Callable[[str], StepDef] | None = None,
        exhausted: Mapping[str, ExhaustedHandler] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.hooks = hooks
        self.worker = worker
        self.run_id = claimed.id
        self.token = claimed.token
        self.claimed = claimed
        self.workflow = workflow
        self.recorded = recorded
        self.loop = loop
        self.draining = draining or threading.Event()
        self.steps = steps
        self.exhausted = exhausted or {}
        self.parent_id = claimed.parent_id
        # Set while undoing completed steps: the state the run ends in afterwards.
        self.compensating = State(claimed.compensating) if claimed.compensating else None
        self.compensable = {
            position: step
            for position, step in recorded.items()
            if position >= 0 and step.state == State.SUCCESS and step.compensation
        }
        self.verdict: Verdict | None = None
        self._next_position = 0
        self._verdict_lock = threading.Lock()
        self.inflight: set[asyncio.Task[Any]] = set()
        self.main_task: asyncio.Task[Any] | None = None

    # -- entry points for step wrappers ------------------------------------------------

    def next_position(self) -> int:
        # Taken when the step is *called*, in the workflow's own order, never when a
        # task happens to be scheduled: gather(a(), b()) gives a then b every time.
        position = self._next_position
        self._next_position += 1
        return position

    def upcoming_position(self) -> int:
        return self._next_position

    def run_step(self, step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A step called from a workflow, synchronously."""
        return self.run_step_at(step, self.next_position(), args, kwargs)

    def run_step_at(
        self, step: StepDef, position: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if step.is_async:
            if self.loop is None:
                raise RuntimeError("an async step needs the worker's event loop")
            future = asyncio.run_coroutine_threadsafe(
                self.run_step_async(step, position, args, kwargs), self.loop
            )
            return future.result()
        prepared = self._prepare(step, position, args, kwargs)
        if isinstance(prepared, _Replayed):
            return prepared.value
        token = CURRENT_STEP.set(prepared.context)
        try:
            if step.timeout is None:
                result = step.fn(*prepared.args, **prepared.kwargs)
            else:
                result = call_with_timeout(step, prepared.args, prepared.kwargs)
        except USER_ERRORS as exc:
            return self._conclude(step, prepared, None, exc)
        finally:
            CURRENT_STEP.reset(token)
        return self._conclude(step, prepared, result, None)

    async def run_step_async(
        self, step: StepDef, position: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A step called from a workflow, as a coroutine (``async def`` steps)."""
        task = asyncio.current_task()
        tracked = task is not None and task is not self.main_task
        if tracked:
            self.inflight.add(task)  # type: ignore[arg-type]
        try:
            prepared = self._prepare(step, position, args, kwargs)
            if isinstance(prepared, _Replayed):
                return prepared.value
            token = CURRENT_STEP.set(prepared.context)
            try:
                if step.timeout is None:
                    result = await step.fn(*prepared.args, **prepared.kwargs)
                else:
                    result = await await_with_timeout(step, prepared.args, prepared.kwargs)
            except USER_ERRORS as exc:
                return self._conclude(step, prepared, None, exc)
            finally:
                CURRENT_STEP.reset(token)
            return self._conclude(step, prepared, result, None)
        finally:
            if tracked:
                self.inflight.discard(task)

    # -- the per-step path -------------------------------------------------------------

    def expect(self, position: int, name: str, *, joinable: bool = False) -> RecordedStep | None:
        """What is recorded at ``position``, checking it is ``name`` (a step or a wait).

        A different name means the code changed under an in-flight run: the run is
        dead-lettered with a ``NonDeterminismError`` instead of feeding one step's output
        to another, so that once the code is rolled back it can be retried.

        Once the run is halting nothing more runs, except that a ``joinable`` position
        (a review gathered with another) still opens while the run halts to wait: the
        run then waits for all of them at once.
        """
        verdict = self.verdict
        if verdict is not None and not (joinable and verdict.state in _JOINED):
            raise Halt
        recorded = self.recorded.get(position)
        if recorded is not None and recorded.name != name:
            error = NonDeterminismError(
                f"run {self.run_id!r}: at position {position} the workflow "
                f"{self.workflow.name!r} now calls {name!r}, but the recorded history has "
                f"{recorded.name!r} there. The code changed while the run was in flight; "
                f"restore the code it ran with and `surestep retry` it, and register the "
                f"new code as a new workflow version"
            )
            self.code_changed(error)
        return recorded

    def _begin(self, step: StepDef, position: int, call: _Call) -> _Attempt | _Replayed:
        recorded = self.expect(position, step.name)
        if self.draining.is_set() and (recorded is None or recorded.state != State.SUCCESS):
            # The worker is shutting down: stop at this step boundary, keep every
            # checkpoint, and hand the run back to be resumed here by another worker.
            self.halt(Verdict(State.PENDING, "worker shutting down", self.clock.now()))
        if recorded is None:
            return _Attempt(1, State.PENDING, 0)
        if recorded.state == State.SUCCESS:
            where = f"recorded output of step {step.name!r} in run {self.run_id!r}"
            try:
                return _Replayed(step.codec.decode_result(recorded.output, where))
            except SerializationError as exc:
                self.code_changed(exc)
        if recorded.state == State.FAILED:
            info = _loads(recorded.error)
            raise StepError(step.name, info.get("type", "Error"), info.get("message", ""))
        if recorded.state == State.DEAD_LETTER:
            self.halt(Verdict(State.DEAD_LETTER, f"step {step.name!r} is dead-lettered"))
        if recorded.state == State.NEEDS_REVIEW:
            self._to_review(step, position, call)
        due = self._due(recorded)
        if due is not None:
            self.halt(Verdict(State.WAITING, f"retry of step {step.name!r}", due))
        return _Attempt(recorded.attempts + 1, recorded.state, recorded.retry_base)

    def _prepare(
        self, step: StepDef, position: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Prepared | _Replayed:
        """Replay the step, or get its next attempt ready to run."""
        attempt = self._begin(step, position, (args, kwargs))
        if not isinstance(attempt, _Attempt):
            return attempt
        edited = self.recorded.get(position)
        if edited is not None and edited.review_inputs is not None:
            # A reviewer asked for this attempt with arguments of their own.
            where = f"arguments a reviewer gave step {step.name!r} in run {self.run_id!r}"
            args, kwargs = step.codec.decode_args(edited.review_inputs, where)
        context = StepContext(self.run_id, position, step.name, attempt.number, self.workflow.name)
        if self.hooks.before_step:
            Hooks.emit(self.hooks.before_step, context)
        started = self.clock.now()
        # A step with a compensation keeps its arguments, to call the compensation with
        # them if the run fails or is cancelled later: they are checked before the step
        # acts, so no side effect happens that could not be undone.
        inputs = None
        if step.compensate is not None:
            try:
                inputs = step.codec.encode_args(args, kwargs, f"step {step.name!r}")
            except SerializationError as exc:  # the workflow's bug: retrying cannot help
                self._failed(
                    step,
                    context,
                    attempt,
                    started,
                    exc,
                    "its arguments cannot be kept",
                    call=(args, kwargs),
                )
        return _Prepared(attempt, context, started, inputs, args, kwargs)

    def _conclude(
        self, step: StepDef, prepared: _Prepared, result: Any, error: BaseException | None
    ) -> Any:
        """Checkpoint the attempt's outcome; return the decoded result or raise/halt."""
        if error is not None:
            return self._failed(
                step,
                prepared.context,
                prepared.attempt,
                prepared.started,
                error,
                call=(prepared.args, prepared.kwargs),
            )
        return self._succeeded(step, prepared, result)

    def _succeeded(self, step: StepDef, prepared: _Prepared, result: Any) -> Any:
        context, attempt, started = prepared.context, prepared.attempt, prepared.started
        where = f"output of step {step.name!r} in run {self.run_id!r}"
        inputs = prepared.inputs
        try:
            text, decoded = step.codec.store_result(result, where)
        except OutputValidationError as exc:
            # A value of the wrong shape (a model's output, often) may be right on the
            # next attempt: it is a failed attempt like any other.
            return self._failed(
                step, context, attempt, started, exc, call=(prepared.args, prepared.kwargs)
            )
        except SerializationError as exc:
            # A code bug, not a flaky dependency: retrying cannot help, so it escalates
            # (dead letter by default) and can be redriven once the code is fixed.
            return self._failed(
                step,
                context,
                attempt,
                started,
                exc,
                "the output cannot be stored",
                call=(prepared.args, prepared.kwargs),
            )
        outcome = StepOutcome(
            context.position,
            step.name,
            attempt.from_state,
            State.SUCCESS,
            attempt.number,
            started,
            self.clock.now(),
            output=text,
            compensation=None if step.compensate is None else step.compensate.name,
            inputs=inputs,
        )
        self._record(context, outcome)
        if step.compensate is not None:
            self.compensable[context.position] = RecordedStep(
                step.name,
                State.SUCCESS,
                text,
                None,
                attempt.number,
                0,
                None,
                step.compensate.name,
                inputs,
            )
        return decoded  # the stored form, as a replay will see it

    def _failed(
        self,
        step: StepDef,
        context: StepContext,
        attempt: _Attempt,
        started: float,
        exc: BaseException,
        escalate: str | None = None,
        call: _Call = ((), {}),
    ) -> Any:
        now = self.clock.now()
        if escalate is not None:  # a code bug: no retry, straight to on_exhausted
            decision: RetryAfter | GiveUp | Escalate = Escalate(escalate)
        else:
            decision = step.retry.decide(attempt.number - attempt.retry_base, exc)
        if self.compensating is not None and isinstance(decision, GiveUp):
            # An undo that gives up must not be lost: it parks like an exhausted one.
            decision = Escalate(decision.reason)
        info = error_info(exc)
        error = dumps(info, "error")
        outcome = StepOutcome(
            context.position,
            step.name,
            attempt.from_state,
            State.FAILED,
            attempt.number,
            started,
            now,
            error=error,
        )
        summary = f"{info['type']}: {info['message']}"
        if isinstance(decision, RetryAfter):
            wake = now + decision.delay
            self._record(
                context,
                replace(
                    outcome,
                    to_state=State.WAITING,
                    next_attempt_at=wake,
                    reason=f"{summary}; attempt {attempt.number + 1} in {decision.delay:.2f}s",
                ),
            )
            if self.hooks.on_retry:
                Hooks.emit(self.hooks.on_retry, context, exc, decision.delay)
            self.halt(Verdict(State.WAITING, f"retry of step {step.name!r}", wake))
        review = step.on_exhausted in self.exhausted and self.compensating is None
        if isinstance(decision, Escalate) and review:
            reason = f"{summary}; {decision.reason}, review requested"
            self._record(context, replace(outcome, to_state=State.NEEDS_REVIEW, reason=reason))
            self._to_review(step, context.position, call)
        dead_letter = step.on_exhausted == "dead_letter" or self.compensating is not None
        if isinstance(decision, Escalate) and dead_letter:
            reason = f"{summary}; {decision.reason}, dead-lettered"
            self._record(context, replace(outcome, to_state=State.DEAD_LETTER, reason=reason))
            self.halt(Verdict(State.DEAD_LETTER, f"step {step.name!r}: {reason}", error=info))
        self._record(context, replace(outcome, reason=f"{summary}; {decision.reason}"))
        raise StepError(step.name, info["type"], info["message"]) from exc

    def _to_review(self, step: StepDef, position: int, call: _Call) -> NoReturn:
        handler = self.exhausted.get(step.on_exhausted)
        if handler is None:
            raise RuntimeError(
                f"step {step.name!r}: nothing handles on_exhausted={step.on_exhausted!r}"
            )
        handler(self, step, position, call)

    def _record(self, context: StepContext, outcome: StepOutcome) -> None:
        with self.guarded():
            self.store.record_step(self.run_id, self.token, self.worker, outcome)
        if self.hooks.after_step:
            Hooks.emit(
                self.hooks.after_step,
                context,
                outcome.to_state,
                outcome.finished_at - outcome.started_at,
            )

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """Around a write fenced by this run's lease token."""
        try:
            yield
        except LeaseLostError as exc:
            self.lost(exc)
        except StorageError as exc:
            self.storage_trouble(exc)
        except CorruptRecordError as exc:  # e.g. an unreadable event payload: quarantine
            self.halt(Verdict(State.DEAD_LETTER, exc.reason, error=error_info(exc)))

    def lost(self, exc: LeaseLostError) -> NoReturn:
        """This worker no longer holds the run: stop writing. If it was cancelled, the
        workflow sees ``Cancelled`` (a BaseException) rather than an internal halt."""
        with self._verdict_lock:
            self.verdict = Verdict(None, str(exc))
        found = self.store.run_state(self.run_id)
        if found is not None and (
            found[0] == State.CANCELLED or (found[2] or "").find('"Cancelled"') >= 0
        ):
            raise Cancelled(f"run {self.run_id!r} was cancelled")
        raise Halt

    def code_changed(self, exc: SurestepError) -> NoReturn:
        # The history no longer fits the code (a step renamed, an annotation changed):
        # park the run, untouched, for an operator to retry once the code is restored.
        self.halt(Verdict(State.DEAD_LETTER, str(exc), error=error_info(exc)))

    def storage_trouble(self, exc: StorageError) -> NoReturn:
        # The database is in trouble, not the workflow: hand the run back to be resumed
        # from its last checkpoint, rather than failing it for good.
        self.halt(
            Verdict(
                State.PENDING,
                f"storage error, will resume: {exc}",
                self.clock.now() + STORAGE_RETRY_SECONDS,
            )
        )

    def halt(self, verdict: Verdict) -> NoReturn:
        with self._verdict_lock:
            current = self.verdict
            if current is None or verdict.outranks(current):
                self.verdict = verdict
            elif current.state == verdict.state and current.state in _JOINED:
                self.verdict = current.joined(verdict)
        raise Halt

    def _due(self, recorded: RecordedStep) -> float | None:
        """The time a waiting step's next attempt is due, if that is still ahead."""
        if recorded.state != State.WAITING:
            return None
        due = recorded.next_attempt_at
        return due if due is not None and due > self.clock.now() else None


#: Verdicts that gathered waits combine (wake on the earliest, or on either's event).
_JOINED = (State.WAITING, State.NEEDS_REVIEW)

#: A step call's arguments.
_Call = tuple[tuple[Any, ...], dict[str, Any]]

#: Opens the review of a step that exhausted its retries (``on_exhausted="review"``)
#: and halts the run; given by the review layer, so the engine does not import it.
ExhaustedHandler = Callable[[ActiveRun, StepDef, int, _Call], NoReturn]


@dataclass(frozen=True, slots=True)
class _Replayed:
    value: Any


@dataclass(frozen=True, slots=True)
class _Prepared:
    attempt: _Attempt
    context: StepContext
    started: float
    inputs: str | None  # the encoded arguments of a step with a compensation
    args: tuple[Any, ...]  # what the attempt is called with (a reviewer may edit them)
    kwargs: dict[str, Any]


def _loads(text: str | None) -> dict[str, Any]:
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}
