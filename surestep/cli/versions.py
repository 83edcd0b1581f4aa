"""``surestep versions``: per workflow version, its unfinished runs and whether a live
worker serves it, as a table or as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import AsJson, Db, opened
from surestep.render import STATE_STYLES, echo_json, new_console
from surestep.versions import VersionRecord


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    app.command()(versions)


def versions(as_json: AsJson = False, db: Db = DEFAULT_DATABASE_URL) -> None:
    """List, per workflow, the versions with unfinished runs and whether a live worker
    serves each.

    A version with runs and no live worker is stranded: deploy a worker that registers
    it, or use surestep.patched() in the new code.
    """
    with opened(db) as surestep_app:
        report = surestep_app.versions()
    print_versions(report, as_json)


def version_summary(record: VersionRecord) -> dict[str, Any]:
    return {
        "workflow": record.workflow,
        "version": record.version,
        "runs": {state.value: n for state, n in record.runs.items()},
        "unfinished": record.unfinished,
        "served": record.served,
        "workers": list(record.workers),
        "stranded": record.stranded,
    }


def versions_table(report: Sequence[VersionRecord]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("workflow", "version", "unfinished runs", "live workers"):
        table.add_column(column)
    for record in report:
        runs = Text(", ".join(f"{n} {state.value}" for state, n in record.runs.items()) or "none")
        if record.runs:
            runs.stylize(STATE_STYLES[next(iter(record.runs))])
        if record.served:
            workers = Text(str(len(record.workers)), style="green")
        elif record.stranded:
            workers = Text(f"none: {record.stranded} run(s) stranded", style="bold red")
        else:
            workers = Text("none", style="dim")
        table.add_row(record.workflow, record.version, runs, workers)
    return table


def print_versions(report: Sequence[VersionRecord], as_json: bool) -> None:
    if as_json:
        echo_json([version_summary(record) for record in report])
        return
    console = new_console()
    if not report:
        console.print("no unfinished runs and no live workers")
        return
    console.print(versions_table(report))
    if any(record.stranded for record in report):
        console.print(
            Text(
                "stranded runs wait for a worker that registers their version: deploy one "
                "(keep the old code until its runs are drained), or use surestep.patched()",
                style="dim",
            )
        )
