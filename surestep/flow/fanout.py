"""``surestep.map``: run a workflow over many inputs as child runs, and wait for them all.

>>> summaries = surestep.map(summarize_doc, doc_ids, concurrency=20)   # doctest: +SKIP

The map takes one position of the parent run, like a step or a wait. The first time the
run reaches it, every child is created in one transaction (see
:mod:`surestep.flow.store`) and the parent parks, holding no worker; any worker runs the
children, at most ``concurrency`` of them at once across all workers. When the last child
finishes the parent is woken once, collects the results in input order, records them at
its position (a replay returns them without looking at the children again) and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from surestep.engine.context import ActiveRun, workflow_run
from surestep.engine.halts import Verdict
from surestep.errors import ConfigurationError, SerializationError, StepError, UnknownWorkflowError
from surestep.flow.store import ChildOutcome, MapStore
from surestep.registry import WorkflowDef
from surestep.states import State

#: The most children one map may have: its creation is one transaction.
MAX_CHILDREN = 100_000


class ChildRunError(StepError):
    """A child run of a map failed or was cancelled (its error, in place, with
    ``return_exceptions=True``)."""


def map(
    workflow: Callable[..., Any],
    items: Iterable[Any],
    *,
    concurrency: int | None = None,
    fail_fast: bool = False,
    return_exceptions: bool = False,
) -> list[Any]:
    """Run ``workflow(item)`` as a child run for each item; return their results in the
    items' order.

    ``concurrency`` caps how many of these children run at once, across every worker
    (default: all). A failed or cancelled child fails the map with :class:`ChildRunError`
    once every child has finished, or at once with ``fail_fast=True`` (the unfinished
    children are then cancelled); with ``return_exceptions=True`` its error is returned in
    its place instead. Outside a workflow, plain calls in a loop.
    """
    definition = _definition(workflow)
    settings = _settings(list(items), concurrency, fail_fast, return_exceptions, definition)
    run = workflow_run()
    if run is None:
        return [workflow(item) for item in settings.items]
    return _map_at(run, run.next_position(), definition, settings)


def map_async(
    workflow: Callable[..., Any],
    items: Iterable[Any],
    *,
    concurrency: int | None = None,
    fail_fast: bool = False,
    return_exceptions: bool = False,
) -> Awaitable[list[Any]]:
    """:func:`map` for ``async def`` workflows (``await`` it; gathered maps start together)."""
    definition = _definition(workflow)
    settings = _settings(list(items), concurrency, fail_fast, return_exceptions, definition)
    run = workflow_run()
    if run is None:

        async def plain() -> list[Any]:
            return [await workflow(item) for item in settings.items]

        return plain()
    position = run.next_position()  # taken at the call, so gather order holds

    async def waited() -> list[Any]:
        return _map_at(run, position, definition, settings)

    return waited()


class _Settings:
    def __init__(
        self, items: list[Any], concurrency: int, fail_fast: bool, return_exceptions: bool
    ) -> None:
        self.items = items
        self.concurrency = concurrency
        self.fail_fast = fail_fast
        self.return_exceptions = return_exceptions


def _settings(
    items: list[Any],
    concurrency: int | None,
    fail_fast: bool,
    return_exceptions: bool,
    definition: WorkflowDef,
) -> _Settings:
    where = f"surestep.map({definition.name!r}, ...)"
    if len(items) > MAX_CHILDREN:
        raise ConfigurationError(
            f"{where}: {len(items)} items; a map takes at most {MAX_CHILDREN} (its children "
            f"are created in one transaction): split them into several maps"
        )
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ConfigurationError(f"{where}: concurrency must be an int >= 1 (or None for all)")
    return _Settings(items, concurrency or max(1, len(items)), fail_fast, return_exceptions)


def _map_at(run: ActiveRun, position: int, workflow: WorkflowDef, settings: _Settings) -> list[Any]:
    name = f"map:{workflow.name}"
    recorded = run.expect(position, name, joinable=True)
    if not settings.items:
        return []
    waiting = Verdict(
        State.WAITING,
        f"waiting for {len(settings.items)} child runs of {workflow.name!r}",
        None,
        waiting_for=(f"map:{position}",),
    )
    maps = MapStore(run.store)
    if recorded is None:
        where = f"an input of surestep.map({workflow.name!r}) in run {run.run_id!r}"
        inputs = [workflow.codec.encode_args((item,), {}, where) for item in settings.items]
        with run.guarded():
            maps.start(
                run.run_id,
                run.token,
                run.worker,
                position,
                name,
                (workflow.name, workflow.version),
                inputs,
                settings.concurrency,
                settings.fail_fast,
                run.clock.now(),
                [workflow.placement((item,), {}) for item in settings.items],
            )
        run.halt(waiting)
    if recorded.state == State.SUCCESS:
        return _results(run, workflow, recorded.output, settings.return_exceptions)
    if recorded.state == State.FAILED:
        info = json.loads(recorded.error or "{}")
        raise ChildRunError(name, info.get("type", "ChildRunError"), info.get("message", ""))
    outcomes = maps.outcomes(run.run_id, position)
    if outcomes is None:
        run.halt(waiting)
    return _collect(run, position, name, workflow, outcomes, settings)


def _collect(
    run: ActiveRun,
    position: int,
    name: str,
    workflow: WorkflowDef,
    outcomes: list[ChildOutcome],
    settings: _Settings,
) -> list[Any]:
    """Record the map's outcome at its position (once), and return or raise it."""
    failures = [(i, o) for i, o in enumerate(outcomes) if o.state != State.SUCCESS]
    if settings.fail_fast and failures:
        MapStore(run.store).cancel_rest(run.run_id, position, run.worker, run.clock.now())
    if failures and not settings.return_exceptions:
        index, outcome = failures[0]
        info = json.loads(outcome.error or "{}")
        message = (
            f"{len(failures)} of {len(outcomes)} child runs failed or were cancelled; the "
            f"first, item {index}: {info.get('type', outcome.state)}: {info.get('message', '')}"
        )
        error = json.dumps({"type": "ChildRunError", "message": message})
        _write(run, position, name, fail=error)
        raise ChildRunError(name, "ChildRunError", message)
    stored = json.dumps([_entry(o) for o in outcomes])
    _write(run, position, name, resolve=stored)
    return _results(run, workflow, stored, settings.return_exceptions)


def _entry(outcome: ChildOutcome) -> dict[str, Any]:
    if outcome.state == State.SUCCESS:
        return {"ok": json.loads(outcome.output) if outcome.output else None}
    info = json.loads(outcome.error) if outcome.error else {}
    return {"error": {"state": str(outcome.state), **info}}


def _results(
    run: ActiveRun, workflow: WorkflowDef, output: str | None, return_exceptions: bool
) -> list[Any]:
    results = []
    for index, entry in enumerate(json.loads(output or "[]")):
        if "ok" in entry:
            where = f"result {index} of surestep.map({workflow.name!r}) in run {run.run_id!r}"
            try:
                results.append(workflow.codec.decode_result(json.dumps(entry["ok"]), where))
            except SerializationError as exc:  # the child's code changed: park, to retry
                run.code_changed(exc)
        else:
            error = entry["error"]
            failure = ChildRunError(
                f"map:{workflow.name}[{index}]",
                error.get("type", "ChildRunError"),
                error.get("message", ""),
            )
            if not return_exceptions:
                raise failure
            results.append(failure)
    return results


def _write(
    run: ActiveRun, position: int, name: str, resolve: str | None = None, fail: str | None = None
) -> None:
    with run.guarded():
        run.store.wait_step(
            run.run_id,
            run.token,
            run.worker,
            position,
            name,
            run.clock.now(),
            resolve=resolve,
            fail=fail,
        )


def _definition(workflow: Callable[..., Any]) -> WorkflowDef:
    definition: WorkflowDef | None = getattr(workflow, "__surestep_workflow__", None)
    if definition is None:
        raise UnknownWorkflowError(
            f"{getattr(workflow, '__qualname__', workflow)!r} is not a workflow; decorate it "
            f"with @app.workflow() to map it over items as child runs"
        )
    return definition
