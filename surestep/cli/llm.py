"""``surestep costs``, ``surestep calls`` and ``surestep budget``: what model calls cost,
run by run and workflow by workflow, and a run's budget raised to let it go on."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from surestep.app import DEFAULT_DATABASE_URL
from surestep.cli.common import (
    AsJson,
    Db,
    RunId,
    WorkflowFilter,
    fail,
    opened,
    since_time,
)
from surestep.errors import CorruptRecordError
from surestep.llm.ledger import CallLedger, CostLine, ModelCall
from surestep.render import echo_json, format_duration, format_time, new_console, new_table


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    for command in (costs, calls, budget):
        app.command()(command)


def costs(
    workflow: WorkflowFilter = None,
    since: Annotated[
        str,
        typer.Option("--since", help="Calls made since: an age (24h, 7d) or a date/time."),
    ] = "7d",
    steps: Annotated[bool, typer.Option("--steps", help="A line per LLM step.")] = False,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """What model calls cost, by workflow (or step): every call (repairs, fallbacks and
    faulted calls included), what was spent on replies not used, and cost per successful
    run."""
    after = since_time(since).timestamp()
    with opened(db) as surestep_app:
        lines = CallLedger(surestep_app.store).costs(after, workflow, by_step=steps)
    if as_json:
        echo_json([{**asdict(line), "per_success_usd": line.per_success_usd} for line in lines])
        return
    if not lines:
        typer.echo(f"no model calls since {format_time(after)}")
        return
    new_console().print(costs_table(lines, steps))


def costs_table(lines: list[CostLine], steps: bool = False) -> Table:
    table = new_table(
        "workflow",
        *(["step"] if steps else []),
        "calls",
        "tokens in",
        "tokens out",
        "cost",
        "not used",
        "runs",
        "succeeded",
        "per success",
    )
    for line in lines:
        per = line.per_success_usd
        table.add_row(
            line.workflow,
            *([line.step or ""] if steps else []),
            str(line.calls),
            f"{line.input_tokens:,}",
            f"{line.output_tokens:,}",
            usd(line.cost_usd),
            usd(line.wasted_usd),
            str(line.runs),
            str(line.succeeded),
            "-" if per is None else usd(per),
        )
    return table


def calls(run_id: RunId, as_json: AsJson = False, db: Db = DEFAULT_DATABASE_URL) -> None:
    """A run's model calls, in order: model, outcome, tokens, cost, latency."""
    with opened(db) as surestep_app:
        ledger = CallLedger(surestep_app.store)
        found = ledger.calls(run_id)
        budget = read_budget(ledger, run_id)
    if as_json:
        budget_usd, spent = (None, None) if isinstance(budget, str) else budget
        echo_json(
            {
                "budget_usd": budget_usd,
                "spent_usd": spent,
                **({"budget_problem": budget} if isinstance(budget, str) else {}),
                "calls": [asdict(c) for c in found],
            }
        )
        return
    console = new_console()
    console.print(calls_table(found) if found else Text("no model calls", style="dim"))
    print_budget(console, found, budget)


def read_budget(ledger: CallLedger, run_id: str) -> tuple[float | None, float] | str:
    """The run's (budget, spent), or why it cannot be read: a corrupt row is shown, not
    a reason for the listing to fail."""
    try:
        return ledger.budget(run_id)
    except CorruptRecordError as exc:
        return str(exc)


def print_budget(
    console: Console, found: list[ModelCall], budget: tuple[float | None, float] | str
) -> None:
    """The budget line under a calls table, and each row that could not be read."""
    for call in found:
        for problem in call.problems:
            console.print(Text(problem, style="bold red"))
    if isinstance(budget, str):
        console.print(Text(f"budget: {budget}", style="bold red"))
    else:
        console.print(budget_line(*budget))


def calls_table(found: list[ModelCall]) -> Table:
    table = new_table(
        "pos",
        "try",
        "#",
        "step",
        "model",
        "outcome",
        "tokens",
        "cost",
        "latency",
        "confidence",
        title="model calls",
    )
    for call in found:
        outcome = Text(call.outcome, style="green" if call.chosen else "yellow")
        if call.cached:
            outcome.append(" (cached)", style="dim")
        if call.problems:
            outcome.append(" (corrupt)", style="bold red")
        table.add_row(
            str(call.position),
            str(call.attempt),
            str(call.seq),
            call.step,
            call.model_ref,
            outcome,
            f"{call.input_tokens}/{call.output_tokens}",
            usd(call.cost_usd) if call.priced or call.cached else Text("unpriced", style="dim"),
            format_duration(call.latency),
            "-" if call.confidence is None else f"{call.confidence:.2f}",
        )
    return table


def budget_line(budget_usd: float | None, spent: float) -> Text:
    if budget_usd is None:
        return Text(f"spent {usd(spent)}; no budget", style="dim")
    style = "red" if spent >= budget_usd else "dim"
    return Text(f"spent {usd(spent)} of a {usd(budget_usd)} budget", style=style)


def budget(
    run_id: RunId,
    usd_amount: Annotated[
        float | None,
        typer.Option("--usd", help="The run's new budget in USD.", show_default=False),
    ] = None,
    remove: Annotated[bool, typer.Option("--none", help="Take the budget away.")] = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Give a run another budget for its model calls; then `surestep retry` it if a call
    was stopped by the old one."""
    if (usd_amount is None) == (not remove):
        fail("give --usd N (the new budget) or --none (no budget)", 2)
    with opened(db) as surestep_app:
        ledger = CallLedger(surestep_app.store)
        ledger.set_budget(run_id, None if remove else usd_amount)
        budget = read_budget(ledger, run_id)
    if isinstance(budget, str):  # set, but what was spent cannot be read
        fail(f"run {run_id}: the budget was set, but {budget}")
    typer.echo(f"run {run_id}: {budget_line(*budget).plain}")


def usd(amount: float) -> str:
    if not math.isfinite(amount):  # a corrupt cost in the sum (a hand edit)
        return f"{amount} (corrupt)"
    return f"${amount:,.4f}" if amount < 1 else f"${amount:,.2f}"
