"""How review tasks are stored: the columns, and a row turned into a ``ReviewTask``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from surestep.review.records import ReviewTask

TASK_COLUMNS = (
    "id, run_id, position, kind, workflow, state, payload, sensitive, proposal, confidence,"
    " form, instructions, context, assignee, groups, escalate_to, level, priority, sla,"
    " due_at, on_expiry, overdue_since, follow_up_at, claimed_by, claimed_at, created_at,"
    " updated_at, outcome, data, reviewer, comment, decided_at"
)


@dataclass(frozen=True)
class TaskSpec:
    """A task to open, its JSON fields already encoded."""

    kind: str
    workflow: str
    payload: str
    sensitive: Sequence[str] = ()
    proposal: str | None = None
    confidence: float | None = None
    form: str | None = None
    instructions: str | None = None
    context: str | None = None
    assignee: str | None = None
    groups: Sequence[str] = ()
    escalate_to: Sequence[str] = ()
    priority: int = 50
    sla: float | None = None
    on_expiry: str = "keep"


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_NAMES = [name.strip() for name in TASK_COLUMNS.split(",")]
_JSON = ("payload", "proposal", "form", "context", "data")
_LISTS = ("sensitive", "groups", "escalate_to")


def task_fields(row: Sequence[Any]) -> dict[str, Any]:
    """A task row (``TASK_COLUMNS``) by column name, its JSON columns decoded."""
    fields = dict(zip(_NAMES, row, strict=True))
    for name in _JSON:
        fields[name] = _json(fields[name])
    for name in _LISTS:
        fields[name] = tuple(_json(fields[name]) or ())
    fields["id"] = int(fields["id"])
    return fields


def task_from_row(row: Sequence[Any]) -> ReviewTask:
    return ReviewTask(**task_fields(row))


def masked(value: Any, sensitive: Sequence[str]) -> Any:
    """``value`` with the fields named in ``sensitive`` replaced by ``"***"``, at any
    depth (a field name, or a dotted path such as ``"bank.iban"``)."""
    if not sensitive:
        return value
    names = {s for s in sensitive if "." not in s}
    paths = [s.split(".") for s in sensitive if "." in s]

    def walk(node: Any, path: list[str]) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, item in node.items():
                here = [*path, str(key)]
                hidden = key in names or any(p == here for p in paths)
                out[key] = "***" if hidden else walk(item, here)
            return out
        if isinstance(node, list):
            return [walk(item, path) for item in node]
        return node

    return walk(value, [])
