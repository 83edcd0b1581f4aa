"""The storage contract: the few operations the engine needs, in portable SQL.

Every write that a worker makes for a run is *fenced*: it carries the lease token the
worker got when it claimed the run, and is refused (``LeaseLostError``) once another
worker has claimed the run or an operator has cancelled it. Dialects supply the
connection handling and a handful of SQL differences; nothing else.
"""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from surestep.errors import (
    CorruptRecordError,
    IdempotencyConflictError,
    InvalidOperationError,
    LeaseLostError,
    RunNotFoundError,
)
from surestep.states import State, check_run_transition, check_step_transition
from surestep.storage.decode import Where, json_value, optional_state
from surestep.storage.decode import state as state_of
from surestep.storage.reads import RunQueries
from surestep.storage.rows import (
    ClaimedRun,
    Cursor,
    Placement,
    RecordedStep,
    Released,
    StepOutcome,
    placement_columns,
)
from surestep.storage.statements import (
    CLAIM_COLUMNS,
    EVENT_INSERT,
    FENCED_ATTEMPT_INSERT,
    PRUNED_WITH_RUN,
    STEP_UPSERT,
    TWO_EVENTS_INSERT,
)
from surestep.storage.transient import retry_transient

__all__ = [
    "CLAIM_COLUMNS",
    "EVENT_INSERT",
    "ClaimedRun",
    "Cursor",
    "RecordedStep",
    "SQLStore",
    "StepOutcome",
    "check_outcome",
]

log = logging.getLogger("surestep.storage")


class SQLStore(RunQueries):
    """Storage in a SQL database. Subclasses provide connections and dialect pieces."""

    #: Appended to SELECTs that pick rows to change, so that concurrent claimers skip
    #: each other's rows instead of waiting (PostgreSQL: ``FOR UPDATE SKIP LOCKED``).
    lock_rows = ""
    #: Appended to the fencing check, so a concurrent cancel waits for our commit.
    lock_fence = ""
    #: Appended to a read of a run about to be changed (cancel, redrive).
    lock_for_update = ""
    #: Run when a run becomes claimable, to wake idle workers (PostgreSQL: NOTIFY).
    notify_sql: str | None = None
    #: Whether statements may take arrays and lateral joins (PostgreSQL), so that one
    #: statement of fixed text serves any number of values.
    lateral_joins = False
    #: How often an idle worker polls when nothing wakes it.
    default_poll_interval = 0.1
    #: How long an operation is retried through transient errors (a server restart).
    reconnect_timeout = 60.0

    def server_time(self) -> float | None:
        """The database server's clock in epoch seconds, or None if it has none of its
        own (SQLite: the file is on this host, read with this host's clock)."""
        return None

    def listen(self, on_notify: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``on_notify`` whenever a run becomes claimable; return a function that
        stops listening, or None if this database cannot notify (workers then poll)."""
        return None

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Cursor]:
        """A write transaction: commit on normal exit, roll back on error."""

    def unsynced(self) -> AbstractContextManager[Cursor]:
        """A write transaction whose durability may wait for the next commit that is
        synced: for writes that recovery redoes if a power cut undoes them (a claim, a
        run's end). Where the database has no such mode, an ordinary transaction."""
        return self.transaction()

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

    @retry_transient
    def create_run(
        self,
        run_id: str,
        workflow: str,
        version: str,
        inputs: str,
        now: float,
        actor: str,
        parent_id: str | None = None,
        *,
        deadline_at: float | None = None,
        on_deadline: str | None = None,
        trace_context: str | None = None,
        budget_usd: float | None = None,
        placement: Placement | None = None,
    ) -> bool:
        """Insert a pending run; return False when ``run_id`` exists already.

        An existing run of another workflow or with other inputs is a conflict: the
        run id is an idempotency key, and reusing it for different work is a bug.
        """
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
                " created_at, updated_at, available_at, parent_id, deadline_at, on_deadline,"
                " trace_context, budget_usd, queue, priority, concurrency_key)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    run_id,
                    workflow,
                    version,
                    inputs,
                    now,
                    now,
                    now,
                    parent_id,
                    deadline_at,
                    on_deadline,
                    trace_context,
                    budget_usd,
                    *placement_columns(placement),
                ),
            )
            if cur.rowcount == 1:
                cur.execute(
                    EVENT_INSERT,
                    (run_id, None, None, None, State.PENDING, now, actor, "started", None),
                )
                self._notify(cur)
                return True
            cur.execute("SELECT workflow, inputs FROM surestep_runs WHERE id = ?", (run_id,))
            existing_workflow, existing_inputs = cur.fetchone()
        if existing_workflow != workflow:
            raise IdempotencyConflictError(
                f"run id {run_id!r} is taken by a run of workflow {existing_workflow!r}; "
                f"choose another run_id for workflow {workflow!r}"
            )
        if json_value(existing_inputs, Where("surestep_runs", run_id), "inputs") != json.loads(
            inputs
        ):
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
        """Lease up to ``limit`` runs that are due, of the given (name, version) pairs.

        Not retried on a transient error: if the commit went through but its
        acknowledgement was lost, a retry would lease a second batch. The worker instead
        takes back the leases it holds but is not executing, then claims again.
        """
        if limit <= 0 or not workflows:
            return []
        sql, params = self._due_runs(workflows, now, limit)
        with self.unsynced() as cur:
            cur.execute(sql, params)
            return self._lease(cur, cur.fetchall(), worker, now, lease_seconds)

    def _lease(
        self, cur: Cursor, rows: Sequence[Any], worker: str, now: float, lease_seconds: float
    ) -> list[ClaimedRun]:
        """Lease the due runs ``rows`` (``CLAIM_COLUMNS`` first) to ``worker``, inside the
        claim's transaction: each goes to running with a new token, its steps read."""
        if not rows:
            return []
        expires = now + lease_seconds
        # available_at stays: it is the run's place in the queue, which a release
        # (the worker died, or shut down) gives back to it.
        cur.executemany(
            "UPDATE surestep_runs SET state = 'running', lease_owner = ?,"
            " lease_token = ?, lease_expires_at = ?, updated_at = ? WHERE id = ?",
            [(worker, row[5] + 1, expires, now, row[0]) for row in rows],
        )
        cur.executemany(
            EVENT_INSERT,
            [
                (row[0], None, None, row[1], State.RUNNING, now, worker, "claimed", None)
                for row in rows
            ],
        )
        problems: dict[str, CorruptRecordError] = {}
        recorded = self._recorded(cur, [row[0] for row in rows], problems)
        for row in rows:
            self._check_run_row(row, problems)
        for run_id, problem in problems.items():
            token = next(row[5] + 1 for row in rows if row[0] == run_id)
            self._quarantine(cur, run_id, token, worker, problem, now)
        return [
            ClaimedRun(
                r[0],
                r[2],
                r[3],
                r[4],
                r[5] + 1,
                recorded.get(r[0], {}),
                parent_id=r[6],
                compensating=r[7],
                trace_context=r[8],
                due_at=r[9],
            )
            for r in rows
            if r[0] not in problems
        ]

    @staticmethod
    def _check_run_row(row: Sequence[Any], problems: dict[str, CorruptRecordError]) -> None:
        """Note a claimed run whose own columns the worker could not decode."""
        where = Where("surestep_runs", row[0])
        try:
            json_value(row[4], where, "inputs")
            optional_state(row[7], where, "compensating")
        except CorruptRecordError as exc:
            problems.setdefault(row[0], exc)

    def _quarantine(
        self,
        cur: Cursor,
        run_id: str,
        token: int,
        worker: str,
        problem: CorruptRecordError,
        now: float,
    ) -> None:
        """Dead-letter a run this worker just claimed, because a record of it cannot be
        decoded: executing it would fail it for good (or stop the worker), while parked
        it waits for a repair and `surestep retry`. Fenced by the claim's token."""
        check_run_transition(State.RUNNING, State.DEAD_LETTER)
        error = json.dumps({"type": "CorruptRecordError", "message": str(problem)})
        # An unknown `compensating` state is cleared (the error keeps what it was): the
        # schema's state check would refuse the row otherwise.
        clear = problem.table == "surestep_runs" and problem.column == "compensating"
        cur.execute(
            "UPDATE surestep_runs SET state = 'dead_letter', lease_owner = NULL,"
            " lease_expires_at = NULL, available_at = NULL, updated_at = ?, error = ?,"
            " compensating = CASE WHEN ? THEN NULL ELSE compensating END"
            " WHERE id = ? AND lease_token = ? AND state = 'running'",
            (now, error, clear, run_id, token),
        )
        cur.execute(
            EVENT_INSERT,
            (
                run_id,
                None,
                None,
                State.RUNNING,
                State.DEAD_LETTER,
                now,
                worker,
                problem.reason,
                None,
            ),
        )
        log.error("run %s quarantined in dead_letter: %s", run_id, problem)

    def _due_runs(
        self, workflows: Sequence[tuple[str, str]], now: float, limit: int
    ) -> tuple[str, list[Any]]:
        """The claim's SELECT: the earliest due runs of each (workflow, version) pair,
        read from the pair's own range of the claimable index, then the earliest of
        those. A backlog of other workflows' due runs is never read."""
        one = (
            f"SELECT * FROM (SELECT {CLAIM_COLUMNS} FROM surestep_runs"
            " WHERE workflow = ? AND workflow_version = ? AND state IN ('pending', 'waiting')"
            " AND available_at <= ? ORDER BY available_at LIMIT ?) AS due"
        )
        params: list[Any] = []
        for name, version in workflows:
            params += [name, version, now, limit]
        sql = " UNION ALL ".join([one] * len(workflows)) + " ORDER BY available_at LIMIT ?"
        return sql, [*params, limit]

    @retry_transient
    def record_step(self, run_id: str, token: int, worker: str, outcome: StepOutcome) -> None:
        """Checkpoint one attempt of a step: the step row, the attempt and its events.

        This is the engine's per-step write, so it is one transaction and nothing more.
        """
        check_outcome(outcome)
        with self.transaction() as cur:
            self.write_step(cur, run_id, token, worker, outcome)

    def write_step(
        self, cur: Cursor, run_id: str, token: int, worker: str, outcome: StepOutcome
    ) -> None:
        """``record_step``'s writes, inside the caller's transaction."""
        o = outcome
        # The step may be waiting or dead-lettered; the attempt itself either succeeded
        # or failed. The attempt is inserted only while the lease holds (the fence).
        attempt_state = State.SUCCESS if o.to_state == State.SUCCESS else State.FAILED
        cur.execute(
            FENCED_ATTEMPT_INSERT.format(lock=self.lock_fence),
            (
                run_id,
                o.position,
                o.attempt,
                attempt_state,
                o.started_at,
                o.finished_at,
                worker,
                o.error,
                run_id,
                token,
            ),
        )
        if cur.rowcount == 0:
            # Fenced off (raise), or recorded already: a retry of a commit whose
            # acknowledgement was lost with the connection.
            self._fence(cur, run_id, token)
            return
        cur.execute(
            STEP_UPSERT,
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
                o.compensation,
                o.inputs,
            ),
        )
        cur.execute(
            TWO_EVENTS_INSERT,
            (
                *(run_id, o.position, o.name, o.from_state, State.RUNNING),
                *(o.started_at, worker, None, o.attempt),
                *(run_id, o.position, o.name, State.RUNNING, o.to_state),
                *(o.finished_at, worker, o.reason, o.attempt),
            ),
        )

    @retry_transient
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

    @retry_transient
    def release(
        self,
        runs: Sequence[tuple[str, int]],
        actor: str,
        reason: str,
        now: float,
        *,
        max_recoveries: int | None = None,
    ) -> Released:
        """Put leased runs back to pending, each only if it still has the given token.

        A released run keeps its place in the queue (the time it was due when claimed),
        so a run recovered from a dead worker is not queued behind a backlog that
        arrived while it was running.

        With ``max_recoveries`` the release is a *recovery* (the worker died or its lease
        lapsed): a run recovered that many times in a row without recording a new
        attempt in between is dead-lettered instead, since its next step most likely
        crashes whatever process runs it.
        """
        released = 0
        dead: list[tuple[str, str]] = []
        with self.transaction() as cur:
            for run_id, token in runs:
                # Skip a run whose row another transaction holds: a frozen worker may
                # hold it mid-transaction, and waiting on it would stall this worker.
                cur.execute(
                    "SELECT workflow FROM surestep_runs WHERE id = ? AND lease_token = ?"
                    f" AND state = 'running' {self.lock_rows}",
                    (run_id, token),
                )
                found = cur.fetchone()
                if found is None:
                    continue
                to_state, why, error, recoveries, mark = self._recovery(
                    cur, run_id, reason, max_recoveries
                )
                cur.execute(
                    "UPDATE surestep_runs SET state = ?, lease_owner = NULL,"
                    " lease_expires_at = NULL,"
                    " available_at = CASE WHEN ? THEN COALESCE(available_at, ?) END,"
                    " updated_at = ?, recoveries = ?, recovery_mark = ?, error = ?"
                    " WHERE id = ? AND lease_token = ? AND state = 'running'",
                    (
                        to_state,
                        to_state == State.PENDING,
                        now,
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
                    if to_state == State.DEAD_LETTER:
                        dead.append((run_id, str(found[0])))
                    cur.execute(
                        EVENT_INSERT,
                        (run_id, None, None, State.RUNNING, to_state, now, actor, why, None),
                    )
            if released:
                self._notify(cur)
        return Released(released, tuple(dead))

    def _recovery(
        self, cur: Cursor, run_id: str, reason: str, max_recoveries: int | None
    ) -> tuple[State, str, str | None, int, int]:
        """Where a released run goes (pending, or dead_letter once recovered
        ``max_recoveries`` times in a row without progress), why, its error, and the
        recovery count and progress mark to store."""
        if max_recoveries is None:
            return State.PENDING, reason, None, 0, -1
        recoveries, mark = self._count_recovery(cur, run_id)
        if recoveries < max_recoveries:
            return State.PENDING, reason, None, recoveries, mark
        why = (
            f"{reason}; recovered {recoveries} times in a row without progress: the step "
            f"after the last checkpoint probably crashes its worker (out of memory? a "
            f"native crash?). Fix it, then `surestep retry` the run"
        )
        error = json.dumps({"type": "RecoveryLimit", "message": why})
        return State.DEAD_LETTER, why, error, recoveries, mark

    def _count_recovery(self, cur: Cursor, run_id: str) -> tuple[int, int]:
        """(recoveries in a row without progress, counting this one; the progress mark)."""
        cur.execute("SELECT COUNT(*) FROM surestep_attempts WHERE run_id = ?", (run_id,))
        progress = int(cur.fetchone()[0])
        cur.execute("SELECT recoveries, recovery_mark FROM surestep_runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        if row is None:
            return 0, progress
        return (int(row[0]) + 1 if row[1] == progress else 1), progress

    @retry_transient
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
                    EVENT_INSERT,
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
                EVENT_INSERT,
                (run_id, None, None, state, State.PENDING, now, actor, reason, None),
            )
            self._notify(cur)
        return [name for _, name, _ in steps]

    @retry_transient
    def prune(self, before: float, batch: int = 1000) -> int:
        """Delete finished runs last changed before ``before`` (epoch seconds), with
        what is theirs (``PRUNED_WITH_RUN``), ``batch`` runs per transaction; return how
        many.

        Dead-lettered, waiting and running runs are never pruned. Review tasks and
        decisions are kept: they are the audit trail, and the data thresholds learn from.
        """
        total = 0
        while True:
            with self.transaction() as cur:
                cur.execute(
                    "SELECT id FROM surestep_runs"
                    " WHERE state IN ('success', 'failed', 'cancelled') AND updated_at < ?"
                    f" ORDER BY updated_at LIMIT ? {self.lock_rows}",
                    (before, batch),
                )
                ids = [row[0] for row in cur.fetchall()]
                if not ids:
                    return total
                marks = ", ".join("?" for _ in ids)
                # Runs first: the event log's trigger lets events go only once their
                # run is gone.
                cur.execute(f"DELETE FROM surestep_runs WHERE id IN ({marks})", ids)
                for table, column in PRUNED_WITH_RUN:
                    cur.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
            total += len(ids)

    # -- pieces -------------------------------------------------------------------

    def _notify(self, cur: Cursor) -> None:
        if self.notify_sql is not None:
            cur.execute(self.notify_sql)

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
        cur.execute(
            f"SELECT state FROM surestep_runs WHERE id = ? {self.lock_for_update}", (run_id,)
        )
        row = cur.fetchone()
        if row is None:
            raise RunNotFoundError(
                f"no run with id {run_id!r}; `surestep runs` lists the runs there are"
            )
        return state_of(row[0], Where("surestep_runs", run_id))


def check_outcome(outcome: StepOutcome) -> None:
    """Refuse a checkpoint whose transitions the step state table does not allow."""
    check_step_transition(outcome.from_state, State.RUNNING)
    check_step_transition(State.RUNNING, outcome.to_state)
