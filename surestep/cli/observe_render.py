"""Renders the cluster-wide figures of ``surestep stats`` and ``surestep top`` as tables."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from surestep.observe.cluster import UNFINISHED


def _num(value: float | None, unit: str = "", digits: int = 2, prefix: str = "") -> str:
    return "-" if value is None else f"{prefix}{value:.{digits}f}{unit}"


def frame(data: dict[str, Any]) -> Group:
    """The figures as tables: per workflow, per step, per review kind."""
    window = f"last {data['window_seconds']:g} s"
    runs = Table(title=f"runs ({window})", show_edge=False, pad_edge=False)
    for column in (
        "workflow", *UNFINISHED, "finished", "per min", "oldest due", "review needed",
    ):  # fmt: skip
        runs.add_column(column, justify="left" if column == "workflow" else "right")
    for name, w in data["workflows"].items():
        runs.add_row(
            name,
            *(str(w["runs"][s]) for s in UNFINISHED),
            str(w["finished"]),
            _num(w["throughput_per_minute"]),
            _num(w["oldest_due_seconds"], " s", 1),
            _num(w["review_needed"]),
        )
    steps = Table(title=f"steps ({window})", show_edge=False, pad_edge=False)
    for column in ("workflow", "step", "attempts", "retries", "failed", "p50", "p95"):
        steps.add_column(column, justify="left" if column in ("workflow", "step") else "right")
    for s in data["steps"]:
        steps.add_row(
            s["workflow"],
            s["step"],
            str(s["attempts"]),
            str(s["retries"]),
            str(s["failed"]),
            _num(s["p50_seconds"], " s", 3),
            _num(s["p95_seconds"], " s", 3),
        )
    reviews = Table(title=f"reviews ({window})", show_edge=False, pad_edge=False)
    for column in ("kind", "open", "overdue", "decided", "override", "escalation", "SLA met"):
        reviews.add_column(column, justify="left" if column == "kind" else "right")
    kinds = sorted(set(data["review_open"]) | set(data["reviews"]))
    for kind in kinds:
        r = data["reviews"].get(kind, {})
        reviews.add_row(
            kind,
            str(data["review_open"].get(kind, 0)),
            str(data["review_overdue"].get(kind, 0)),
            str(r.get("decided", 0)),
            _num(r.get("override_rate")),
            _num(r.get("escalation_rate")),
            _num(r.get("sla_adherence")),
        )
    recovery = _num(data["auto_recovery"])
    footer = (
        f"auto-recovery {recovery} ({data['recovered_attempts']} of"
        f" {data['failed_attempts']} failed attempts)"
    )
    return Group(runs, steps, reviews, footer, *model_tables(data["llm"], window))


def model_tables(llm: dict[str, Any], window: str) -> list[RenderableType]:
    """Model calls and cost per workflow, confidence per (step, model), and drift; none
    when no model was called within the window and nothing was judged."""
    tables: list[RenderableType] = []
    if llm["calls"]:
        tables.append(_calls_table(llm, window))
    if llm["confidence"] or llm["drift"]:
        tables.append(_confidence_table(llm, window))
    return tables


def _calls_table(llm: dict[str, Any], window: str) -> Table:
    table = Table(title=f"model calls ({window})", show_edge=False, pad_edge=False)
    text = ("workflow", "model", "outcomes")
    columns = ("workflow", "model", "calls", "outcomes", "cost", "successful runs", "per success")
    for column in columns:
        table.add_column(column, justify="left" if column in text else "right")
    for workflow, models in llm["calls"].items():
        for i, (model, outcomes) in enumerate(models.items()):
            first = i == 0  # the cost columns are per workflow: on its first line only
            table.add_row(
                workflow if first else "",
                model,
                str(sum(outcomes.values())),
                ", ".join(f"{o} {n}" for o, n in outcomes.items()),
                _num(llm["cost_usd"].get(workflow), digits=4, prefix="$") if first else "",
                str(llm["succeeded_runs"].get(workflow, 0)) if first else "",
                _num(llm["cost_per_success_usd"].get(workflow), digits=4, prefix="$")
                if first
                else "",
            )
    return table


def _confidence_table(llm: dict[str, Any], window: str) -> Table:
    s = llm["drift_settings"]
    title = (
        f"confidence of answers used ({window}); drift: last {s['recent_seconds']:g} s"
        f" against the {s['reference_seconds']:g} s before"
    )
    table = Table(title=title, show_edge=False, pad_edge=False)
    columns = ("step", "model", "answers", "mean", "recent", "reference", "PSI", "KS", "drift")
    for column in columns:
        table.add_column(column, justify="left" if column in ("step", "model") else "right")
    drift = {(r["step"], r["model"]): r for r in llm["drift"]}
    confidence = {(step, m): c for step, ms in llm["confidence"].items() for m, c in ms.items()}
    for key in sorted(set(confidence) | set(drift)):
        c, r = confidence.get(key, {}), drift.get(key)
        verdict = (
            "-" if r is None else {None: "too few", True: "DRIFTED", False: "stable"}[r["drifted"]]
        )
        table.add_row(
            *key,
            str(c.get("answers", 0)),
            _num(c.get("mean")),
            "-" if r is None else str(r["recent_n"]),
            "-" if r is None else str(r["reference_n"]),
            _num(None if r is None else r["psi"], digits=3),
            _num(None if r is None else r["ks"], digits=3),
            verdict,
        )
    return table
