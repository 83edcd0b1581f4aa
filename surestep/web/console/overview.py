"""The overview: cluster-wide figures (the same as ``/metrics`` and ``surestep stats``),
with small bar charts where a picture reads better than a number."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from surestep.llm.ledger import CallLedger
from surestep.observe.cluster import ClusterFigures, Figures
from surestep.web.auth import SurestepApp
from surestep.web.console.render import page
from surestep.web.console.session import Viewer, require

router = APIRouter(
    prefix="/console", include_in_schema=False, dependencies=[Depends(require("operator"))]
)


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: its label, value and width as a share of the longest bar."""

    label: str
    value: float
    share: float


def bars(values: dict[str, float]) -> list[Bar]:
    """Bars for ``values``, longest first; shares relative to the largest value."""
    top = max(values.values(), default=0) or 1
    ordered = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    return [Bar(label, value, value / top) for label, value in ordered]


@router.get("/overview")
def overview(request: Request, app: SurestepApp, user: Viewer) -> Response:
    """Runs by state, oldest due, dead letters, review backlog and SLA adherence,
    override rate and cost per successful run, over the last hour."""
    figures = ClusterFigures(app.store, app.clock).read()
    costs = CallLedger(app.store).costs(figures.at - figures.window)
    return page(
        request,
        "overview.html",
        figures=figures,
        by_state=bars(_by_state(figures)),
        backlog=bars({k: float(n) for k, n in figures.review_open.items()}),
        costs=costs,
    )


def _by_state(figures: Figures) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for (_, state), n in (*figures.runs.items(), *figures.finished.items()):
        totals[state] += n
    return dict(totals)
