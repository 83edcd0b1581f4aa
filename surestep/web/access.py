"""Who may see and decide which review task: the checks the REST API and the console
share, so that a reviewer can do in the browser exactly what their token lets them do.

A task a reviewer may not see raises :class:`ReviewNotFoundError` with the same message
as a task that does not exist, so neither door tells them which task ids exist.
"""

from __future__ import annotations

from surestep.app import App
from surestep.auth import User
from surestep.auth.roles import sees_every_task
from surestep.errors import ReviewNotFoundError
from surestep.review.records import RUN_DEADLINE, STEP_EXHAUSTED, ReviewTask
from surestep.web.errors import TASK_NOT_FOUND

OPERATORS_ONLY = (
    "deciding a step_exhausted or run_deadline task acts on the run itself (retry, output, "
    "fail, cancel): it needs the operator role"
)


def visible_task(app: App, user: User, task_id: int) -> ReviewTask:
    """The task, if ``user`` may see it; else ReviewNotFoundError."""
    task = app.reviews.get(task_id)
    if not user.may_see(task):
        raise ReviewNotFoundError(TASK_NOT_FOUND)
    return task


def may_see(app: App, user: User, task_id: int) -> bool:
    try:
        visible_task(app, user, task_id)
    except ReviewNotFoundError:
        return False
    return True


def acts_on_runs(task: ReviewTask) -> bool:
    """Whether deciding ``task`` operates on its run (operators only)."""
    return task.kind in (STEP_EXHAUSTED, RUN_DEADLINE)


def may_decide(user: User, task: ReviewTask) -> bool:
    return not acts_on_runs(task) or user.at_least("operator")


def groups_of(user: User) -> list[str] | None:
    """For a reviewer, the groups the library checks again under the task's lock (a
    reassignment between our check and the decision must win); None for operators."""
    return None if sees_every_task(user.role) else list(user.groups)
