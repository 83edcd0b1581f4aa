"""``surestep queues``: each declared queue's limits, what it runs and its due backlog,
as a table or as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
from rich.table import Table

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import AsJson, Db, opened
from surestep.render import echo_json, format_time, new_console
from surestep.storage.queues import QueueFigures, QueueStore


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    app.command()(queues)


def queues(as_json: AsJson = False, db: Db = DEFAULT_DATABASE_URL) -> None:
    """List the queues (declared by the workers that started): concurrency, runs
    running, due backlog and how long its oldest due run has waited."""
    with opened(db) as surestep_app:
        now = surestep_app.clock.now()
        figures = QueueStore(surestep_app.store).figures(now)
    print_queues(figures, now, as_json)


def queue_summary(q: QueueFigures, now: float) -> dict[str, Any]:
    return {
        "name": q.name,
        "concurrency": q.concurrency,
        "per_key_concurrency": q.per_key_concurrency,
        "rate_per_second": q.rate_per_second,
        "running": q.running,
        "due": q.due,
        "oldest_due_at": q.oldest_due_at,
        "oldest_due_seconds": None if q.oldest_due_at is None else max(0.0, now - q.oldest_due_at),
        "declared_at": q.updated_at,
    }


def print_queues(figures: Sequence[QueueFigures], now: float, as_json: bool) -> None:
    if as_json:
        echo_json([queue_summary(q, now) for q in figures])
        return
    console = new_console()
    if not figures:
        console.print("no queues: a worker declares its App's queues when it starts")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("queue", "running", "per key", "rate/s", "due backlog", "oldest due"):
        table.add_column(column)
    for q in figures:
        oldest = "-"
        if q.oldest_due_at is not None:
            oldest = f"{format_time(q.oldest_due_at)} ({max(0.0, now - q.oldest_due_at):.1f}s)"
        table.add_row(
            q.name,
            f"{q.running}/{q.concurrency}",
            "-" if q.per_key_concurrency is None else str(q.per_key_concurrency),
            "-" if q.rate_per_second is None else f"{q.rate_per_second:g}",
            str(q.due),
            oldest,
        )
    console.print(table)
