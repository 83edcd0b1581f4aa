"""Pure review policies: who a task goes to next and when, and what expiry does.

No I/O: functions from a task's settings and the time to a decision, unit-tested without
a database, like :mod:`surestep.retry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from surestep.errors import ConfigurationError

ON_EXPIRY = ("approve", "reject", "dead_letter", "keep")
#: Anyone with the reviewer role may take a task opened without assignee or groups.
ANYONE = "group:*"


@dataclass(frozen=True)
class Escalate:
    """Hand the task to ``to`` with a fresh SLA."""

    to: str  # a principal: "user:NAME" or "group:NAME"
    level: int
    due_at: float | None


@dataclass(frozen=True)
class Expire:
    """No one is left to escalate to: apply ``on_expiry``."""

    action: str  # approve | reject | dead_letter | keep


def principal(entry: str) -> str:
    """``"bob"`` or ``"user:bob"`` -> ``"user:bob"``; ``"group:managers"`` stays."""
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigurationError(f"a reviewer must be a user name or 'group:NAME', got {entry!r}")
    entry = entry.strip()
    if entry.startswith(("user:", "group:")):
        if not entry.split(":", 1)[1]:
            raise ConfigurationError(f"{entry!r} names no user or group")
        return entry
    return f"user:{entry}"


def principals(assignee: str | None, groups: Sequence[str]) -> list[str]:
    """Who sees a task: its assignee and its groups, or anyone if it has neither."""
    found = [] if assignee is None else [principal(assignee)]
    found += [principal(g if g.startswith("group:") else f"group:{g}") for g in groups]
    return list(dict.fromkeys(found)) or [ANYONE]


def on_due(
    escalate_to: Sequence[str], level: int, sla: float | None, on_expiry: str, now: float
) -> Escalate | Expire:
    """What happens when an open task's due time passes at ``now``.

    Each entry of ``escalate_to`` is one level; the SLA restarts at each. Past the last
    level ``on_expiry`` applies.
    """
    if level < len(escalate_to):
        return Escalate(
            principal(escalate_to[level]), level + 1, None if sla is None else now + sla
        )
    if on_expiry not in ON_EXPIRY:
        raise ConfigurationError(f"on_expiry={on_expiry!r}; use one of {', '.join(ON_EXPIRY)}")
    return Expire(on_expiry)


def visible_to(task_principals: Sequence[str], user: str, groups: Sequence[str]) -> bool:
    """Whether a reviewer (``user`` in ``groups``) may see and decide a task."""
    mine = {f"user:{user}", ANYONE, *(f"group:{g}" for g in groups)}
    return any(p in mine for p in task_principals)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]
