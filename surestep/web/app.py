"""The FastAPI application over an App, and the uvicorn server that runs it.

>>> uvicorn.run(create_app(surestep.App("sqlite:///surestep.db")))   # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import uvicorn
from fastapi import FastAPI

import surestep.web.console as console
import surestep.web.errors as errors
from surestep.app import App
from surestep.web.api.metrics import router as metrics_router
from surestep.web.api.reviews import router as reviews_router
from surestep.web.api.runs import router as runs_router
from surestep.web.api.triggers import router as triggers_router
from surestep.web.api.users import router as users_router
from surestep.web.auth import Caller
from surestep.web.headers import SecurityHeaders


def create_app(app: App) -> FastAPI:
    """The REST API over ``app``'s database, under ``/api`` (its OpenAPI schema at
    ``/api/openapi.json``, for any user with a token, like every other endpoint), and
    the web console under ``/console/`` (docs/console.md)."""
    api = FastAPI(
        title="surestep",
        summary="Review tasks and runs of a surestep database.",
        version=_version(),
        openapi_url=None,  # served below, behind authentication
        docs_url=None,
        redoc_url=None,
        # Never debug: its error pages would show tracebacks to clients.
        debug=False,
    )
    api.state.surestep = app
    errors.install(api)
    for router in (reviews_router, runs_router, users_router, triggers_router):
        api.include_router(router, prefix="/api")
    api.include_router(metrics_router)  # at /metrics, where Prometheus looks
    console.install(api)  # after errors.install: its pages answer errors with pages
    api.add_middleware(SecurityHeaders)

    @api.get("/api/openapi.json", include_in_schema=False)
    def openapi(user: Caller) -> dict[str, Any]:
        return api.openapi()

    return api


def server(
    app: App, host: str = "127.0.0.1", port: int = 8080, *, log_level: str = "info"
) -> uvicorn.Server:
    """A uvicorn server for the API (``.run()`` it, or ``.should_exit = True`` to stop)."""
    config = uvicorn.Config(
        create_app(app),
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        # Only the request line is logged, never a header (the token is in one).
        access_log=True,
    )
    return uvicorn.Server(config)


def serve(app: App, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the API until interrupted."""
    server(app, host, port).run()


def _version() -> str:
    try:
        return version("surestep")
    except PackageNotFoundError:  # run from a source tree
        return "0"
