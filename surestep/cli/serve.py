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
) -> None:
    """Serve the web console, the REST API (review tasks, runs) and /metrics until
    Ctrl-C. Users and tokens come from `surestep users add`; the console signs in with
    the same tokens."""
    with library_errors():
        import surestep.web  # the web extra, or the pip line to install it

    with opened(db) as surestep_app:
        surestep_app.store  # noqa: B018 -- open (and check) the database before listening
        shown = "localhost" if host in ("127.0.0.1", "::1") else host
        typer.echo(
            f"surestep console on http://{shown}:{port}/console/ and API on "
            f"http://{shown}:{port}/api (docs: /api/docs); Ctrl-C stops it"
        )
        surestep.web.serve(surestep_app, host, port)
