"""Which workers run and which workflow versions each serves, beside the run store.

A worker announces itself when it starts and again with every heartbeat, and marks
itself stopped on a clean shutdown; one that is not heard from for its lease length is
taken for dead. Set against the unfinished runs counted by (workflow, version), this
says which runs no live worker will ever execute: the runs a deploy stranded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from surestep.states import State
from surestep.storage.rows import Cursor
from surestep.storage.transient import retry_transient

#: The states of a run that has not finished: it still needs a worker (or a person first).
UNFINISHED = (
    State.PENDING,
    State.RUNNING,
    State.WAITING,
    State.NEEDS_REVIEW,
    State.DEAD_LETTER,
)
# Spelled as in the partial index surestep_runs_unfinished (migration 6): SQLite uses a
# partial index only for a query whose WHERE repeats the index's condition.
_UNFINISHED_SQL = "state IN ('pending', 'running', 'waiting', 'needs_review', 'dead_letter')"


class Transactional(Protocol):
    """The connection helpers of a run store that this store shares."""

    reconnect_timeout: float

    def transaction(self) -> AbstractContextManager[Cursor]: ...

    def reading(self) -> AbstractContextManager[Cursor]: ...


@dataclass(frozen=True)
class WorkerEntry:
    """A worker as it last announced itself."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    lease_seconds: float
    serves: tuple[tuple[str, str], ...]  # (workflow, version) pairs
    stopped_at: float | None


class WorkerStore:
    """The ``surestep_workers`` table and the count of unfinished runs by version."""

    def __init__(self, store: Transactional) -> None:
        self._store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def announce(
        self,
        worker: str,
        host: str,
        pid: int,
        serves: Sequence[tuple[str, str]],
        now: float,
        lease_seconds: float,
    ) -> None:
        """Record that ``worker`` is alive at ``now`` and serves these versions."""
        pairs = json.dumps(sorted([name, version] for name, version in serves))
        with self._store.transaction() as cur:
            cur.execute(
                "INSERT INTO surestep_workers (id, host, pid, started_at, heartbeat_at,"
                " lease_seconds, serves, stopped_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
                " lease_seconds = excluded.lease_seconds, serves = excluded.serves,"
                " stopped_at = NULL",
                (worker, host, pid, now, now, lease_seconds, pairs),
            )

    @retry_transient
    def stopped(self, worker: str, now: float) -> None:
        """Record a clean shutdown: the worker serves nothing from now on."""
        with self._store.transaction() as cur:
            cur.execute(
                "UPDATE surestep_workers SET stopped_at = ? WHERE id = ?",
                (now, worker),
            )

    @retry_transient
    def live(self, now: float) -> list[WorkerEntry]:
        """Workers not stopped and heard from within their lease length."""
        with self._store.reading() as cur:
            cur.execute(
                "SELECT id, host, pid, started_at, heartbeat_at, lease_seconds, serves,"
                " stopped_at FROM surestep_workers"
                " WHERE stopped_at IS NULL AND heartbeat_at + lease_seconds >= ? ORDER BY id",
                (now,),
            )
            rows = cur.fetchall()
        return [
            WorkerEntry(
                r[0],
                r[1],
                int(r[2]),
                r[3],
                r[4],
                r[5],
                tuple((str(name), str(version)) for name, version in json.loads(r[6])),
                r[7],
            )
            for r in rows
        ]

    @retry_transient
    def prune(self, before: float) -> int:
        """Forget workers stopped, or last heard from, before ``before``."""
        with self._store.transaction() as cur:
            cur.execute(
                "DELETE FROM surestep_workers WHERE COALESCE(stopped_at, heartbeat_at) < ?",
                (before,),
            )
            return cur.rowcount

    @retry_transient
    def unfinished(self) -> dict[tuple[str, str], dict[State, int]]:
        """Unfinished runs counted by (workflow, version) and state.

        Reads only the partial index of unfinished runs, so it costs the same with a
        million finished runs as with none.
        """
        with self._store.reading() as cur:
            cur.execute(
                "SELECT workflow, workflow_version, state, COUNT(*) FROM surestep_runs"
                f" WHERE {_UNFINISHED_SQL} GROUP BY state, workflow, workflow_version"
            )
            rows = cur.fetchall()
        counts: dict[tuple[str, str], dict[State, int]] = {}
        for workflow, version, state, n in rows:
            counts.setdefault((workflow, version), {})[State(state)] = int(n)
        return counts
