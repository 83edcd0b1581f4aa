"""The storage contract: the few operations the engine needs, in portable SQL.

Every write that a worker makes for a run is *fenced*: it carries the lease token the
worker got when it claimed the run, and is refused (``LeaseLostError``) once another
worker has claimed the run or an operator has cancelled it. Dialects supply the
connection handling and a handful of SQL differences; nothing else.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from surestep.errors import (
    IdempotencyConflictError,
    InvalidOperationError,
    LeaseLostError,
    RunNotFoundError,
)
from surestep.records import AttemptRecord, EventRecord, RunRecord, StepRecord
from surestep.states import TERMINAL, State, check_run_transition, check_step_transition


class Cursor(Protocol):
    """The slice of a DB-API cursor that surestep uses."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class RecordedStep:
    """What replay needs of a step recorded earlier."""

    name: str
    state: State
    output: str | None
    error: str | None
    attempts: int
    retry_base: int
    next_attempt_at: float | None


@dataclass(frozen=True)
class ClaimedRun:
    """A run a worker now holds under lease ``token``, with the steps recorded so far."""

    id: str
    workflow: str
    workflow_version: str
    inputs: str
    token: int
    recorded: dict[int, RecordedStep]


@dataclass(frozen=True)
class StepOutcome:
    """The end of one step attempt, written in one transaction with its events."""

    position: int
    name: str
    from_state: State  # the step's state before this attempt: pending or waiting
    to_state: State
    attempt: int
    started_at: float
    finished_at: float
    output: str | None = None
    error: str | None = None
    next_attempt_at: float | None = None
    reason: str | None = None


_RUN_COLUMNS = (
    "id, workflow, workflow_version, state, inputs, output, error, created_at, updated_at,"
    " available_at, lease_owner, parent_id"
)

_EVENT_INSERT = (
    "INSERT INTO surestep_events"
    " (run_id, position, step, from_state, to_state, at, actor, reason, attempt)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_STEP_UPSERT = (
    "INSERT INTO surestep_steps (run_id, position, name, state, output, error, attempts,"
    " started_at, finished_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, position) DO UPDATE SET state = excluded.state,"
    " output = excluded.output, error = excluded.error, attempts = excluded.attempts,"
    " finished_at = excluded.finished_at, next_attempt_at = excluded.next_attempt_at"
)

_ATTEMPT_INSERT = (
    "INSERT INTO surestep_attempts"
    " (run_id, position, attempt, state, started_at, finished_at, worker, error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class SQLStore(ABC):
    """Storage in a SQL database. Subclasses provide connections and dialect pieces."""

    #: Appended to SELECTs that pick rows to change, so that concurrent claimers skip
    #: each other's rows instead of waiting (PostgreSQL: ``FOR UPDATE SKIP LOCKED``).
    lock_rows = ""
    #: Appended to the fencing check, so a concurrent cancel waits for our commit.
    lock_fence = ""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Cursor]:
        """A write transaction: commit on normal exit, roll back on error."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Cursor]:
        """A cursor for consistent reads."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the data lives, safe to print (no passwords)."""

    # -- writes -------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        workflow: str,
        version: str,
        inputs: str,
        now: float,
        actor: str,
        parent_id: str | None = None,
    ) -> bool:
        """Insert a pending run; return False when ``run_id`` exists already.

        An existing run of another workflow or with other inputs is a conflict: the
        run id is an idempotency key, and reusing it for different work is a bug.
        """
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
                " created_at, updated_at, available_at, parent_id)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (run_id, workflow, version, inputs, now, now, now, parent_id),
            )
            if cur.rowcount == 1:
                cur.execute(
                    _EVENT_INSERT,
                    (run_id, None, None, None, State.PENDING, now, actor, "started", None),
                )
                return True
            cur.execute("SELECT workflow, inputs FROM surestep_runs WHERE id = ?", (run_id,))
            existing_workflow, existing_inputs = cur.fetchone()
        if existing_workflow != workflow:
            raise IdempotencyConflictError(
                f"run id {run_id!r} is taken by a run of workflow {existing_workflow!r}; "
                f"choose another run_id for workflow {workflow!r}"
            )
        if json.loads(existing_inputs) != json.loads(inputs):
            raise IdempotencyConflictError(
                f"run id {run_id!r} already exists with other inputs; a run id names one "
                f"piece of work, so start different inputs under a different run_id"
            )
        return False

    def claim(
        self,
        worker: str,
        workflows: Sequence[tuple[str, str]],
        limit: int,
        now: float,
        lease_seconds: float,
    ) -> list[ClaimedRun]:
        """Lease up to ``limit`` runs that are due, of the given (name, version) pairs."""
        if limit <= 0 or not workflows:
            return []
        pairs, params = self._workflow_pairs(workflows)
        with self.transaction() as cur:
            cur.execute(
                "SELECT id, state, workflow, workflow_version, inputs, lease_token"
                " FROM surestep_runs WHERE state IN ('pending', 'waiting')"
                f" AND available_at <= ? AND {pairs}"
                f" ORDER BY available_at LIMIT ? {self.lock_rows}",
                [now, *params, limit],
            )
            rows = cur.fetchall()
            if not rows:
                return []
            expires = now + lease_seconds
            cur.executemany(
                "UPDATE surestep_runs SET state = 'running', lease_owner = ?,"
                " lease_token = ?, lease_expires_at = ?, available_at = NULL, updated_at = ?"
                " WHERE id = ?",
                [(worker, row[5] + 1, expires, now, row[0]) for row in rows],
            )
            cur.executemany(
                _EVENT_INSERT,
                [
                    (row[0], None, None, row[1], State.RUNNING, now, worker, "claimed", None)
                    for row in rows
                ],
            )
            recorded = self._recorded(cur, [row[0] for row in rows])
        return [ClaimedRun(r[0], r[2], r[3], r[4], r[5] + 1, recorded.get(r[0], {})) for r in rows]

    def record_step(self, run_id: str, token: int, worker: str, outcome: StepOutcome) -> None:
        """Checkpoint one attempt of a step: the step row, the attempt and its events.

        This is the engine's per-step write, so it is one transaction and nothing more.
        """
        o = outcome
        check_step_transition(o.from_state, State.RUNNING)
        check_step_transition(State.RUNNING, o.to_state)
        with self.transaction() as cur:
            self._fence(cur, run_id, token)
            cur.execute(
                _STEP_UPSERT,
                (
                    run_id,
                    o.position,
                    o.name,
                    o.to_state,
                    o.output,
                    o.error,
                    o.attempt,
                    o.started_at,
                    o.finished_at,
                    o.next_attempt_at,
                ),
            )
            # The step may be waiting or dead-lettered; the attempt itself either
            # succeeded or failed.
            attempt_state = State.SUCCESS if o.to_state == State.SUCCESS else State.FAILED
            cur.execute(
                _ATTEMPT_INSERT,
                (
                    run_id,
                    o.position,
                    o.attempt,
                    attempt_state,
                    o.started_at,
                    o.finished_at,
                    worker,
                    o.error,
                ),
            )
            cur.executemany(
                _EVENT_INSERT,
                (
                    (
                        run_id,
                        o.position,
                        o.name,
                        o.from_state,
                        State.RUNNING,
                        o.started_at,
                        worker,
                        None,
                        o.attempt,
                    ),
                    (
                        run_id,
                        o.position,
                        o.name,
                        State.RUNNING,
                        o.to_state,
                        o.finished_at,
                        worker,
                        o.reason,
                        o.attempt,
                    ),
                ),
            )

    def finish(
        self,
        run_id: str,
        token: int,
        worker: str,
        to_state: State,
        now: float,
        *,
        output: str | None = None,
        error: str | None = None,
        available_at: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Move a run this worker holds out of running, and give up its lease."""
        check_run_transition(State.RUNNING, to_state)
        with self.transaction() as cur:
            cur.execute(
                "UPDATE surestep_runs SET state = ?, output = ?, error = ?, available_at = ?,"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
                " WHERE id = ? AND lease_token = ? AND state = 'running'",
                (to_state, output, error, available_at, now, run_id, token),
            )
            if cur.rowcount != 1:
                raise LeaseLostError(f"run {run_id!r} is no longer held by {worker}")
            cur.execute(
                _EVENT_INSERT,
                (run_id, None, None, State.RUNNING, to_state, now, worker, reason, None),
            )

    def heartbeat(self, worker: str, runs: Sequence[str], now: float, lease_seconds: float) -> int:
        """Extend ``worker``'s leases on ``runs`` (those it is executing); return how many.

        Only runs really in flight are renewed, so a run the worker holds but no longer
        executes (after an error) lapses and is recovered.
        """
        if not runs:
            return 0
        marks = ", ".join("?" for _ in runs)
        with self.transaction() as cur:
            cur.execute(
                "UPDATE surestep_runs SET lease_expires_at = ?"
                f" WHERE lease_owner = ? AND state = 'running' AND id IN ({marks})",
                (now + lease_seconds, worker, *runs),
            )
            return cur.rowcount

    def release(
        self,
        runs: Sequence[tuple[str, int]],
        actor: str,
        reason: str,
        now: float,
        *,
        max_recoveries: int | None = None,
    ) -> int:
        """Put leased runs back to pending, each only if it still has the given token.

        With ``max_recoveries`` the release is a *recovery* (the worker died or its lease
        lapsed): a run recovered that many times in a row without recording a new
        attempt in between is dead-lettered instead, since its next step most likely
        crashes whatever process runs it.
        """
        released = 0
        with self.transaction() as cur:
            for run_id, token in runs:
                to_state, why, error = State.PENDING, reason, None
                recoveries, mark = 0, -1
                if max_recoveries is not None:
                    recoveries, mark = self._count_recovery(cur, run_id)
                    if recoveries >= max_recoveries:
                        to_state = State.DEAD_LETTER
                        why = (
                            f"{reason}; recovered {recoveries} times in a row without "
                            f"progress: the step after the last checkpoint probably crashes "
                            f"its worker (out of memory? a native crash?). Fix it, then "
                            f"`surestep retry` the run"
                        )
                        error = json.dumps({"type": "RecoveryLimit", "message": why})
                cur.execute(
                    "UPDATE surestep_runs SET state = ?, lease_owner = NULL,"
                    " lease_expires_at = NULL, available_at = ?, updated_at = ?,"
                    " recoveries = ?, recovery_mark = ?, error = ?"
                    " WHERE id = ? AND lease_token = ? AND state = 'running'",
                    (
                        to_state,
                        now if to_state == State.PENDING else None,
                        now,
                        recoveries,
                        mark,
                        error,
                        run_id,
                        token,
                    ),
                )
                if cur.rowcount == 1:
                    released += 1
                    cur.execute(
                        _EVENT_INSERT,
                        (run_id, None, None, State.RUNNING, to_state, now, actor, why, None),
                    )
        return released

    def _count_recovery(self, cur: Cursor, run_id: str) -> tuple[int, int]:
        """(recoveries in a row without progress, counting this one; the progress mark)."""
        cur.execute("SELECT COUNT(*) FROM surestep_attempts WHERE run_id = ?", (run_id,))
        progress = int(cur.fetchone()[0])
        cur.execute("SELECT recoveries, recovery_mark FROM surestep_runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        if row is None:
            return 0, progress
        return (int(row[0]) + 1 if row[1] == progress else 1), progress

    def expired_leases(self, now: float, limit: int = 100) -> list[tuple[str, int, str]]:
        """Running runs whose lease lapsed: (run id, token, owner)."""
        with self.reading() as cur:
            cur.execute(
                "SELECT id, lease_token, lease_owner FROM surestep_runs"
                " WHERE state = 'running' AND lease_expires_at < ? LIMIT ?",
                (now, limit),
            )
            return [(r[0], r[1], r[2]) for r in cur.fetchall()]

    def leases_of(self, owner_prefix: str) -> list[tuple[str, int, str]]:
        """Running runs whose lease owner starts with ``owner_prefix``."""
        with self.reading() as cur:
            cur.execute(
                "SELECT id, lease_token, lease_owner FROM surestep_runs"
                " WHERE state = 'running' AND substr(lease_owner, 1, ?) = ?",
                (len(owner_prefix), owner_prefix),
            )
            return [(r[0], r[1], r[2]) for r in cur.fetchall()]

    def cancel(self, run_id: str, actor: str, reason: str, now: float) -> State:
        """Cancel a run that has not finished; return the state it was in."""
        with self.transaction() as cur:
            state = self._state_for_update(cur, run_id)
            if state in TERMINAL:
                raise InvalidOperationError(
                    f"run {run_id!r} already finished in state {state}; only a run that "
                    f"has not finished can be cancelled"
                )
            check_run_transition(state, State.CANCELLED)
            cur.execute(
                "UPDATE surestep_runs SET state = 'cancelled', lease_owner = NULL,"
                " lease_expires_at = NULL, available_at = NULL, updated_at = ?,"
                " error = ? WHERE id = ?",
                (now, json.dumps({"type": "Cancelled", "message": reason}), run_id),
            )
            cur.execute(
                _EVENT_INSERT,
                (run_id, None, None, state, State.CANCELLED, now, actor, reason, None),
            )
        return state

    def redrive(self, run_id: str, actor: str, reason: str, now: float) -> list[str]:
        """Send a dead-lettered run back to pending; return the names of redriven steps.

        Completed steps keep their checkpoints; each dead-lettered step gets a fresh
        retry budget.
        """
        with self.transaction() as cur:
            state = self._state_for_update(cur, run_id)
            if state != State.DEAD_LETTER:
                raise InvalidOperationError(
                    f"run {run_id!r} is {state}, not dead_letter; only dead-lettered runs "
                    f"can be retried (see `surestep dlq`)"
                )
            check_run_transition(state, State.PENDING)
            cur.execute(
                "SELECT position, name, attempts FROM surestep_steps"
                " WHERE run_id = ? AND state = 'dead_letter'",
                (run_id,),
            )
            steps = cur.fetchall()
            for position, name, attempts in steps:
                check_step_transition(State.DEAD_LETTER, State.PENDING)
                cur.execute(
                    "UPDATE surestep_steps SET state = 'pending', retry_base = ?,"
                    " next_attempt_at = NULL WHERE run_id = ? AND position = ?",
                    (attempts, run_id, position),
                )
                cur.execute(
                    _EVENT_INSERT,
                    (
                        run_id,
                        position,
                        name,
                        State.DEAD_LETTER,
                        State.PENDING,
                        now,
                        actor,
                        reason,
                        None,
                    ),
                )
            cur.execute(
                "UPDATE surestep_runs SET state = 'pending', error = NULL, available_at = ?,"
                " updated_at = ?, recoveries = 0, recovery_mark = -1 WHERE id = ?",
                (now, now, run_id),
            )
            cur.execute(
                _EVENT_INSERT,
                (run_id, None, None, state, State.PENDING, now, actor, reason, None),
            )
        return [name for _, name, _ in steps]

    # -- reads --------------------------------------------------------------------

    def recorded_steps(self, run_id: str) -> dict[int, RecordedStep]:
        """The steps of a run recorded so far, by position: what replay reads."""
        with self.reading() as cur:
            return self._recorded(cur, [run_id]).get(run_id, {})

    def run_state(self, run_id: str) -> tuple[State, str | None, str | None, str] | None:
        """(state, output, error, workflow) of a run, or None if there is no such run."""
        with self.reading() as cur:
            cur.execute(
                "SELECT state, output, error, workflow FROM surestep_runs WHERE id = ?",
                (run_id,),
            )
            row = cur.fetchone()
        return None if row is None else (State(row[0]), row[1], row[2], row[3])

    def get_run(self, run_id: str) -> RunRecord:
        """A run with its steps, attempts and events."""
        with self.reading() as cur:
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
                " finished_at, next_attempt_at FROM surestep_steps WHERE run_id = ?"
                " ORDER BY position",
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

    def next_due(self, workflows: Sequence[tuple[str, str]]) -> float | None:
        """When the earliest pending or waiting run of these workflows becomes claimable."""
        if not workflows:
            return None
        pairs, params = self._workflow_pairs(workflows)
        with self.reading() as cur:
            cur.execute(
                "SELECT MIN(available_at) FROM surestep_runs"
                f" WHERE state IN ('pending', 'waiting') AND {pairs}",
                params,
            )
            row = cur.fetchone()
        return None if row is None else row[0]

    def schema_version(self) -> int:
        """The number of the last migration applied to this database."""
        with self.reading() as cur:
            cur.execute("SELECT MAX(version) FROM surestep_migrations")
            return int(cur.fetchone()[0] or 0)

    def count_by_state(self) -> dict[State, int]:
        with self.reading() as cur:
            cur.execute("SELECT state, COUNT(*) FROM surestep_runs GROUP BY state")
            return {State(s): n for s, n in cur.fetchall()}

    # -- pieces -------------------------------------------------------------------

    @staticmethod
    def _recorded(cur: Cursor, run_ids: Sequence[str]) -> dict[str, dict[int, RecordedStep]]:
        marks = ", ".join("?" for _ in run_ids)
        cur.execute(
            "SELECT run_id, position, name, state, output, error, attempts, retry_base,"
            f" next_attempt_at FROM surestep_steps WHERE run_id IN ({marks})",
            list(run_ids),
        )
        found: dict[str, dict[int, RecordedStep]] = {}
        for r in cur.fetchall():
            found.setdefault(r[0], {})[r[1]] = RecordedStep(
                r[2], State(r[3]), r[4], r[5], r[6], r[7], r[8]
            )
        return found

    @staticmethod
    def _workflow_pairs(workflows: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
        """A parameterised filter on (workflow, workflow_version) pairs."""
        clause = " OR ".join("(workflow = ? AND workflow_version = ?)" for _ in workflows)
        return f"({clause})", [part for pair in workflows for part in pair]

    def _fence(self, cur: Cursor, run_id: str, token: int) -> None:
        cur.execute(
            "SELECT 1 FROM surestep_runs WHERE id = ? AND lease_token = ?"
            f" AND state = 'running' {self.lock_fence}",
            (run_id, token),
        )
        if cur.fetchone() is None:
            raise LeaseLostError(
                f"run {run_id!r} is no longer held under lease {token}: it was cancelled "
                f"or another worker took it over"
            )

    def _state_for_update(self, cur: Cursor, run_id: str) -> State:
        cur.execute(f"SELECT state FROM surestep_runs WHERE id = ? {self.lock_fence}", (run_id,))
        row = cur.fetchone()
        if row is None:
            raise RunNotFoundError(
                f"no run with id {run_id!r}; `surestep runs` lists the runs there are"
            )
        return State(row[0])

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
        )
