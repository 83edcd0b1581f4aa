"""Pure role policy: what a reviewer, an operator and an admin may do. No I/O.

Roles are ordered: an operator may do what a reviewer may, an admin what an operator
may. A reviewer sees and decides only the tasks offered to them (their user name, one of
their groups, or any reviewer); operators and admins see every task, reassign any, and
operate on runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from surestep.errors import ConfigurationError
from surestep.review.policy import principals, visible_to

ROLES = ("reviewer", "operator", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}


def check_role(role: object) -> str:
    """``role`` if it is one of :data:`ROLES`; else ConfigurationError."""
    if role not in _RANK:
        raise ConfigurationError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return str(role)


def at_least(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (``at_least("admin", "operator")``)."""
    return _RANK.get(role, -1) >= _RANK[needed]


def sees_every_task(role: str) -> bool:
    """Operators and admins see (and may filter) every task; reviewers their own."""
    return at_least(role, "operator")


def may_see_task(
    role: str,
    name: str,
    groups: Sequence[str],
    task_assignee: str | None,
    task_groups: Sequence[str],
) -> bool:
    """Whether a user may see and decide a task offered to ``task_assignee`` and
    ``task_groups`` (both as the task has them now, after any escalation)."""
    if sees_every_task(role):
        return True
    return visible_to(principals(task_assignee, task_groups), name, groups)
