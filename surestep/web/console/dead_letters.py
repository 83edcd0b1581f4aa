"""The dead-letter queue: why each run is there, and bulk redrive (``app.retry_many``)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from surestep.states import State
from surestep.web.auth import SurestepApp
from surestep.web.console.render import page
from surestep.web.console.session import Posted, Viewer, require

router = APIRouter(
    prefix="/console", include_in_schema=False, dependencies=[Depends(require("operator"))]
)
PAGE = 200


@router.get("/dead-letters")
def dead_letters(
    request: Request, app: SurestepApp, user: Viewer, workflow: str | None = None
) -> Response:
    """Dead-lettered runs, newest first, each with the error that put it there."""
    found = app.list_runs(State.DEAD_LETTER, workflow or None, PAGE)
    return page(
        request,
        "dead_letters.html",
        runs=found,
        workflow=workflow or "",
        limit=PAGE,
        message=request.query_params.get("message"),
    )


@router.post("/dead-letters/redrive")
def redrive(request: Request, app: SurestepApp, user: Viewer, form: Posted) -> Response:
    """Redrive the selected runs; one that cannot be redriven does not stop the rest."""
    selected = [run_id for run_id in form.all("run") if run_id]
    if not selected:
        return RedirectResponse("/console/dead-letters?message=select+runs+to+redrive", 303)
    outcomes = app.retry_many(selected, actor=f"console:{user.name}")
    done = sum(o.ok for o in outcomes)
    failed = [f"{o.run_id}: {o.error}" for o in outcomes if not o.ok]
    message = f"redrove {done} run{'s' * (done != 1)}"
    if failed:
        message += "; not redriven: " + "; ".join(failed[:5])
    return RedirectResponse(f"/console/dead-letters?message={quote(message)}", 303)
