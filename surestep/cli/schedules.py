"""Cron schedules: ``surestep schedules list|pause|resume|trigger NAME``.

Any database works without the App's code: a schedule is stored (with its cron, time
zone and workflow version) when a worker whose App declares it starts.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from rich.text import Text

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import AsJson, Db, opened
from surestep.flow.schedule_store import ScheduleRecord
from surestep.render import echo_json, new_console

Name = Annotated[str, typer.Argument(help="The schedule's name.", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the ``schedules`` group to the ``surestep`` command."""
    schedules = typer.Typer(
        help="Cron schedules: list them, pause, resume, or fire one now.",
        no_args_is_help=True,
    )
    schedules.command("list")(list_schedules)
    schedules.command()(pause)
    schedules.command()(resume)
    schedules.command()(trigger)
    app.add_typer(schedules, name="schedules")


def list_schedules(as_json: AsJson = False, db: Db = DEFAULT_DATABASE_URL) -> None:
    """List the schedules: cron, time zone, catch-up policy, next and last fire."""
    with opened(db) as surestep_app:
        found = surestep_app.schedules.records()
    if as_json:
        echo_json([asdict(record) for record in found])
    elif not found:
        typer.echo("no schedules; a worker stores its App's schedules when it starts")
    else:
        new_console().print(_table(found))


def pause(name: Name, db: Db = DEFAULT_DATABASE_URL) -> None:
    """Stop a schedule firing until `surestep schedules resume`."""
    with opened(db) as surestep_app:
        surestep_app.schedules.pause(name)
    typer.echo(f"paused schedule {name!r}; `surestep schedules resume {name}` fires it again")


def resume(name: Name, db: Db = DEFAULT_DATABASE_URL) -> None:
    """Fire a paused schedule again, from its next fire time (the paused ones are skipped)."""
    with opened(db) as surestep_app:
        record = surestep_app.schedules.resume(name)
    typer.echo(f"resumed schedule {name!r}; next fire {_local(record, record.next_fire_at)}")


def trigger(name: Name, db: Db = DEFAULT_DATABASE_URL) -> None:
    """Start a run of a schedule's workflow now (its cron is unchanged); print its id."""
    with opened(db) as surestep_app:
        run_id = surestep_app.schedules.trigger(name)
    typer.echo(run_id)


def _local(record: ScheduleRecord, epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return f"{datetime.fromtimestamp(epoch, ZoneInfo(record.timezone)):%Y-%m-%d %H:%M:%S %Z}"


def _table(found: list[ScheduleRecord]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("name", "cron", "timezone", "catch up", "next fire", "last fire"):
        table.add_column(column)
    for record in found:
        next_fire: Any = (
            Text("paused", style="yellow") if record.paused else _local(record, record.next_fire_at)
        )
        table.add_row(
            record.name,
            record.cron,
            record.timezone,
            record.catch_up,
            next_fire,
            _local(record, record.last_fire_at),
        )
    return table
