"""Durable waits inside a workflow: sleep, events and child runs.

Each wait takes the next position, like a step call, so it replays in order and a
changed workflow is caught. While a run waits it is released (state ``waiting``): it
holds no worker slot, thread or memory, and survives any restart. It becomes claimable
again when its time comes, when an event it waits for is sent, or when its child ends.

>>> @app.workflow()                                                   # doctest: +SKIP
... def onboarding(user_id: str) -> str:
...     send_welcome(user_id)
...     surestep.sleep(timedelta(days=3))
...     reply = surestep.wait_for_event("survey_answered", timeout=timedelta(days=7))
...     return "answered" if reply else "no answer"
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from surestep.engine.context import ActiveRun, workflow_run
from surestep.engine.halts import Verdict
from surestep.errors import (
    EventTimeoutError,
    SerializationError,
    StepError,
    SurestepError,
    UnknownWorkflowError,
)
from surestep.serialization import dumps
from surestep.states import State

if TYPE_CHECKING:
    from surestep.registry import WorkflowDef

SLEEP = "surestep.sleep"
T = TypeVar("T")


def _sleep_at(run: ActiveRun, position: int, seconds: float) -> None:
    recorded = run.expect(position, SLEEP)
    now = run.clock.now()
    if recorded is None:
        wake = now + seconds
        _write(run, position, SLEEP, until=wake, reason=f"sleeping for {seconds:g}s")
        run.halt(Verdict(State.WAITING, f"sleeping for {seconds:g}s", wake))
    if recorded.state == State.SUCCESS:
        return
    wake = now if recorded.next_attempt_at is None else recorded.next_attempt_at
    if now < wake:
        run.halt(Verdict(State.WAITING, "sleeping", wake))
    _write(run, position, SLEEP, resolve="null")


def _wait_events_at(
    run: ActiveRun,
    position: int,
    names: Sequence[str],
    timeout: float | None,
    raise_on_timeout: bool,
) -> tuple[str, Any] | None:
    name = "event:" + ",".join(names)
    recorded = run.expect(position, name)
    timed_out_message = f"no event {' or '.join(map(repr, names))} arrived in time"
    if recorded is not None and recorded.state == State.SUCCESS:
        return _message(recorded.output)
    if recorded is not None and recorded.state == State.FAILED:
        raise EventTimeoutError(timed_out_message)
    now = run.clock.now()
    if recorded is not None:
        deadline = recorded.next_attempt_at
    else:
        deadline = None if timeout is None else now + timeout
    resolve = fail = None
    if deadline is not None and now >= deadline:
        if raise_on_timeout:
            fail = dumps(
                {"type": "surestep.errors.EventTimeoutError", "message": timed_out_message},
                "error",
            )
        else:
            resolve = "null"
    settled, output = _write(
        run,
        position,
        name,
        until=deadline,
        events=names,
        resolve=resolve,
        fail=fail,
        reason=f"waiting for {' or '.join(names)}",
    )
    if settled:
        if output is None:
            raise EventTimeoutError(timed_out_message)
        return _message(output)
    run.halt(
        Verdict(
            State.WAITING,
            f"waiting for {' or '.join(names)}",
            deadline,
            waiting_for=tuple(f"event:{n}" for n in names),
        )
    )


def _child_at(
    run: ActiveRun,
    position: int,
    workflow: WorkflowDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    name = f"child:{workflow.name}"
    # Joinable: gathered children all start in this execution, not one per replay.
    recorded = run.expect(position, name, joinable=True)
    child_id = f"{run.run_id}:{position}"
    where = f"child run {child_id!r} of workflow {workflow.name!r}"
    waiting = Verdict(
        State.WAITING,
        f"waiting for child run {child_id}",
        None,
        waiting_for=(f"child:{child_id}",),
    )
    if recorded is None:
        inputs = workflow.codec.encode_args(args, kwargs, where)
        with run.guarded():
            run.store.start_child(
                run.run_id,
                run.token,
                run.worker,
                position,
                name,
                child_id,
                workflow.name,
                workflow.version,
                inputs,
                run.clock.now(),
                workflow.placement(args, kwargs),
            )
        run.halt(waiting)
    if recorded.state == State.SUCCESS:
        return _decoded(run, workflow, recorded.output, where)
    if recorded.state == State.FAILED:
        raise _child_error(name, recorded.error)
    found = run.store.run_state(child_id)
    if found is not None and found[0] == State.SUCCESS:
        _write(run, position, name, resolve=found[1] or "null")
        return _decoded(run, workflow, found[1], where)
    if found is None or found[0] in (State.FAILED, State.CANCELLED):
        error = (found[2] if found is not None else None) or json.dumps(
            {"type": "ChildRunLost", "message": f"{where} does not exist"}
        )
        _write(run, position, name, fail=error)
        raise _child_error(name, error)
    run.halt(waiting)


def _decoded(run: ActiveRun, workflow: WorkflowDef, output: str | None, where: str) -> Any:
    try:
        return workflow.codec.decode_result(output, where)
    except SerializationError as exc:  # the child's code changed: park, to retry
        run.code_changed(exc)


def _write(
    run: ActiveRun,
    position: int,
    name: str,
    *,
    until: float | None = None,
    events: Sequence[str] = (),
    resolve: str | None = None,
    fail: str | None = None,
    reason: str | None = None,
) -> tuple[bool, str | None]:
    """Record a wait's state at ``position`` under the run's lease."""
    with run.guarded():
        return run.store.wait_step(
            run.run_id,
            run.token,
            run.worker,
            position,
            name,
            run.clock.now(),
            until=until,
            events=events,
            resolve=resolve,
            fail=fail,
            reason=reason,
        )


def _message(output: str | None) -> tuple[str, Any] | None:
    value = json.loads(output) if output else None
    return None if value is None else (value["event"], value["payload"])


def _child_error(name: str, error: str | None) -> StepError:
    info = json.loads(error) if error else {}
    return StepError(name, info.get("type", "ChildRunFailed"), info.get("message", ""))


# -- the public functions -----------------------------------------------------------------


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise SurestepError(f"a duration must not be negative, got {value!r}")
    return seconds


async def _now(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


def sleep(duration: timedelta | float) -> None:
    """Sleep durably inside a workflow (outside one: ``time.sleep``).

    The run goes to ``waiting`` and is released; it wakes within ~0.1 s of the deadline
    when a worker is idle, after any restart, however far away the deadline is.
    """
    seconds = _seconds(duration) or 0.0
    run = workflow_run()
    if run is None:
        time.sleep(seconds)
        return
    _sleep_at(run, run.next_position(), seconds)


def sleep_async(duration: timedelta | float) -> Awaitable[None]:
    """``await surestep.sleep_async(...)``: :func:`sleep` for ``async def`` workflows."""
    seconds = _seconds(duration) or 0.0
    run = workflow_run()
    if run is None:
        return asyncio.sleep(seconds)
    return _now(_sleep_at, run, run.next_position(), seconds)


def wait_for_event(
    name: str,
    timeout: timedelta | float | None = None,
    *,
    raise_on_timeout: bool = False,
) -> Any:
    """Wait durably for the event ``name`` sent to this run; return its payload.

    An event sent before the wait begins is buffered and returned at once. On timeout
    return None, or raise :class:`EventTimeoutError` with ``raise_on_timeout=True``.
    """
    got = wait_for_any([name], timeout, raise_on_timeout=raise_on_timeout)
    return None if got is None else got[1]


def wait_for_event_async(
    name: str, timeout: timedelta | float | None = None, *, raise_on_timeout: bool = False
) -> Awaitable[Any]:
    """:func:`wait_for_event` for ``async def`` workflows."""
    run = _inside("wait_for_event_async")
    position = run.next_position()

    async def wait() -> Any:
        got = _wait_events_at(run, position, [name], _seconds(timeout), raise_on_timeout)
        return None if got is None else got[1]

    return wait()


def wait_for_any(
    names: Sequence[str],
    timeout: timedelta | float | None = None,
    *,
    raise_on_timeout: bool = False,
) -> tuple[str, Any] | None:
    """Wait durably for the first of several events; return ``(name, payload)``.

    On timeout return None, or raise :class:`EventTimeoutError`.
    """
    names = _names(names)
    run = _inside("wait_for_any")
    return _wait_events_at(run, run.next_position(), names, _seconds(timeout), raise_on_timeout)


def wait_for_any_async(
    names: Sequence[str],
    timeout: timedelta | float | None = None,
    *,
    raise_on_timeout: bool = False,
) -> Awaitable[tuple[str, Any] | None]:
    """:func:`wait_for_any` for ``async def`` workflows."""
    names = _names(names)
    run = _inside("wait_for_any_async")
    return _now(
        _wait_events_at, run, run.next_position(), names, _seconds(timeout), raise_on_timeout
    )


def run_child(workflow: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Start ``workflow`` as a child run and wait durably for its result.

    The child's id is ``"<parent run id>:<position>"``, so a replay finds the same child
    rather than starting another; its ``parent_id`` is recorded. A child that fails or is
    cancelled raises :class:`StepError` here. Cancelling the parent cancels its
    unfinished children; a parent that fails cancels them too. Outside a workflow, a
    plain call of the workflow function.
    """
    run = workflow_run()
    if run is None:
        return workflow(*args, **kwargs)
    result: T = _child_at(run, run.next_position(), _definition(workflow), args, kwargs)
    return result


def run_child_async(workflow: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
    """:func:`run_child` for ``async def`` workflows."""
    run = workflow_run()
    if run is None:
        result: Awaitable[Any] = workflow(*args, **kwargs)
        return result
    return _now(_child_at, run, run.next_position(), _definition(workflow), args, kwargs)


def _inside(what: str) -> ActiveRun:
    run = workflow_run()
    if run is None:
        raise SurestepError(
            f"{what}() waits for events sent to a run, so it works only inside a workflow "
            f"that a worker executes"
        )
    return run


def _names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
        raise SurestepError(f"wait for a non-empty list of event names, got {names!r}")
    return list(names)


def _definition(workflow: Callable[..., Any]) -> WorkflowDef:
    definition: WorkflowDef | None = getattr(workflow, "__surestep_workflow__", None)
    if definition is None:
        raise UnknownWorkflowError(
            f"{getattr(workflow, '__qualname__', workflow)!r} is not a workflow; decorate it "
            f"with @app.workflow() to run it as a child"
        )
    return definition
