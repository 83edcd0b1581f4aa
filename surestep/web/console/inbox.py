"""The reviewer's pages: the inbox, a task, and what a reviewer does with one.

Each route parses the request, calls ``app.reviews`` (through the checks the REST API
uses, :mod:`surestep.web.access`) and renders. A decision that fails the task's form
comes back as the same page with the fields' errors; one that succeeds opens the next
task of the inbox.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response

from surestep.app import App
from surestep.auth import User
from surestep.errors import ReviewConflictError, ReviewValidationError
from surestep.review.records import Decision, ReviewTask
from surestep.review.service import MAX_TASK_ID, public
from surestep.web.access import OPERATORS_ONLY, groups_of, may_decide, may_see, visible_task
from surestep.web.auth import SurestepApp
from surestep.web.console.forms import form_data, form_fields
from surestep.web.console.markdown import instructions_html
from surestep.web.console.render import page
from surestep.web.console.session import Form, Posted, Viewer, require
from surestep.web.errors import body

router = APIRouter(
    prefix="/console", include_in_schema=False, dependencies=[Depends(require("reviewer"))]
)

TaskId = Annotated[int, Path(gt=0, le=MAX_TASK_ID)]
#: Inbox "state" filter: what a reviewer may narrow their open tasks to; operators
#: also list settled tasks.
STATES = ("open", "overdue", "due_later", "decided", "expired", "cancelled")


@router.get("/")
def home(user: Viewer) -> Response:
    return RedirectResponse(
        "/console/overview" if user.at_least("operator") else "/console/inbox", 303
    )


@router.get("/inbox")
def inbox(
    request: Request,
    app: SurestepApp,
    user: Viewer,
    kind: str | None = None,
    state: str = "open",
    group: str | None = None,
    done: int | None = None,
) -> Response:
    """My open tasks and my groups', by priority then due time; overdue ones marked."""
    kind = kind or None
    group = group if group in user.groups else None
    state = state if state in STATES else "open"
    if state in ("decided", "expired", "cancelled") and not user.at_least("operator"):
        state = "open"
    tasks = _tasks(app, user, kind, state, group)
    now = app.clock.now()
    return page(
        request,
        "inbox.html",
        tasks=[(public(t), t.overdue(now)) for t in tasks],
        filters={"kind": kind or "", "state": state, "group": group or ""},
        states=STATES if user.at_least("operator") else STATES[:3],
        done=done,
        message=request.query_params.get("message"),
    )


def _tasks(
    app: App, user: User, kind: str | None, state: str, group: str | None
) -> list[ReviewTask]:
    overdue = {"overdue": True, "due_later": False}.get(state)
    if user.at_least("operator"):
        settled = state if state in ("decided", "expired", "cancelled") else "open"
        return app.reviews.list(kind=kind, state=settled, overdue=overdue, group=group)
    if group is not None:
        return app.reviews.list(group=group, kind=kind, overdue=overdue)
    return app.reviews.inbox(user.name, user.groups, kind=kind, overdue=overdue)


@router.get("/tasks/{task_id}")
def task_page(request: Request, task_id: TaskId, app: SurestepApp, user: Viewer) -> Response:
    """One task: instructions, payload, proposal and confidence, the form, decisions."""
    return _task_page(request, app, user, visible_task(app, user, task_id))


@router.post("/tasks/{task_id}/claim")
def claim(
    request: Request, task_id: TaskId, app: SurestepApp, user: Viewer, form: Posted
) -> Response:
    visible_task(app, user, task_id)
    try:
        task = app.reviews.claim(task_id, by=user.name, as_member_of=groups_of(user))
    except ReviewConflictError as exc:
        return _task_page(request, app, user, app.reviews.get(task_id), error=str(exc), status=409)
    return _after_claim(request, app, user, task)


@router.post("/tasks/{task_id}/release")
def release(
    request: Request, task_id: TaskId, app: SurestepApp, user: Viewer, form: Posted
) -> Response:
    visible_task(app, user, task_id)
    force = user.at_least("operator")
    try:
        task = app.reviews.release(task_id, by=user.name, force=force)
    except ReviewConflictError as exc:
        return _task_page(request, app, user, app.reviews.get(task_id), error=str(exc), status=409)
    return _after_claim(request, app, user, task)


def _after_claim(request: Request, app: App, user: User, task: ReviewTask) -> Response:
    if request.headers.get("hx-request") == "true":  # htmx swaps only the claim box
        return page(request, "_claim.html", task=task)
    return RedirectResponse(f"/console/tasks/{task.id}", 303)


@router.post("/tasks/{task_id}/decide")
def decide(
    request: Request, task_id: TaskId, app: SurestepApp, user: Viewer, form: Posted
) -> Response:
    """Approve, reject or edit (or an operator's outcome); then open the next task."""
    task = visible_task(app, user, task_id)
    if not may_decide(user, task):
        return _task_page(request, app, user, task, error=OPERATORS_ONLY, status=403)
    outcome = form.get("outcome", "")
    data: Any = None
    problems: list[dict[str, str]] = []
    if outcome == "edit" or (outcome in ("retry", "output") and task.form):
        data, problems = form_data(task.form, form)
    elif outcome in ("retry", "output") and form.get("data", "").strip():
        data, problems = _json_data(form.get("data", ""))
    if problems:
        return _task_page(request, app, user, task, problems=problems, form=form, status=422)
    try:
        made = app.reviews.decide(
            task_id,
            outcome,
            by=user.name,
            data=data,
            comment=form.get("comment") or None,
            as_member_of=groups_of(user),
        )
    except (ReviewValidationError, ReviewConflictError) as exc:
        status, error = body(exc)
        return _task_page(
            request,
            app,
            user,
            app.reviews.get(task_id),
            problems=error["fields"] or [],
            error=error["message"],
            form=form,
            status=status,
        )
    return RedirectResponse(_next_task(app, user, made), 303)


@router.post("/inbox/approve")
def approve_selected(request: Request, app: SurestepApp, user: Viewer, form: Posted) -> Response:
    """Approve every selected task; one that cannot be approved does not stop the rest."""
    ids = [int(v) for v in form.all("task") if v.isdigit() and 0 < int(v) <= MAX_TASK_ID]
    allowed = [i for i in ids if may_see(app, user, i) and may_decide(user, app.reviews.get(i))]
    made = app.reviews.decide_many(
        [{"task_id": i, "outcome": "approve", "comment": form.get("comment") or None}
         for i in allowed],
        by=user.name,
        as_member_of=groups_of(user),
    )  # fmt: skip
    approved = sum(isinstance(m, Decision) for m in made)
    refused = len(ids) - approved
    message = f"approved {approved} task{'s' * (approved != 1)}"
    if refused:
        message += f"; {refused} could not be approved (decided, taken or not yours)"
    return RedirectResponse(f"/console/inbox?message={quote(message)}", 303)


# -- pieces -------------------------------------------------------------------------------


def _task_page(
    request: Request,
    app: App,
    user: User,
    task: ReviewTask,
    *,
    problems: list[dict[str, str]] | None = None,
    error: str | None = None,
    form: Form | None = None,
    status: int = 200,
) -> Response:
    shown = task.proposal if task.proposal is not None else task.payload
    fields = form_fields(task.form, shown, form)
    return page(
        request,
        "task.html",
        status,
        task=task,
        shown=public(task),  # sensitive fields masked on screen; revealed on request
        overdue=task.overdue(app.clock.now()),
        instructions=instructions_html(task.instructions),
        fields=fields,
        problems={p["path"]: p["message"] for p in problems or []},
        unplaced=[p for p in problems or [] if p["path"] not in {f.name for f in fields}],
        error=error,
        comment=form.get("comment", "") if form else "",
        data_text=form.get("data", "") if form else "",
        may_decide=may_decide(user, task),
        operators_only=OPERATORS_ONLY,
        decided=request.query_params.get("decided", "")[:20],
    )


def _next_task(app: App, user: User, made: Decision[Any]) -> str:
    """The next task of the inbox after a decision, else the inbox saying what was done."""
    upcoming = _tasks(app, user, None, "open", None)[:2]
    following = [t for t in upcoming if t.id != made.task_id]
    if following:
        return f"/console/tasks/{following[0].id}?decided={made.task_id}"
    return f"/console/inbox?done={made.task_id}"


def _json_data(text: str) -> tuple[Any, list[dict[str, str]]]:
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        return None, [{"path": "data", "message": f"not valid JSON ({exc.msg})"}]
