"""Renders review tasks, decisions, figures and exports for ``surestep review``.

Everything shown here is masked (``redact=`` fields read ``***``) unless the caller
asks for the task as stored (``surestep review show --reveal``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from surestep.errors import ReviewConflictError, ReviewValidationError, SurestepError
from surestep.records import EventRecord
from surestep.render import format_duration, format_time, new_table
from surestep.review.records import STEP_EXHAUSTED, Decision, ReviewStats, ReviewTask
from surestep.review.rows import masked
from surestep.review.service import public

STATE_STYLES: Final = {"open": "magenta", "decided": "green", "expired": "yellow"}
#: How much of a payload a listing shows.
PREVIEW: Final = 60
#: The columns of ``surestep review export --format csv``, in order.
EXPORT_COLUMNS: Final = (
    "task_id",
    "run_id",
    "kind",
    "workflow",
    "input",
    "proposal",
    "confidence",
    "outcome",
    "data",
    "reviewer",
    "comment",
    "state",
    "escalations",
    "created_at",
    "decided_at",
    "seconds_to_decision",
)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def preview(value: Any, width: int = PREVIEW) -> str:
    text = compact(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def who(task: ReviewTask) -> str:
    """Who the task is for: its assignee and groups (``anyone`` for neither)."""
    names = ([task.assignee] if task.assignee else []) + [f"group:{g}" for g in task.groups]
    return ", ".join(names) or "anyone"


def due_text(task: ReviewTask, now: float) -> Text:
    if task.due_at is None:
        return Text("")
    late = task.overdue(now)
    return Text(format_time(task.due_at) + (" (overdue)" if late else ""), "red" if late else "")


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, "dim"))


def tasks_table(tasks: Sequence[ReviewTask], now: float) -> Table:
    table = new_table(
        "task",
        "kind",
        "run",
        "state",
        "priority",
        "due",
        "for",
        "claimed by",
        "confidence",
        "payload",
        whole=("task", "state"),
    )
    for task in tasks:
        table.add_row(
            str(task.id),
            Text(task.kind),
            Text(task.run_id),
            state_text(task.state),
            str(task.priority),
            due_text(task, now),
            Text(who(task)),
            Text(task.claimed_by or ""),
            "" if task.confidence is None else f"{task.confidence:.2f}",
            Text(preview(masked(task.payload, task.sensitive))),
        )
    return table


def history_of(task: ReviewTask, events: Iterable[EventRecord]) -> list[EventRecord]:
    """The run's events about this task (opened, claimed, escalated, decided, ...)."""
    marks = (f"review task {task.id} ", f"review task {task.id}:")
    return [e for e in events if (e.reason or "").startswith(marks)]


def history_json(history: Sequence[EventRecord]) -> list[dict[str, Any]]:
    return [{"at": e.at, "actor": e.actor, "what": e.reason} for e in history]


def task_json(
    task: ReviewTask, candidates: Sequence[str], history: Sequence[EventRecord], reveal: bool
) -> dict[str, Any]:
    shown = task.__dict__.copy() if reveal else public(task)
    if not reveal:
        shown["context"] = masked(task.context, task.sensitive)
    return {
        **shown,
        "outcomes": list(task.outcomes),
        "candidates": list(candidates),
        "history": history_json(history),
    }


def form_fields(schema: dict[str, Any] | None) -> list[tuple[str, str, bool]]:
    """The top-level fields of a form's JSON Schema: (name, type, required)."""
    if not schema:
        return []
    required = set(schema.get("required", ()))
    fields = []
    for name, spec in (schema.get("properties") or {}).items():
        kinds = [s.get("type") for s in spec.get("anyOf", [spec]) if isinstance(s, dict)]
        kind = " | ".join(str(k) for k in kinds if k) or str(spec.get("format", "any"))
        fields.append((str(name), kind, name in required))
    return fields


def task_view(
    task: ReviewTask,
    candidates: Sequence[str],
    history: Sequence[EventRecord],
    now: float,
    reveal: bool,
) -> RenderableType:
    hide = () if reveal else task.sensitive
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, Text | str]] = [
        ("task", str(task.id)),
        ("kind", Text(task.kind)),
        ("run", Text(f"{task.run_id} ({task.workflow})")),
        ("state", state_text(task.state)),
        ("priority", str(task.priority)),
        ("for", Text(who(task))),
        ("may take it", Text(", ".join(candidates) or "nobody (settled)")),
        ("payload", Text(compact(masked(task.payload, hide)))),
    ]
    if task.proposal is not None:
        rows.append(("proposal", Text(compact(masked(task.proposal, hide)))))
    if task.confidence is not None:
        rows.append(("confidence", f"{task.confidence:.2f}"))
    rows += _context_rows(task, hide)
    for name, kind, required in form_fields(task.form):
        rows.append(("form field", Text(f"{name}: {kind}" + ("" if required else " (optional)"))))
    if task.instructions:
        rows.append(("instructions", Text(task.instructions)))
    rows.append(("outcomes", Text(" | ".join(task.outcomes))))
    rows += _timing_rows(task, now)
    rows += _decision_rows(task, hide)
    for key, value in rows:
        grid.add_row(key, value)
    events = new_table("time", "actor", "what", title="history", whole=("time",))
    for event in history:
        events.add_row(format_time(event.at), Text(event.actor), Text(event.reason or ""))
    return Group(grid, events)


def _context_rows(task: ReviewTask, hide: Sequence[str]) -> list[tuple[str, Text | str]]:
    """A step_exhausted task: the step, its inputs, its attempts and its last error."""
    if task.kind != STEP_EXHAUSTED or not task.context:
        return []
    context = masked(task.context, hide)
    error = context.get("error") or {}
    rows: list[tuple[str, Text | str]] = [
        ("step", Text(str(context.get("step", task.payload.get("step", ""))))),
        ("inputs", Text(compact(context.get("inputs", task.payload.get("inputs"))))),
        ("attempts", str(len(context.get("attempts", ())))),
    ]
    if error:
        message = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        rows.append(("last error", Text(message, style="red")))
    return rows


def _timing_rows(task: ReviewTask, now: float) -> list[tuple[str, Text | str]]:
    rows: list[tuple[str, Text | str]] = [("created", format_time(task.created_at))]
    if task.due_at is not None:
        rows.append(("due", due_text(task, now)))
    if task.level:
        rows.append(("escalations", str(task.level)))
    if task.escalate_to:
        rows.append(("escalates to", Text(", ".join(task.escalate_to))))
    if task.sla is not None:
        rows.append(("on expiry", Text(task.on_expiry)))
    if task.claimed_by:
        rows.append(("claimed by", Text(f"{task.claimed_by} at {format_time(task.claimed_at)}")))
    if task.follow_up_at is not None:
        rows.append(("follow up", format_time(task.follow_up_at)))
    return rows


def _decision_rows(task: ReviewTask, hide: Sequence[str]) -> list[tuple[str, Text | str]]:
    if task.decided_at is None:
        return []
    took = format_duration(task.decided_at - task.created_at)
    rows: list[tuple[str, Text | str]] = [
        ("outcome", Text(str(task.outcome), style="bold")),
        ("reviewer", Text(str(task.reviewer))),
        ("decided", f"{format_time(task.decided_at)} (after {took})"),
    ]
    if task.data is not None:
        rows.append(("data", Text(compact(masked(task.data, hide)))))
    if task.comment:
        rows.append(("comment", Text(task.comment)))
    return rows


def decided_line(decision: Decision[Any]) -> str:
    return f"review task {decision.task_id} decided: {decision.outcome} (by {decision.reviewer})"


def problem_text(exc: SurestepError) -> str:
    """An error as ``surestep review`` prints it: a conflict says its reason, a refused
    edit names each failing field."""
    if isinstance(exc, ReviewConflictError):
        return f"{exc} (conflict: {exc.reason})"
    if isinstance(exc, ReviewValidationError):
        # The message names the fields it can; list any it does not.
        unnamed = [f for f in exc.fields if f"{f['path']}:" not in str(exc)]
        return str(exc) + "".join(f"\n  {f['path']}: {f['message']}" for f in unnamed)
    return str(exc)


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def seconds(value: float | None) -> str:
    return "—" if value is None else format_duration(value)


def stats_view(stats: ReviewStats) -> RenderableType:
    figures = new_table("figure", "value", title=f"review tasks: {stats.kind or 'all kinds'}")
    for name, value in (
        ("open", str(stats.open)),
        ("overdue", str(stats.overdue)),
        ("decided", str(stats.decided)),
        ("expired", str(stats.expired)),
        ("override rate", rate(stats.override_rate)),
        ("escalation rate", rate(stats.escalation_rate)),
        ("SLA adherence", rate(stats.sla_adherence)),
        ("time to decision p50", seconds(stats.p50_seconds)),
        ("time to decision p95", seconds(stats.p95_seconds)),
    ):
        figures.add_row(name, value)
    if not stats.reviewers:
        return figures
    people = new_table("reviewer", "decided", "overrides", "p50", "p95", title="per reviewer")
    for name, mine in stats.reviewers.items():
        people.add_row(
            Text(name),
            str(mine.decided),
            str(mine.overrides),
            seconds(mine.p50_seconds),
            seconds(mine.p95_seconds),
        )
    return Group(figures, people)


def export_lines(records: Iterable[dict[str, Any]], form: str, header: bool) -> list[str]:
    """Export records as JSON lines, or as CSV rows (nested values as JSON) after a
    header line when ``header``."""
    if form == "jsonl":
        return [compact(record) + "\n" for record in records]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, extrasaction="ignore")
    if header:
        writer.writeheader()
    for record in records:
        writer.writerow(
            {k: compact(v) if isinstance(v, dict | list) else v for k, v in record.items()}
        )
    return [buffer.getvalue()]
