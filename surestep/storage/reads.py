"""The read side of the storage contract: what the engine, the CLI and the API query."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from surestep.errors import RunNotFoundError
from surestep.records import AttemptRecord, EventRecord, RunRecord, StepRecord
from surestep.states import State
from surestep.storage.rows import Cursor, RecordedStep
from surestep.storage.transient import retry_transient

_RUN_COLUMNS = (
    "id, workflow, workflow_version, state, inputs, output, error, created_at, updated_at,"
    " available_at, lease_owner, parent_id, deadline_at, on_deadline, deadline_breached_at,"
    " waiting_for, compensating"
)


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class RunQueries(ABC):
    """Queries over runs, steps, attempts and events, in portable SQL."""

    reconnect_timeout = 60.0

    @abstractmethod
    def reading(self) -> AbstractContextManager[Cursor]:
        """A cursor for single-statement reads."""

    def snapshot(self) -> AbstractContextManager[Cursor]:
        """A cursor whose statements all read one consistent snapshot."""
        return self.reading()

    @retry_transient
    def recorded_steps(self, run_id: str) -> dict[int, RecordedStep]:
        """The steps of a run recorded so far, by position: what replay reads."""
        with self.reading() as cur:
            return self._recorded(cur, [run_id]).get(run_id, {})

    @retry_transient
    def run_state(self, run_id: str) -> tuple[State, str | None, str | None, str] | None:
        """(state, output, error, workflow) of a run, or None if there is no such run."""
        with self.reading() as cur:
            cur.execute(
                "SELECT state, output, error, workflow FROM surestep_runs WHERE id = ?",
                (run_id,),
            )
            row = cur.fetchone()
        return None if row is None else (State(row[0]), row[1], row[2], row[3])

    @retry_transient
    def get_run(self, run_id: str) -> RunRecord:
        """A run with its steps, attempts and events."""
        with self.snapshot() as cur:
            cur.execute(f"SELECT {_RUN_COLUMNS} FROM surestep_runs WHERE id = ?", (run_id,))
            row = cur.fetchone()
            if row is None:
                raise RunNotFoundError(
                    f"no run with id {run_id!r}; `surestep runs` lists the runs there are"
                )
            cur.execute(
                "SELECT position, attempt, state, started_at, finished_at, worker, error"
                " FROM surestep_attempts WHERE run_id = ? ORDER BY position, attempt",
                (run_id,),
            )
            attempts: dict[int, list[AttemptRecord]] = {}
            for a in cur.fetchall():
                attempts.setdefault(a[0], []).append(
                    AttemptRecord(a[1], State(a[2]), a[3], a[4], a[5], _decode(a[6]))
                )
            cur.execute(
                "SELECT position, name, state, output, error, attempts, started_at,"
                " finished_at, next_attempt_at, compensation FROM surestep_steps"
                " WHERE run_id = ? ORDER BY position",
                (run_id,),
            )
            steps = tuple(
                StepRecord(
                    s[0],
                    s[1],
                    State(s[2]),
                    s[5],
                    _decode(s[3]),
                    _decode(s[4]),
                    s[6],
                    s[7],
                    s[8],
                    tuple(attempts.get(s[0], ())),
                    s[9],
                )
                for s in cur.fetchall()
            )
            cur.execute(
                "SELECT id, run_id, position, step, from_state, to_state, at, actor, reason,"
                " attempt FROM surestep_events WHERE run_id = ? ORDER BY id",
                (run_id,),
            )
            events = tuple(
                EventRecord(
                    e[0],
                    e[1],
                    e[2],
                    e[3],
                    State(e[4]) if e[4] else None,
                    State(e[5]),
                    e[6],
                    e[7],
                    e[8],
                    e[9],
                )
                for e in cur.fetchall()
            )
        return self._run_record(row, steps, events)

    @retry_transient
    def list_runs(
        self, state: State | None = None, workflow: str | None = None, limit: int = 50
    ) -> list[RunRecord]:
        """Runs, newest first, optionally filtered by state and workflow."""
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(str(state))
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self.reading() as cur:
            cur.execute(
                f"SELECT {_RUN_COLUMNS} FROM surestep_runs {clause}"
                " ORDER BY created_at DESC, id LIMIT ?",
                (*params, limit),
            )
            return [self._run_record(r, (), ()) for r in cur.fetchall()]

    @retry_transient
    def next_due(self, workflows: Sequence[tuple[str, str]]) -> float | None:
        """When a worker of these workflows next has something to do: the earliest
        pending or waiting run becoming claimable, or the earliest run deadline."""
        due = None
        with self.reading() as cur:
            if workflows:
                # One index lookup per (workflow, version) pair, like the claim.
                one = (
                    "SELECT MIN(available_at) AS t FROM surestep_runs WHERE workflow = ?"
                    " AND workflow_version = ? AND state IN ('pending', 'waiting')"
                )
                cur.execute(
                    f"SELECT MIN(t) FROM ({' UNION ALL '.join([one] * len(workflows))}) AS due",
                    [part for pair in workflows for part in pair],
                )
                due = cur.fetchone()[0]
            cur.execute(
                "SELECT MIN(deadline_at) FROM surestep_runs WHERE deadline_at IS NOT NULL"
                " AND state IN ('pending', 'running', 'waiting', 'dead_letter')"
            )
            deadline = cur.fetchone()[0]
        times = [t for t in (due, deadline) if t is not None]
        return min(times) if times else None

    @retry_transient
    def schema_version(self) -> int:
        """The number of the last migration applied to this database."""
        with self.reading() as cur:
            cur.execute("SELECT MAX(version) FROM surestep_migrations")
            return int(cur.fetchone()[0] or 0)

    @retry_transient
    def count_by_state(self) -> dict[State, int]:
        with self.reading() as cur:
            cur.execute("SELECT state, COUNT(*) FROM surestep_runs GROUP BY state")
            return {State(s): n for s, n in cur.fetchall()}

    @retry_transient
    def expired_leases(self, now: float, limit: int = 100) -> list[tuple[str, int, str]]:
        """Running runs whose lease lapsed: (run id, token, owner)."""
        with self.reading() as cur:
            cur.execute(
                "SELECT id, lease_token, lease_owner FROM surestep_runs"
                " WHERE state = 'running' AND lease_expires_at < ? LIMIT ?",
                (now, limit),
            )
            return [(r[0], r[1], r[2]) for r in cur.fetchall()]

    @retry_transient
    def leases_of(self, owner_prefix: str) -> list[tuple[str, int, str]]:
        """Running runs whose lease owner starts with ``owner_prefix``."""
        with self.reading() as cur:
            cur.execute(
                "SELECT id, lease_token, lease_owner FROM surestep_runs"
                " WHERE state = 'running' AND substr(lease_owner, 1, ?) = ?",
                (len(owner_prefix), owner_prefix),
            )
            return [(r[0], r[1], r[2]) for r in cur.fetchall()]

    @retry_transient
    def compensation_outcome(self, run_id: str) -> str | None:
        """The error a compensating run ends with once its steps are undone."""
        with self.reading() as cur:
            cur.execute("SELECT compensating_error FROM surestep_runs WHERE id = ?", (run_id,))
            row = cur.fetchone()
        return None if row is None else row[0]

    @retry_transient
    def held(self, worker: str, runs: Sequence[str]) -> set[str]:
        """Which of ``runs`` ``worker`` still holds (not cancelled, not taken over)."""
        if not runs:
            return set()
        marks = ", ".join("?" for _ in runs)
        with self.reading() as cur:
            cur.execute(
                "SELECT id FROM surestep_runs WHERE lease_owner = ? AND state = 'running'"
                f" AND id IN ({marks})",
                (worker, *runs),
            )
            return {row[0] for row in cur.fetchall()}

    # -- pieces -------------------------------------------------------------------

    @staticmethod
    def _recorded(cur: Cursor, run_ids: Sequence[str]) -> dict[str, dict[int, RecordedStep]]:
        marks = ", ".join("?" for _ in run_ids)
        cur.execute(
            "SELECT run_id, position, name, state, output, error, attempts, retry_base,"
            f" next_attempt_at, compensation, inputs FROM surestep_steps"
            f" WHERE run_id IN ({marks})",
            list(run_ids),
        )
        found: dict[str, dict[int, RecordedStep]] = {}
        for r in cur.fetchall():
            found.setdefault(r[0], {})[r[1]] = RecordedStep(
                r[2], State(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10]
            )
        return found

    @staticmethod
    def _run_record(
        row: Sequence[Any],
        steps: tuple[StepRecord, ...],
        events: tuple[EventRecord, ...],
    ) -> RunRecord:
        return RunRecord(
            id=row[0],
            workflow=row[1],
            workflow_version=row[2],
            state=State(row[3]),
            inputs=json.loads(row[4]),
            output=_decode(row[5]),
            error=_decode(row[6]),
            created_at=row[7],
            updated_at=row[8],
            available_at=row[9],
            lease_owner=row[10],
            parent_id=row[11],
            steps=steps,
            events=events,
            deadline_at=row[12],
            on_deadline=row[13],
            deadline_breached_at=row[14],
            waiting_for=tuple(json.loads(row[15])) if row[15] else (),
            compensating=State(row[16]) if row[16] else None,
        )
