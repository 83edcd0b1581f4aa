"""Review tasks from the command line: ``surestep review ...`` and ``surestep audit``.

A thin adapter over ``app.reviews``: list and show tasks, claim, release, reassign and
decide them, export decisions and print figures; ``surestep audit verify`` checks the
decision log's hash chains. ``--as`` names the reviewer (the OS user by default).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import AsJson, Db, fail, opened, os_user, since_time
from surestep.cli.review_render import (
    decided_line,
    export_lines,
    history_of,
    problem_text,
    stats_view,
    task_json,
    task_view,
    tasks_table,
)
from surestep.errors import SurestepError
from surestep.render import echo_json, new_console
from surestep.review.records import Decision
from surestep.review.service import public

review_app = typer.Typer(
    name="review", help="List, show and decide human review tasks.", no_args_is_help=True
)
audit_app = typer.Typer(name="audit", help="Check the decision audit log.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``review`` and ``audit`` groups to the ``surestep`` command."""
    app.add_typer(review_app)
    app.add_typer(audit_app)


class TaskStateFilter(StrEnum):
    open = "open"
    decided = "decided"
    expired = "expired"
    cancelled = "cancelled"
    any = "any"


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


TaskId = Annotated[
    int, typer.Argument(help="The review task's id.", min=1, metavar="TASK_ID", show_default=False)
]
TaskIds = Annotated[
    list[int],
    typer.Argument(help="Review task ids.", min=1, metavar="TASK_ID", show_default=False),
]
Reviewer = Annotated[
    str | None,
    typer.Option("--as", help="Who acts (default: your OS user name).", show_default=False),
]
Comment = Annotated[str | None, typer.Option(help="Why; kept with the decision.")]
Data = Annotated[
    str | None, typer.Option("--data", help="The decision's data, as JSON.", show_default=False)
]
Kind = Annotated[str | None, typer.Option(help="Only tasks of this kind.")]
Since = Annotated[
    str | None,
    typer.Option(help="An age (7d, 12h) or a date/time (2026-01-01).", show_default=False),
]


@contextmanager
def _errors() -> Iterator[None]:
    """The library's errors as ``error: ...``, naming a conflict's reason and the fields
    a refused edit got wrong."""
    try:
        yield
    except SurestepError as exc:
        fail(problem_text(exc))


def _json(text: str | None, option: str = "--data") -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option} is not valid JSON ({exc}); quote it, e.g. {option} '{{\"total\": 10}}'", 2)


def _since(text: str | None) -> datetime | None:
    """``--since``, if given (see :func:`surestep.cli.common.since_time`)."""
    return None if text is None else since_time(text)


@review_app.command("list")
def list_tasks(
    assignee: Annotated[
        str | None, typer.Option(help="The inbox of this user (with --group: and theirs).")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option(help="Tasks of this group (repeat for several).")
    ] = None,
    kind: Kind = None,
    state: Annotated[TaskStateFilter, typer.Option(help="Tasks in this state.")] = (
        TaskStateFilter.open
    ),
    overdue: Annotated[bool, typer.Option("--overdue", help="Only tasks past due.")] = False,
    run: Annotated[str | None, typer.Option("--run", help="Only tasks of this run.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 50,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """List review tasks, highest priority first (sensitive fields masked).

    With --assignee and/or --group: the open tasks they may take (an inbox).
    """
    if run is not None and (assignee is not None or group):
        fail("--run lists every task of a run; drop --assignee and --group", 2)
    with opened(db) as surestep_app, _errors():
        found = surestep_app.reviews.list(
            assignee=assignee,
            groups=group or (),
            kind=kind,
            state=None if state == TaskStateFilter.any else state.value,
            overdue=True if overdue else None,
            run_id=run,
            limit=limit,
        )
        now = surestep_app.clock.now()
    if as_json:
        echo_json([public(task) for task in found])
    elif not found:
        typer.echo("no review tasks")
    else:
        new_console().print(tasks_table(found, now))


@review_app.command()
def show(
    task_id: TaskId,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Show fields marked sensitive, unmasked.")
    ] = False,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Show a task: payload, proposal, confidence, form, instructions, who may take it,
    and its history."""
    with opened(db) as surestep_app, _errors():
        task = surestep_app.reviews.get(task_id)
        candidates = surestep_app.reviews.candidates(task.id)
        try:
            history = history_of(task, surestep_app.get_run(task.run_id).events)
        except SurestepError:  # the run was pruned: the task is still worth showing
            history = []
        now = surestep_app.clock.now()
    if as_json:
        echo_json(task_json(task, candidates, history, reveal))
    else:
        new_console().print(task_view(task, candidates, history, now, reveal))


@review_app.command()
def claim(task_id: TaskId, by: Reviewer = None, db: Db = DEFAULT_DATABASE_URL) -> None:
    """Claim a task, so others see you are handling it."""
    who = by or os_user()
    with opened(db) as surestep_app, _errors():
        surestep_app.reviews.claim(task_id, by=who)
    typer.echo(f"review task {task_id} claimed by {who}")


@review_app.command()
def release(
    task_id: TaskId,
    by: Reviewer = None,
    force: Annotated[
        bool, typer.Option("--force", help="Release someone else's claim (operators).")
    ] = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Give a claimed task back."""
    who = by or os_user()
    with opened(db) as surestep_app, _errors():
        surestep_app.reviews.release(task_id, by=who, force=force)
    typer.echo(f"review task {task_id} released by {who}")


def _decide_each(
    task_ids: list[int], outcome: str, by: str | None, comment: str | None, db: str
) -> None:
    """Decide several tasks alike; report each, and exit 1 if any was not decided."""
    who = by or os_user()
    items = [{"task_id": t, "outcome": outcome, "comment": comment} for t in task_ids]
    with opened(db) as surestep_app:
        results = surestep_app.reviews.decide_many(items, by=who)
    failed = 0
    for result in results:
        if isinstance(result, Decision):
            typer.echo(decided_line(result))
        else:
            failed += 1
            typer.echo(f"error: {problem_text(result)}", err=True)
    if failed:
        if len(task_ids) > 1:
            typer.echo(f"{failed} of {len(task_ids)} task(s) were not decided", err=True)
        raise typer.Exit(1)


@review_app.command()
def approve(
    task_ids: TaskIds, by: Reviewer = None, comment: Comment = None, db: Db = DEFAULT_DATABASE_URL
) -> None:
    """Approve tasks (the proposal, else the payload); each run resumes."""
    _decide_each(task_ids, "approve", by, comment, db)


@review_app.command()
def reject(
    task_ids: TaskIds, by: Reviewer = None, comment: Comment = None, db: Db = DEFAULT_DATABASE_URL
) -> None:
    """Reject tasks; each run resumes with the rejection."""
    _decide_each(task_ids, "reject", by, comment, db)


def _decide_one(
    task_id: int, outcome: str, by: str | None, data: Any, comment: str | None, db: str
) -> None:
    who = by or os_user()
    with opened(db) as surestep_app, _errors():
        decision = surestep_app.reviews.decide(
            task_id,
            outcome,
            by=who,
            data=data,
            comment=comment,
        )
    typer.echo(decided_line(decision))


@review_app.command()
def edit(
    task_id: TaskId,
    data: Annotated[str, typer.Option("--data", help="The corrected data, as JSON.")],
    by: Reviewer = None,
    comment: Comment = None,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Decide a task with corrected data; it must fit the task's form."""
    _decide_one(task_id, "edit", by, _json(data), comment, db)


@review_app.command()
def decide(
    task_id: TaskId,
    outcome: Annotated[
        str,
        typer.Argument(
            help="approve|reject|edit; for step_exhausted tasks retry|output|dead_letter|"
            "cancel; for run_deadline tasks resume|fail|cancel.",
            show_default=False,
        ),
    ],
    by: Reviewer = None,
    data: Data = None,
    comment: Comment = None,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Decide a task with any outcome its kind takes (`surestep review show` lists them).

    retry takes --data '{"inputs": {...}}' (optional); output takes the step's return value.
    """
    _decide_one(task_id, outcome, by, _json(data), comment, db)


@review_app.command()
def reassign(
    task_id: TaskId,
    to: Annotated[
        list[str],
        typer.Option(
            "--to", help="A user, or group:NAME (repeat for several).", show_default=False
        ),
    ],
    by: Reviewer = None,
    reason: Annotated[str, typer.Option(help="Why; kept in the run's log.")] = "reassigned",
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Give an open task to another user and/or groups (its claim is dropped)."""
    with opened(db) as surestep_app, _errors():
        task = surestep_app.reviews.reassign(
            task_id,
            to=to,
            by=by or os_user(),
            reason=reason,
        )
        now_for = surestep_app.reviews.candidates(task.id)
    typer.echo(f"review task {task.id} reassigned to {', '.join(now_for)}")


@review_app.command()
def export(
    since: Since = None,
    kind: Kind = None,
    form: Annotated[ExportFormat, typer.Option("--format", help="JSON lines or CSV.")] = (
        ExportFormat.jsonl
    ),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here, not to stdout.")
    ] = None,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Write one record per decided task (input, proposal, confidence, outcome, data,
    reviewer, timings), sensitive fields masked: for retraining and threshold tuning."""
    start = _since(since)
    count = 0
    with opened(db) as surestep_app, _errors(), _sink(output) as out:
        # Streamed record by record: an export may be larger than memory.
        for record in surestep_app.reviews.export(kind=kind, since=start):
            count += 1
            out.writelines(export_lines([record], form.value, header=count == 1))
        if count == 0:
            out.writelines(export_lines([], form.value, header=True))
    if output is not None:
        typer.echo(f"exported {count} decision(s) to {output}", err=True)


@contextmanager
def _sink(output: Path | None) -> Iterator[IO[str]]:
    if output is None:
        yield sys.stdout
        return
    try:
        with output.open("w", encoding="utf-8", newline="") as file:
            yield file
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")


@review_app.command()
def stats(
    kind: Kind = None, since: Since = None, as_json: AsJson = False, db: Db = DEFAULT_DATABASE_URL
) -> None:
    """Open, overdue and decided tasks; override, escalation and SLA rates; time to
    decision p50/p95; per reviewer."""
    start = _since(since)
    with opened(db) as surestep_app, _errors():
        figures = surestep_app.reviews.stats(kind=kind, since=start)
    if as_json:
        echo_json(asdict(figures))
    else:
        new_console().print(stats_view(figures))


@audit_app.command()
def verify(
    run_id: Annotated[
        str | None, typer.Argument(help="Only this run's decisions.", show_default=False)
    ] = None,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Check the decision log's hash chains: an edited, removed or reordered decision
    record is reported, and the command exits 1."""
    with opened(db) as surestep_app, _errors():
        checked, problems = surestep_app.reviews.verify(run_id)
    for problem in problems:
        where = "" if problem.seq is None else f" record {problem.seq}"
        typer.echo(f"run {problem.run_id}{where}: {problem.message}")
    if problems:
        fail(f"{len(problems)} problem(s) in {checked} decision record(s) checked")
    typer.echo(f"{checked} decision record(s) checked: the log is intact")
