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


def task_from_row(row: Sequence[Any]) -> ReviewTask:
    (
        task_id,
        run_id,
        position,
        kind,
        workflow,
        state,
        payload,
        sensitive,
        proposal,
        confidence,
        form,
        instructions,
        context,
        assignee,
        groups,
        escalate_to,
        level,
        priority,
        sla,
        due_at,
        on_expiry,
        overdue_since,
        follow_up_at,
        claimed_by,
        claimed_at,
        created_at,
        updated_at,
        outcome,
        data,
        reviewer,
        comment,
        decided_at,
    ) = row
    return ReviewTask(
        id=int(task_id),
        run_id=run_id,
        position=position,
        kind=kind,
        workflow=workflow,
        state=state,
        payload=_json(payload),
        sensitive=tuple(_json(sensitive) or ()),
        proposal=_json(proposal),
        confidence=confidence,
        form=_json(form),
        instructions=instructions,
        context=_json(context),
        assignee=assignee,
        groups=tuple(_json(groups) or ()),
        escalate_to=tuple(_json(escalate_to) or ()),
        level=level,
        priority=priority,
        sla=sla,
        due_at=due_at,
        on_expiry=on_expiry,
        overdue_since=overdue_since,
        follow_up_at=follow_up_at,
        claimed_by=claimed_by,
        claimed_at=claimed_at,
        created_at=created_at,
        updated_at=updated_at,
        outcome=outcome,
        data=_json(data),
        reviewer=reviewer,
        comment=comment,
        decided_at=decided_at,
    )


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
