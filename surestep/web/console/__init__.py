"""The web console: server-rendered pages over the same library calls as the REST API.

Reviewers see ``/console/inbox`` and the task pages; operators also the runs, the
dead-letter queue and the overview. See docs/console.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

import surestep.web.errors as errors
from surestep.errors import SurestepError
from surestep.web.console import dead_letters, inbox, overview, runs, signin
from surestep.web.console.render import page
from surestep.web.console.session import ConsoleForbidden, LoginRequired, login_url

STATIC = Path(__file__).resolve().parent.parent / "static"
ROUTERS = (signin.router, inbox.router, runs.router, dead_letters.router, overview.router)


def install(api: FastAPI) -> None:
    """Add the console's pages, its static files and its error pages to ``api``."""
    for router in ROUTERS:
        api.include_router(router)
    api.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    @api.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/console/", 303)

    @api.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("hx-request") == "true":  # htmx: reload into the login page
            return Response(status_code=401, headers={"HX-Redirect": login_url(exc.next_path)})
        return RedirectResponse(login_url(exc.next_path), 303)

    @api.exception_handler(ConsoleForbidden)
    async def forbidden(request: Request, exc: ConsoleForbidden) -> Response:
        return page(request, "error.html", 403, title="Not allowed", message=str(exc))

    @api.exception_handler(SurestepError)
    async def library_error(request: Request, exc: SurestepError) -> Response:
        # The API's handler answers JSON; a console page answers a page, same status.
        if not request.url.path.startswith("/console/"):
            return await errors.library_error(request, exc)
        status, content = errors.body(exc)
        title = "Not found" if status == 404 else "Could not do that"
        return page(request, "error.html", status, title=title, message=content["message"])
