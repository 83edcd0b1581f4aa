"""The operator's run pages: the list with filters, a run's timeline, cancel and retry."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response

from surestep.errors import SurestepError
from surestep.llm.ledger import CallLedger, ModelCall
from surestep.records import RunRecord, StepRecord
from surestep.review.service import public
from surestep.states import TERMINAL, State
from surestep.web.auth import SurestepApp
from surestep.web.console.render import page
from surestep.web.console.session import Posted, Viewer, require
from surestep.web.errors import body

router = APIRouter(
    prefix="/console", include_in_schema=False, dependencies=[Depends(require("operator"))]
)

RunId = Annotated[str, Path(min_length=1, max_length=500)]
PAGE = 50


@router.get("/runs")
def runs(
    request: Request,
    app: SurestepApp,
    user: Viewer,
    state: str | None = None,
    workflow: str | None = None,
    since: str | None = None,
    before: str | None = None,
) -> Response:
    """Runs, newest first, by state, workflow and creation time (pages of 50)."""
    chosen = state if state in {s.value for s in State} else None
    start, end = _epoch(since), _epoch(before)
    found = app.list_runs(chosen, workflow or None, PAGE + 1, since=start, before=end)
    # The next page: runs created before the last one shown (one more was read to know
    # whether there is one). Runs created in the same microsecond may be skipped.
    older = _iso(found[PAGE - 1].created_at) if len(found) > PAGE else None
    template = "_runs_table.html" if request.headers.get("hx-request") == "true" else "runs.html"
    return page(
        request,
        template,
        runs=found[:PAGE],
        states=[s.value for s in State],
        filters={
            "state": chosen or "",
            "workflow": workflow or "",
            "since": since or "",
            "before": before or "",
        },
        older=older,
    )


@dataclass(frozen=True)
class StepView:
    """A step of the timeline with the model calls each of its attempts made."""

    step: StepRecord
    calls: dict[int, list[ModelCall]]  # attempt → calls

    @property
    def cost(self) -> float:
        return sum(c.cost_usd for calls in self.calls.values() for c in calls)


def timeline(run: RunRecord, calls: list[ModelCall]) -> tuple[list[StepView], list[StepView]]:
    """The run's steps (by position) and its compensations, each with its model calls."""
    by_step: dict[int, dict[int, list[ModelCall]]] = defaultdict(lambda: defaultdict(list))
    for call in calls:
        by_step[call.position][call.attempt].append(call)
    views = [StepView(s, dict(by_step.get(s.position, {}))) for s in run.steps]
    return [v for v in views if v.step.position >= 0], [v for v in views if v.step.position < 0]


@router.get("/runs/{run_id:path}")
def run_page(request: Request, run_id: RunId, app: SurestepApp, user: Viewer) -> Response:
    """A run: its steps and attempts (errors, tracebacks, model calls and their cost),
    waits, reviews, compensations and event log; cancel and retry."""
    return _run_page(request, app, run_id)


def _run_page(
    request: Request, app: SurestepApp, run_id: str, error: str | None = None, status: int = 200
) -> Response:
    run = app.get_run(run_id)
    calls = CallLedger(app.store).calls(run_id)
    steps, compensations = timeline(run, calls)
    reviews = app.reviews.list(run_id=run_id, state=None, order="created", limit=100)
    return page(
        request,
        "run.html",
        status,
        run=run,
        steps=steps,
        compensations=compensations,
        reviews=[public(t) for t in reviews],
        calls=calls,
        total_cost=sum(c.cost_usd for c in calls),
        finished=run.state in TERMINAL,
        error=error,
        message=request.query_params.get("message"),
    )


@router.post("/runs/{run_id:path}/cancel")
def cancel(
    request: Request, run_id: RunId, app: SurestepApp, user: Viewer, form: Posted
) -> Response:
    """Cancel the run (a running one stops at its next step boundary)."""
    reason = (form.get("reason") or "cancelled from the console")[:1000]
    try:
        app.cancel(run_id, reason, actor=f"console:{user.name}")
    except SurestepError as exc:
        status, error = body(exc)
        return _run_page(request, app, run_id, error["message"], status)
    return RedirectResponse(f"/console/runs/{quote(run_id)}?message=cancelled", 303)


@router.post("/runs/{run_id:path}/retry")
def retry(
    request: Request, run_id: RunId, app: SurestepApp, user: Viewer, form: Posted
) -> Response:
    """Redrive a dead-lettered run from its failed step."""
    try:
        steps = app.retry(run_id, actor=f"console:{user.name}")
    except SurestepError as exc:
        status, error = body(exc)
        return _run_page(request, app, run_id, error["message"], status)
    message = "redriven: " + (", ".join(steps) or "no step needed a new budget")
    return RedirectResponse(f"/console/runs/{quote(run_id)}?message={quote(message)}", 303)


def _epoch(text: str | None) -> float | None:
    """A time from a ``datetime-local`` input (UTC), or None for none or a bad one."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
