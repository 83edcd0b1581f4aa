"""``surestep serve``: the web console and the REST API (the ``web`` extra) over a database."""

from __future__ import annotations

from typing import Annotated

import typer

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import Db, library_errors, opened


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    app.command()(serve)


def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    db: Db = DEFAULT_DATABASE_URL,
    target: Annotated[
        str | None,
        typer.Option(
            "--app",
            metavar="MODULE:APP",
            help="Serve your App (e.g. myproject.jobs:app): its webhook triggers answer "
            "at /api/trigger/WORKFLOW. Its database, unless --db is given.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the web console, the REST API (review tasks, runs) and /metrics until
    Ctrl-C. Users and tokens come from `surestep users add`; the console signs in with
    the same tokens."""
    with library_errors():
        import surestep.web  # the web extra, or the pip line to install it

    if target is not None:
        _serve_app(target, db, host, port)
        return
    with opened(db) as surestep_app:
        surestep_app.store  # noqa: B018 -- open (and check) the database before listening
        _announce(host, port)
        surestep.web.serve(surestep_app, host, port)


def _announce(host: str, port: int) -> None:
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    typer.echo(
        f"surestep console on http://{shown}:{port}/console/ and API on "
        f"http://{shown}:{port}/api (schema: /api/openapi.json); Ctrl-C stops it"
    )


def _serve_app(target: str, db: str | None, host: str, port: int) -> None:
    """Serve the user's App (its workflows and webhook triggers), checking first that
    every trigger's secret is in the environment."""
    import surestep.web
    from surestep.cli.worker import load_app

    with library_errors():
        surestep_app = load_app(target)
        if db is not None and db != DEFAULT_DATABASE_URL:
            surestep_app.close()
            surestep_app.database_url = db
        for declared in surestep_app.triggers.all():
            declared.key()  # a missing or malformed secret fails here, not per request
        surestep_app.store  # noqa: B018 -- open (and check) the database before listening
        _announce(host, port)
        try:
            surestep.web.serve(surestep_app, host, port)
        finally:
            surestep_app.close()
