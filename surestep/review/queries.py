"""Reading review tasks: one task, an inbox, a listing, and what stats and export read.

An inbox is a union of index ranges, one per principal the reviewer answers for (their
user and each of their groups), each cut to the page size before the merge: its cost
depends on the page size and the number of groups, not on how many tasks are open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from surestep.review.policy import ANYONE
from surestep.review.records import ReviewTask
from surestep.review.rows import TASK_COLUMNS, task_from_row
from surestep.storage import Store
from surestep.storage.rows import Cursor
from surestep.storage.transient import retry_transient

ORDERS = {
    "priority": "priority DESC, due_at, id",
    "due": "due_at, priority DESC, id",
    "created": "created_at, id",
    "newest": "created_at DESC, id DESC",
}


class ReviewQueries:
    """Reads of review tasks in the database of ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def get(self, task_id: int) -> ReviewTask | None:
        with self.store.reading() as cur:
            found = _tasks(cur, [task_id])
        return found[0] if found else None

    @retry_transient
    def inbox(
        self,
        principals: Sequence[str],
        *,
        kind: str | None = None,
        overdue_at: float | None = None,
        limit: int = 50,
    ) -> list[ReviewTask]:
        """Open tasks that any of ``principals`` may take, by priority then due time."""
        filters, params = "", list[Any]()
        if kind is not None:
            filters += " AND kind = ?"
            params.append(kind)
        if overdue_at is not None:
            filters += " AND due_at <= ?"
            params.append(overdue_at)
        branch = (
            "SELECT * FROM (SELECT task_id, priority, due_at FROM surestep_review_inbox"
            f" WHERE principal = ?{filters} ORDER BY priority DESC, due_at, task_id LIMIT ?)"
            " AS branch"
        )
        who = list(dict.fromkeys([*principals, ANYONE]))
        sql = " UNION ALL ".join(f"{branch}{i}" for i in range(len(who)))
        args: list[Any] = []
        for p in who:
            args += [p, *params, limit]
        with self.store.reading() as cur:
            cur.execute(f"{sql} ORDER BY priority DESC, due_at, task_id", args)
            ids = list(dict.fromkeys(int(row[0]) for row in cur.fetchall()))[:limit]
            return _tasks(cur, ids)

    @retry_transient
    def listing(
        self,
        *,
        state: str | None = "open",
        kind: str | None = None,
        run_id: str | None = None,
        overdue_at: float | None = None,
        order: str = "priority",
        limit: int = 50,
    ) -> list[ReviewTask]:
        """Tasks in any state, for operators (a reviewer's view is :meth:`inbox`)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("state", state), ("kind", kind), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if overdue_at is not None:
            where.append("state = 'open' AND due_at <= ?")
            params.append(overdue_at)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self.store.reading() as cur:
            cur.execute(
                f"SELECT {TASK_COLUMNS} FROM surestep_review_tasks{clause}"
                f" ORDER BY {ORDERS[order]} LIMIT ?",
                [*params, limit],
            )
            return [task_from_row(row) for row in cur.fetchall()]

    @retry_transient
    def principals_of(self, task_id: int) -> list[str]:
        """Who may take the task now (its inbox rows; none once it is settled)."""
        with self.store.reading() as cur:
            cur.execute("SELECT principal FROM surestep_review_inbox WHERE task_id = ?", (task_id,))
            return [str(row[0]) for row in cur.fetchall()]

    @retry_transient
    def created_since(self, since: float, kind: str | None) -> list[ReviewTask]:
        """Every task created at or after ``since`` (stats)."""
        return self._since("created_at", since, kind)

    @retry_transient
    def decided_since(self, since: float, kind: str | None) -> list[ReviewTask]:
        """Every task decided at or after ``since`` (export), in decision order."""
        return self._since("decided_at", since, kind)

    def _since(self, column: str, since: float, kind: str | None) -> list[ReviewTask]:
        extra, params = ("", [since]) if kind is None else (" AND kind = ?", [since, kind])
        with self.store.reading() as cur:
            cur.execute(
                f"SELECT {TASK_COLUMNS} FROM surestep_review_tasks WHERE {column} >= ?{extra}"
                f" ORDER BY {column}, id",
                params,
            )
            return [task_from_row(row) for row in cur.fetchall()]


def _tasks(cur: Cursor, ids: Sequence[int]) -> list[ReviewTask]:
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    cur.execute(f"SELECT {TASK_COLUMNS} FROM surestep_review_tasks WHERE id IN ({marks})", ids)
    by_id = {int(row[0]): task_from_row(row) for row in cur.fetchall()}
    return [by_id[i] for i in ids if i in by_id]
