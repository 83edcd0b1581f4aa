"""``/api/reviews``: list, get, claim, release, reassign, decide, batch decide.

A reviewer sees only the tasks offered to them (their name, their groups, or any
reviewer); a task they may not see answers exactly as one that does not exist. Listings
mask the fields a task marks sensitive; the single-task view shows them to whoever may
decide the task.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from surestep.app import App
from surestep.errors import ReviewNotFoundError, SurestepError
from surestep.review.records import Decision, ReviewTask
from surestep.review.service import MAX_TASK_ID, public
from surestep.web.access import (
    OPERATORS_ONLY,
    groups_of,
    may_decide,
    may_see,
    visible_task,
)
from surestep.web.auth import Caller, Operator, SurestepApp
from surestep.web.errors import TASK_NOT_FOUND, body, error_body, forbidden
from surestep.web.models import (
    BatchIn,
    BatchOut,
    DecisionIn,
    DecisionOut,
    ErrorBody,
    ReassignIn,
    TaskOut,
)

router = APIRouter(prefix="/reviews", tags=["reviews"])

TaskId = Annotated[int, Path(gt=0, le=MAX_TASK_ID, description="The review task's id.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown or disabled token."},
    404: {"model": ErrorBody, "description": "No such task, or not one you may see."},
}
_ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorBody, "description": "Decided, expired, cancelled or claimed."},
}


@router.get("", response_model=list[TaskOut], responses=_ERRORS)
def list_tasks(
    app: SurestepApp,
    user: Caller,
    kind: str | None = None,
    overdue: bool | None = None,
    group: Annotated[str | None, Query(description="One group's tasks.")] = None,
    assignee: Annotated[str | None, Query(description="Operators: one user's tasks.")] = None,
    state: Annotated[
        Literal["open", "decided", "expired", "cancelled", "any"] | None,
        Query(description="Operators: tasks in this state (default open)."),
    ] = None,
    run_id: Annotated[str | None, Query(description="Operators: one run's tasks.")] = None,
    order: Literal["priority", "due", "created", "newest"] = "priority",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """Review tasks, highest priority first, with sensitive fields masked.

    A reviewer gets their inbox (their tasks, their groups' and those open to any
    reviewer), or one of their groups' with `group`. Operators and admins see every task
    and may filter by assignee, state and run.
    """
    if user.at_least("operator"):
        found = app.reviews.list(
            assignee=assignee,
            group=group,
            kind=kind,
            state=None if state == "any" else (state or "open"),
            overdue=overdue,
            order=order,
            run_id=run_id,
            limit=limit,
        )
    else:
        if assignee is not None or state is not None or run_id is not None:
            raise forbidden("filtering by assignee, state or run_id needs the operator role")
        if group is not None and group not in user.groups:
            raise forbidden(f"{user.name} is not in group {group!r}")
        if group is not None:
            found = app.reviews.list(group=group, kind=kind, overdue=overdue, limit=limit)
        else:
            found = app.reviews.inbox(
                user.name, user.groups, kind=kind, overdue=overdue, limit=limit
            )
    now = app.clock.now()
    return [_task(public(task), task, now) for task in found]


@router.get("/{task_id}", response_model=TaskOut, responses=_ERRORS)
def get_task(task_id: TaskId, app: SurestepApp, user: Caller) -> dict[str, Any]:
    """One task, sensitive fields included (you may decide it)."""
    return _full(app, visible_task(app, user, task_id))


@router.post("/{task_id}/claim", response_model=TaskOut, responses=_ACTION_ERRORS)
def claim(task_id: TaskId, app: SurestepApp, user: Caller) -> dict[str, Any]:
    """Take a task, so that others see it is being handled."""
    visible_task(app, user, task_id)
    return _full(app, app.reviews.claim(task_id, by=user.name, as_member_of=groups_of(user)))


@router.post("/{task_id}/release", response_model=TaskOut, responses=_ACTION_ERRORS)
def release(task_id: TaskId, app: SurestepApp, user: Caller) -> dict[str, Any]:
    """Give a claimed task back; operators may release anyone's claim."""
    visible_task(app, user, task_id)
    force = user.at_least("operator")
    return _full(app, app.reviews.release(task_id, by=user.name, force=force))


@router.post(
    "/{task_id}/reassign",
    response_model=TaskOut,
    responses={**_ACTION_ERRORS, 403: {"model": ErrorBody, "description": "Not an operator."}},
)
def reassign(
    task_id: TaskId, change: ReassignIn, app: SurestepApp, user: Operator
) -> dict[str, Any]:
    """Give an open task to a user and/or groups (operators and admins)."""
    task = app.reviews.reassign(task_id, to=change.to, by=user.name, reason=change.reason)
    return _full(app, task)


@router.post(
    "/{task_id}/decide",
    response_model=DecisionOut,
    responses={**_ACTION_ERRORS, 422: {"model": ErrorBody, "description": "Invalid data."}},
)
def decide(task_id: TaskId, decision: DecisionIn, app: SurestepApp, user: Caller) -> dict[str, Any]:
    """Decide a task; its run resumes at once. Exactly one decision wins (409 for the
    others); an edit that fails the task's form is refused with the fields named (422)."""
    if not may_decide(user, visible_task(app, user, task_id)):
        raise forbidden(OPERATORS_ONLY)
    made = app.reviews.decide(
        task_id,
        decision.outcome,
        by=user.name,
        data=decision.data,
        comment=decision.comment,
        as_member_of=groups_of(user),
    )
    return asdict(made)


@router.post("/decisions", response_model=BatchOut, responses={401: _ERRORS[401]})
def decide_many(batch: BatchIn, app: SurestepApp, user: Caller) -> dict[str, Any]:
    """Decide several tasks; one that cannot be decided does not stop the others. Each
    result carries the status and error body it would have had on its own."""
    results: list[dict[str, Any] | None] = [None] * len(batch.decisions)
    allowed: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(batch.decisions):
        if may_see(app, user, item.task_id):
            if may_decide(user, app.reviews.get(item.task_id)):
                allowed.append((index, item.model_dump()))
                continue
            error = error_body("forbidden", OPERATORS_ONLY)
            results[index] = {"task_id": item.task_id, "status": 403, "error": error}
        else:
            error = error_body(ReviewNotFoundError.code, TASK_NOT_FOUND)
            results[index] = {"task_id": item.task_id, "status": 404, "error": error}
    made = app.reviews.decide_many(
        [item for _, item in allowed], by=user.name, as_member_of=groups_of(user)
    )
    for (index, asked), outcome in zip(allowed, made, strict=True):
        results[index] = _batch_result(asked["task_id"], outcome)
    return {"results": results}


# -- pieces ---------------------------------------------------------------------------------


def _full(app: App, task: ReviewTask) -> dict[str, Any]:
    shown = {**task.__dict__, "sensitive": list(task.sensitive)}
    return _task(shown, task, app.clock.now())


def _task(shown: dict[str, Any], task: ReviewTask, now: float) -> dict[str, Any]:
    return {**shown, "outcomes": list(task.outcomes), "overdue": task.overdue(now)}


def _batch_result(task_id: int, outcome: Decision[Any] | SurestepError) -> dict[str, Any]:
    if isinstance(outcome, Decision):
        return {"task_id": task_id, "status": 200, "decision": asdict(outcome)}
    status, error = body(outcome)
    return {"task_id": task_id, "status": status, "error": error}
