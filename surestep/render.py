"""Renders runs, steps and events for the terminal (rich tables) and for scripts (JSON)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, Final

import typer
from rich.console import Console
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from surestep.records import AttemptRecord, EventRecord, RunRecord, StepRecord
from surestep.redrive import RedriveOutcome
from surestep.states import State

STATE_STYLES: Final[dict[State, str]] = {
    State.PENDING: "cyan",
    State.RUNNING: "blue",
    State.WAITING: "yellow",
    State.NEEDS_REVIEW: "magenta",
    State.SUCCESS: "green",
    State.FAILED: "red",
    State.DEAD_LETTER: "bold red",
    State.CANCELLED: "dim",
}


# Piped output (not a terminal, and no $COLUMNS) is for grep and files: rich would wrap
# it at 80 columns, so give it room for any line instead.
PIPED_WIDTH: Final = 1000
# How much of a step's output `surestep show` prints without --full.
OUTPUT_PREVIEW: Final = 60


def new_console() -> Console:
    """A console as wide as the terminal; when piped, one that does not wrap lines."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console


def echo_json(data: Any) -> None:
    # States are str enums, so they encode as their values; times stay epoch seconds.
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def state_text(state: State | str | None) -> Text:
    if state is None:
        return Text("—", style="dim")
    if not isinstance(state, State):  # a corrupt record: shown as stored
        return Text(f"{state} (corrupt)", style="bold red")
    return Text(state.value, style=STATE_STYLES.get(state, ""))


def format_time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    try:
        return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):  # past what a date can show: as stored
        return f"{epoch!r} (not a date)"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def error_summary(error: dict[str, Any] | None, width: int = 80) -> str:
    lines = error_text(error).splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def corrupt_summary(run: RunRecord, width: int = 80) -> str:
    """``corrupt: ...`` for a run with a record that cannot be decoded, else ''."""
    if not run.corrupt:
        return ""
    first = f"corrupt: {run.corrupt[0].removeprefix('corrupt record: ')}"
    return first if len(first) <= width else first[: width - 1] + "…"


def run_summary(run: RunRecord) -> dict[str, Any]:
    """A run as JSON, without the steps and events that listings do not load."""
    data = asdict(run)
    del data["steps"], data["events"]
    return data


def new_table(*headers: str, title: str | None = None, whole: Sequence[str] = ()) -> Table:
    """A table whose cells wrap rather than hide text; ``whole`` columns never wrap."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header, no_wrap=header in whole, overflow="fold")
    return table


def runs_table(found: Sequence[RunRecord]) -> Table:
    table = new_table(
        "run", "workflow", "state", "created", "updated", "error", whole=("run", "state")
    )
    for run in found:
        table.add_row(
            Text(run.id),
            Text(f"{run.workflow}@{run.workflow_version}"),
            state_text(run.state),
            format_time(run.created_at),
            format_time(run.updated_at),
            Text(corrupt_summary(run) or error_summary(run.error)),
        )
    return table


def run_header(run: RunRecord) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, Text | str]] = [
        ("run", Text(run.id)),
        ("workflow", Text(run.workflow)),
        ("version", Text(run.workflow_version)),
        ("state", state_text(run.state)),
        ("inputs", Text(json.dumps(run.inputs, ensure_ascii=False, default=str))),
    ]
    if run.state == State.SUCCESS:
        rows.append(("output", Text(json.dumps(run.output, ensure_ascii=False, default=str))))
    if run.error:
        rows.append(("error", Text(error_text(run.error), style="red")))
    if run.lease_owner:
        rows.append(("lease owner", Text(run.lease_owner)))
    if run.available_at is not None and run.state in (State.PENDING, State.WAITING):
        rows.append(("due", format_time(run.available_at)))
    if run.parent_id:
        rows.append(("parent", Text(run.parent_id)))
    if run.waiting_for:
        rows.append(("waiting for", Text(", ".join(run.waiting_for))))
    if run.compensating is not None:
        rows.append(("compensating", Text(f"undoing completed steps, then {run.compensating}")))
    if run.deadline_at is not None:
        rows.append(("deadline", f"{format_time(run.deadline_at)} (then {run.on_deadline})"))
    if run.deadline_breached_at is not None:
        rows.append(("deadline breached", Text(format_time(run.deadline_breached_at), "red")))
    rows += [("created", format_time(run.created_at)), ("updated", format_time(run.updated_at))]
    for problem in run.corrupt:
        rows.append(("corrupt", Text(problem, style="bold red")))
    if run.corrupt:
        rows.append(
            (
                "",
                Text(
                    "surestep cannot decode these records, so they are left out or shown "
                    "empty above. Repair the rows by hand (or restore them from a backup), "
                    f"then `surestep retry {run.id}` if the run is dead-lettered",
                    style="red",
                ),
            )
        )
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def last_failure(step: StepRecord) -> dict[str, Any] | None:
    failed = [a.error for a in step.attempt_records if a.error]
    return failed[-1] if failed else step.error


def steps_table(steps: Sequence[StepRecord], full: bool = False) -> Table:
    """The run's steps in order, each with its output (cut to a preview unless ``full``);
    a step's compensation (kept at position -(p+1)) shows in its own row's ``undo``
    column rather than as a row of its own."""
    undo = {-(s.position + 1): s for s in steps if s.position < 0}
    table = new_table(
        "#",
        "step",
        "state",
        "attempts",
        "duration",
        "output",
        "last error",
        "next attempt",
        "undo",
        title="steps",
        whole=("state",),
    )
    for step in (s for s in steps if s.position >= 0):
        compensation = undo.get(step.position)
        duration = None if step.finished_at is None else step.finished_at - step.started_at
        waiting = step.state == State.WAITING
        table.add_row(
            str(step.position),
            Text(step.name),
            step_state_text(step),
            str(step.attempts),
            "" if duration is None else format_duration(duration),
            Text(output_text(step, full)),
            Text(error_summary(last_failure(step))),
            format_time(step.next_attempt_at) if waiting else "",
            undo_text(step, compensation),
        )
    return table


def timed_out(step: StepRecord) -> bool:
    """A wait for an event that ended because its timeout passed, not because one came.

    A delivered event is stored as ``{"event", "payload"}``, so a wait that succeeded
    with no output timed out (returning None); one that failed raised EventTimeoutError.
    """
    if not step.name.startswith("event:"):
        return False
    if step.state == State.SUCCESS:
        return step.output is None
    kind = str((step.error or {}).get("type", ""))
    return step.state == State.FAILED and kind.endswith("EventTimeoutError")


def step_state_text(step: StepRecord) -> Text:
    return Text("timed out", style="yellow") if timed_out(step) else state_text(step.state)


def output_text(step: StepRecord, full: bool) -> str:
    """A step's output as JSON: all of it with ``full``, else its first characters."""
    if step.state != State.SUCCESS or timed_out(step):
        return ""
    text = json.dumps(step.output, ensure_ascii=False, default=str)
    if full or len(text) <= OUTPUT_PREVIEW:
        return text
    return text[: OUTPUT_PREVIEW - 1] + "…"


def undo_text(step: StepRecord, compensation: StepRecord | None) -> Text:
    """Whether a step with a compensation was undone: ``refund: success`` and the like."""
    if compensation is not None:
        done = compensation.state == State.SUCCESS
        label = "undone" if done else str(compensation.state)
        style = "green" if done else STATE_STYLES.get(compensation.state, "")
        error = error_summary(last_failure(compensation), 40)
        return Text(f"{compensation.name}: {label}" + (f" ({error})" if error else ""), style)
    if step.compensation is not None and step.state == State.SUCCESS:
        return Text(f"{step.compensation}: not undone", style="dim")
    return Text("")


def print_tracebacks(console: Console, steps: Sequence[StepRecord], show: bool) -> None:
    failed: list[tuple[StepRecord, AttemptRecord, str]] = [
        (step, attempt, str(attempt.error["traceback"]))
        for step in steps
        for attempt in step.attempt_records
        if attempt.error and attempt.error.get("traceback")
    ]
    if not failed:
        return
    if not show:
        console.print(
            Text(
                f"{len(failed)} failed attempt(s) have a traceback; add --tracebacks to see them",
                style="dim",
            )
        )
        return
    for step, attempt, traceback in failed:
        title = f"step {step.position} {step.name}, attempt {attempt.attempt}"
        # A rule spans the console: across a terminal, not across a piped line's room.
        console.print(Rule(Text(title), align="left") if console.is_terminal else f"── {title}")
        console.print(Text(traceback.rstrip()))


def event_row(event: EventRecord) -> tuple[str, Text, Text, str, Text, str]:
    if event.position is None:
        where = "run"
    elif event.position < 0:  # the compensation of step -(position + 1)
        where = f"undo #{-event.position - 1} {event.step}"
    else:
        where = f"{event.position} {event.step}"
    change = Text.assemble(state_text(event.from_state), " → ", state_text(event.to_state))
    return (
        format_time(event.at),
        Text(where),
        change,
        event.actor,
        Text(event.reason or ""),
        "" if event.attempt is None else str(event.attempt),
    )


def events_table(events: Sequence[EventRecord]) -> Table:
    table = new_table(
        "time", "step", "change", "actor", "reason", "attempt", title="events", whole=("time",)
    )
    for event in events:
        table.add_row(*event_row(event))
    return table


def dead_step(run: RunRecord) -> StepRecord | None:
    dead = [step for step in run.steps if step.state == State.DEAD_LETTER]
    return dead[-1] if dead else None


def dead_letter_summary(run: RunRecord) -> dict[str, Any]:
    data = run_summary(run)
    step = dead_step(run)
    if step is None:
        data["dead_letter_step"] = None
    else:
        data["dead_letter_step"] = asdict(step)
        del data["dead_letter_step"]["attempt_records"]
    return data


def dead_letter_table(found: Sequence[RunRecord]) -> Table:
    table = new_table(
        "run", "workflow", "step", "attempts", "last error", "dead-lettered", whole=("run",)
    )
    for run in found:
        step = dead_step(run)
        table.add_row(
            Text(run.id),
            Text(f"{run.workflow}@{run.workflow_version}"),
            Text("" if step is None else f"{step.position} {step.name}"),
            "" if step is None else str(step.attempts),
            Text(
                corrupt_summary(run)
                or error_summary(run.error if step is None else last_failure(step))
            ),
            format_time(run.updated_at),
        )
    return table


def redrive_line(outcome: RedriveOutcome) -> str:
    """One run of ``surestep retry``: what was (or would be) redriven, or why not."""
    if outcome.error is not None:
        return f"run {outcome.run_id}: not redriven: {outcome.error}"
    steps = ", ".join(outcome.steps) if outcome.steps else "none"
    if outcome.dry_run:
        return f"run {outcome.run_id}: would be redriven; step(s): {steps}"
    return f"run {outcome.run_id} is pending again; redriven step(s): {steps}"


def redrive_summary(outcomes: Sequence[RedriveOutcome], dry_run: bool) -> str:
    done = sum(1 for outcome in outcomes if outcome.ok)
    failed = len(outcomes) - done
    verb = "would redrive" if dry_run else "redrove"
    tail = f"; {failed} could not be redriven" if failed else ""
    return f"{verb} {done} of {len(outcomes)} run(s){tail}"
