"""Inspecting and operating on runs: runs, show, retry, cancel, dlq, send."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import (
    AsJson,
    Db,
    Limit,
    RunId,
    WorkflowFilter,
    fail,
    opened,
    since_time,
)
from surestep.cli.llm import calls_table, print_budget, read_budget
from surestep.flow.store import MapProgress, MapStore
from surestep.llm.ledger import CallLedger
from surestep.redrive import RedriveOutcome
from surestep.render import (
    dead_letter_summary,
    dead_letter_table,
    echo_json,
    events_table,
    new_console,
    new_table,
    print_tracebacks,
    redrive_line,
    redrive_summary,
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
    parent: Annotated[
        str | None,
        typer.Option("--parent", help="Only this run's children (a map's in input order)."),
    ] = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """List runs, newest first."""
    with opened(db) as surestep_app:
        found = surestep_app.list_runs(state, workflow, limit, parent=parent)
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
    full: Annotated[
        bool, typer.Option("--full", help="Print each step's whole output, not its start.")
    ] = False,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Show a run: its inputs and outcome, its steps (with their outputs) and attempts, and
    its event log."""
    with opened(db) as surestep_app:
        run = surestep_app.get_run(run_id)
        ledger = CallLedger(surestep_app.store)
        model_calls, budget = ledger.calls(run_id), read_budget(ledger, run_id)
        maps = MapStore(surestep_app.store).progress(run_id)
    if as_json:
        echo_json(
            {
                **asdict(run),
                "model_calls": [asdict(call) for call in model_calls],
                "maps": [{**asdict(m), "held": m.held, "running": m.running} for m in maps],
            }
        )
        return
    console = new_console()
    console.print(run_header(run))
    console.print(steps_table(run.steps, full) if run.steps else Text("no steps yet", style="dim"))
    if maps:
        console.print(maps_table(maps))
    if model_calls:
        console.print(calls_table(model_calls))
        print_budget(console, model_calls, budget)
    print_tracebacks(console, run.steps, tracebacks)
    console.print(events_table(run.events))


def retry(
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(help="The runs to redrive.", show_default=False),
    ] = None,
    dead_letters: Annotated[
        bool,
        typer.Option(
            "--dead-letters", help="Every dead-lettered run (narrowed by the options below)."
        ),
    ] = False,
    workflow: WorkflowFilter = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only runs dead-lettered since: an age (2h, 30m, 7d) or a date/time "
            "(2024-05-01 or 2024-05-01T09:30).",
            show_default=False,
        ),
    ] = None,
    error: Annotated[
        str | None,
        typer.Option(help="Only runs whose error is of this type, e.g. ConnectionError."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be redriven; change nothing.")
    ] = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Redrive dead-lettered runs from their failed step; completed steps are not re-run.

    Give run ids, or --dead-letters for every dead letter (narrowed by --workflow,
    --since, --error). One run that cannot be redriven does not stop the rest.
    """
    if bool(run_ids) == dead_letters:
        fail("give RUN_ID ... or --dead-letters (not both, not neither)", 2)
    if run_ids and (workflow, since, error) != (None, None, None):
        fail("--workflow, --since and --error narrow --dead-letters; drop them or the ids", 2)
    after = None if since is None else since_time(since)
    with opened(db) as surestep_app, _progress_bar() as advance:
        outcomes = surestep_app.retry_many(
            run_ids or None,
            workflow=workflow,
            since=after,
            error=error,
            dry_run=dry_run,
            progress=advance,
        )
    if run_ids and len(run_ids) == 1 and not dry_run and outcomes[0].error:
        fail(outcomes[0].error)  # one run: the plain error, as any command's
    for outcome in outcomes:
        typer.echo(redrive_line(outcome))
    failed = sum(1 for outcome in outcomes if not outcome.ok)
    if len(outcomes) != 1 or dry_run:
        typer.echo(redrive_summary(outcomes, dry_run), err=True)
    if failed:
        raise typer.Exit(1)


@contextmanager
def _progress_bar() -> Iterator[Callable[[RedriveOutcome, int], None]]:
    """A progress bar on stderr (shown only on a terminal) advanced once per run."""
    with Progress(
        TextColumn("redriving"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("redrive", total=None)

        def advance(_: RedriveOutcome, total: int) -> None:
            bar.update(task, total=total, advance=1)

        yield advance


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


def maps_table(maps: list[MapProgress]) -> Table:
    """A run's maps: how far each has got."""
    table = new_table(
        "pos", "map of", "children", "done", "failed", "running", "held", title="maps"
    )
    for m in maps:
        table.add_row(
            str(m.position),
            m.workflow,
            str(m.total),
            str(m.done - m.failed),
            str(m.failed),
            str(m.running),
            str(m.held),
        )
    return table
