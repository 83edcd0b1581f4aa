"""``/api/runs``: list and read runs, and redrive a dead-lettered one (operators)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query

from surestep.states import State
from surestep.web.auth import Operator, SurestepApp
from surestep.web.models import ErrorBody, RedriveOut, RunDetail, RunOut

router = APIRouter(prefix="/runs", tags=["runs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, unknown or disabled token."},
    403: {"model": ErrorBody, "description": "Not an operator or admin."},
}


@router.get("", response_model=list[RunOut], responses=_ERRORS)
def list_runs(
    app: SurestepApp,
    user: Operator,
    state: State | None = None,
    workflow: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """Runs, newest first (without their steps and events)."""
    return [_summary(asdict(run)) for run in app.list_runs(state, workflow, limit)]


@router.get(
    "/{run_id:path}",
    response_model=RunDetail,
    responses={**_ERRORS, 404: {"model": ErrorBody, "description": "No such run."}},
)
def get_run(run_id: str, app: SurestepApp, user: Operator) -> dict[str, Any]:
    """A run with its steps, attempts and event log."""
    return asdict(app.get_run(run_id))


@router.post(
    "/{run_id:path}/redrive",
    response_model=RedriveOut,
    responses={
        **_ERRORS,
        404: {"model": ErrorBody, "description": "No such run."},
        409: {"model": ErrorBody, "description": "The run is not dead-lettered."},
    },
)
def redrive(run_id: str, app: SurestepApp, user: Operator) -> dict[str, Any]:
    """Redrive a dead-lettered run from its failed step; completed steps do not re-run."""
    steps = app.retry(run_id, actor=f"api:{user.name}")
    return {"run_id": run_id, "steps": steps}


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in ("steps", "events")}
