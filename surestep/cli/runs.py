"""Inspecting and operating on runs: runs, show, retry, cancel, dlq, send."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.text import Text

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import AsJson, Db, Limit, RunId, WorkflowFilter, fail, opened
from surestep.render import (
    dead_letter_summary,
    dead_letter_table,
    echo_json,
    events_table,
    new_console,
    print_tracebacks,
    run_header,
    run_summary,
    runs_table,
    steps_table,
)
from surestep.states import State


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    for command in (runs, show, retry, cancel, dlq, send):
        app.command()(command)


def runs(
    state: Annotated[State | None, typer.Option(help="Only runs in this state.")] = None,
    workflow: WorkflowFilter = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """List runs, newest first."""
    with opened(db) as surestep_app:
        found = surestep_app.list_runs(state, workflow, limit)
    if as_json:
        echo_json([run_summary(run) for run in found])
    elif not found:
        typer.echo("no runs")
    else:
        console = new_console()
        console.print(runs_table(found))
        if len(found) == limit:
            console.print(Text(f"the {limit} newest; --limit shows more", style="dim"))


def show(
    run_id: RunId,
    tracebacks: Annotated[
        bool, typer.Option("--tracebacks", help="Print the traceback of every failed attempt.")
    ] = False,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Show a run: its inputs and outcome, its steps and attempts, and its event log."""
    with opened(db) as surestep_app:
        run = surestep_app.get_run(run_id)
    if as_json:
        echo_json(asdict(run))
        return
    console = new_console()
    console.print(run_header(run))
    console.print(steps_table(run.steps) if run.steps else Text("no steps yet", style="dim"))
    print_tracebacks(console, run.steps, tracebacks)
    console.print(events_table(run.events))


def retry(run_id: RunId, db: Db = DEFAULT_DATABASE_URL) -> None:
    """Redrive a dead-lettered run from its failed step; completed steps are not re-run."""
    with opened(db) as surestep_app:
        steps = surestep_app.retry(run_id)
    redriven = ", ".join(steps) if steps else "none"
    typer.echo(f"run {run_id} is pending again; redriven step(s): {redriven}")


def cancel(
    run_id: RunId,
    reason: Annotated[
        str, typer.Option(help="Why; recorded in the run's event log.")
    ] = "cancelled from the command line",
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Cancel a run that has not finished.

    A running run stops at its next step boundary.
    """
    with opened(db) as surestep_app:
        was = surestep_app.cancel(run_id, reason)
    note = ""
    if was == State.RUNNING:
        note = "; its worker stops at the next step boundary (the step in flight is discarded)"
    typer.echo(f"run {run_id} cancelled (was {was}){note}")


def dlq(
    workflow: WorkflowFilter = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """List dead-lettered runs with the step that failed and its last error."""
    with opened(db) as surestep_app:
        parked = surestep_app.list_runs(State.DEAD_LETTER, workflow, limit)
        found = [surestep_app.get_run(run.id) for run in parked]
    if as_json:
        echo_json([dead_letter_summary(run) for run in found])
    elif not found:
        typer.echo("no dead-lettered runs")
    else:
        console = new_console()
        console.print(dead_letter_table(found))
        console.print(
            Text("fix the cause, then `surestep retry RUN_ID` redrives a run", style="dim")
        )


def send(
    run_id: RunId,
    name: Annotated[str, typer.Argument(help="The event's name.", show_default=False)],
    data: Annotated[str, typer.Option("--data", help="The event's payload, as JSON.")] = "null",
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Send an event to a run; a `wait_for_event(NAME)` receives its payload."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        fail(f"--data is not valid JSON ({exc}); quote it, e.g. --data '{{\"ok\": true}}'", 2)
    with opened(db) as surestep_app:
        surestep_app.send_event(run_id, name, payload)
    typer.echo(f"sent {name!r} to run {run_id}")
