"""``/metrics``: the cluster-wide gauges in Prometheus' text format, for operators.

Behind the same bearer token as the API (a Prometheus job sets
``authorization: {credentials: TOKEN}``); the registry is made on the first scrape, so
an API without the metrics extra starts, and answers /metrics with the pip line.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Request, Response

from surestep.observe.collector import cluster_registry, prometheus
from surestep.web.auth import Operator, SurestepApp

router = APIRouter(tags=["metrics"])
_lock = threading.Lock()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, user: Operator, app: SurestepApp) -> Response:
    """The cluster-wide gauges (one database read; the model figures as read last, in
    the background)."""
    client = prometheus()
    with _lock:
        registry = getattr(request.app.state, "cluster_registry", None)
        if registry is None:
            registry = cluster_registry(app, background=True)
            request.app.state.cluster_registry = registry
    return Response(client.generate_latest(registry), media_type=client.CONTENT_TYPE_LATEST)
