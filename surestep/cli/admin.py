"""The schema and housekeeping: migrate, prune."""

from __future__ import annotations

from typing import Annotated

import typer

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import Db, opened, parse_age
from surestep.storage import redact


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    for command in (prune, migrate):
        app.command()(command)


def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Age of the finished runs to delete, e.g. 30d, 12h, 90m.",
            show_default=False,
        ),
    ],
    batch: Annotated[int, typer.Option(min=1, help="Runs deleted per transaction.")] = 1000,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Delete finished runs (success, failed, cancelled) with their steps and events.

    Dead-lettered and unfinished runs are kept, whatever their age.
    """
    age = parse_age(older_than, "--older-than")
    with opened(db) as surestep_app:
        deleted = surestep_app.prune(older_than=age, batch=batch)
    typer.echo(f"deleted {deleted} finished run(s) older than {older_than}")


def migrate(db: Db = DEFAULT_DATABASE_URL) -> None:
    """Create or upgrade the database schema, then print its version."""
    with opened(db, must_exist=False) as surestep_app:
        store = surestep_app.store  # opening the store applies the migrations
        version = store.schema_version()
    typer.echo(f"{redact(store.description)}: schema version {version}")
