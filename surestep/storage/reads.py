"""The read side of the storage contract: what the engine, the CLI and the API query."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from surestep.errors import CorruptRecordError, RunNotFoundError
from surestep.records import AttemptRecord, EventRecord, RunRecord, StepRecord
from surestep.states import State
from surestep.storage.decode import Where, json_value, optional_state
from surestep.storage.decode import state as state_of
from surestep.storage.rows import DEADLINE_STATES, Cursor, RecordedStep
from surestep.storage.transient import retry_transient

_RUN_COLUMNS = (
    "id, workflow, workflow_version, state, inputs, output, error, created_at, updated_at,"
    " available_at, lease_owner, parent_id, deadline_at, on_deadline, deadline_breached_at,"
    " waiting_for, compensating"
)

#: What a worker reads of a run's recorded steps to replay them (``_recorded``).
RECORDED_COLUMNS = (
    "run_id, position, name, state, output, error, attempts, retry_base, next_attempt_at,"
    " compensation, inputs, review_inputs"
)

T = TypeVar("T")


class _Problems:
    """Collects what cannot be decoded while a run is read for display, so that one
    corrupt row marks its run instead of failing the listing."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def decode(self, default: T, decode: Callable[..., T], *args: Any) -> T:
        """``decode(*args)``, or ``default`` when the record is corrupt (noted)."""
        try:
            return decode(*args)
        except CorruptRecordError as exc:
            self.found.append(f"{exc.reason}: {exc.detail}")
            return default


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
        if row is None:
            return None
        return state_of(row[0], Where("surestep_runs", run_id)), row[1], row[2], row[3]

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
            problems = _Problems()
            attempts = self._attempts(cur, run_id, problems)
            steps = self._steps(cur, run_id, attempts, problems)
            events = self._events(cur, run_id, problems)
        return self._run_record(row, steps, events, problems)

    @retry_transient
    def list_runs(
        self,
        state: State | None = None,
        workflow: str | None = None,
        limit: int = 50,
        parent: str | None = None,
        *,
        since: float | None = None,
        before: float | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first, optionally filtered by state, workflow and creation time
        (``since`` <= created_at < ``before``: a range of the same indexes); a parent's
        children (``parent``) in the order they were started (a map's: input order)."""
        where: list[str] = []
        params: list[Any] = []
        if parent is not None:
            where.append("parent_id = ?")
            params.append(parent)
        if since is not None:
            where.append("created_at >= ?")
            params.append(float(since))
        if before is not None:
            where.append("created_at < ?")
            params.append(float(before))
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
                f" ORDER BY {'id' if parent is not None else 'created_at DESC, id'} LIMIT ?",
                (*params, limit),
            )
            return [self._run_record(r, (), (), _Problems()) for r in cur.fetchall()]

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
                f" AND state IN {DEADLINE_STATES}"
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
            # A state surestep does not know (a corrupt row) is not counted here;
            # `surestep runs` shows such runs marked corrupt.
            known = {s.value for s in State}
            return {State(s): n for s, n in cur.fetchall() if s in known}

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
    def _recorded(
        cur: Cursor,
        run_ids: Sequence[str],
        problems: dict[str, CorruptRecordError] | None = None,
    ) -> dict[str, dict[int, RecordedStep]]:
        """The recorded steps of ``run_ids``, decoded and checked. A step that cannot be
        decoded raises :class:`CorruptRecordError`, or with ``problems`` is noted there
        (the first per run), so that the other runs are unaffected."""
        marks = ", ".join("?" for _ in run_ids)
        cur.execute(
            f"SELECT {RECORDED_COLUMNS} FROM surestep_steps WHERE run_id IN ({marks})",
            list(run_ids),
        )
        return RunQueries._decode_recorded(cur.fetchall(), problems)

    @staticmethod
    def _decode_recorded(
        rows: Sequence[Sequence[Any]], problems: dict[str, CorruptRecordError] | None = None
    ) -> dict[str, dict[int, RecordedStep]]:
        """Step rows (``RECORDED_COLUMNS``) by run and position, as ``_recorded``."""
        found: dict[str, dict[int, RecordedStep]] = {}
        for r in rows:
            where = Where("surestep_steps", r[0], r[1])
            try:
                # Replay decodes these columns; check them now, before the run is
                # executed, so that a bad one quarantines the run rather than failing it.
                for column, text in (
                    ("output", r[4]),
                    ("error", r[5]),
                    ("inputs", r[10]),
                    ("review_inputs", r[11]),
                ):
                    json_value(text, where, column)
                step = RecordedStep(
                    r[2], state_of(r[3], where), r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]
                )
            except CorruptRecordError as exc:
                if problems is None:
                    raise
                problems.setdefault(r[0], exc)
                continue
            found.setdefault(r[0], {})[r[1]] = step
        return found

    @staticmethod
    def _attempts(cur: Cursor, run_id: str, problems: _Problems) -> dict[int, list[AttemptRecord]]:
        cur.execute(
            "SELECT position, attempt, state, started_at, finished_at, worker, error"
            " FROM surestep_attempts WHERE run_id = ? ORDER BY position, attempt",
            (run_id,),
        )
        attempts: dict[int, list[AttemptRecord]] = {}
        for a in cur.fetchall():
            where = Where("surestep_attempts", run_id, a[0])
            a_state = problems.decode(None, state_of, a[2], where)
            if a_state is None:
                continue
            error = problems.decode(None, json_value, a[6], where, "error")
            attempts.setdefault(a[0], []).append(
                AttemptRecord(a[1], a_state, a[3], a[4], a[5], error)
            )
        return attempts

    @staticmethod
    def _steps(
        cur: Cursor,
        run_id: str,
        attempts: dict[int, list[AttemptRecord]],
        problems: _Problems,
    ) -> tuple[StepRecord, ...]:
        cur.execute(
            "SELECT position, name, state, output, error, attempts, started_at,"
            " finished_at, next_attempt_at, compensation, inputs FROM surestep_steps"
            " WHERE run_id = ? ORDER BY position",
            (run_id,),
        )
        steps = []
        for s in cur.fetchall():
            where = Where("surestep_steps", run_id, s[0])
            s_state = problems.decode(None, state_of, s[2], where)
            if s_state is None:
                continue
            output = problems.decode(None, json_value, s[3], where, "output")
            error = problems.decode(None, json_value, s[4], where, "error")
            problems.decode(None, json_value, s[10], where, "inputs")  # kept for its undo
            steps.append(
                StepRecord(
                    s[0],
                    s[1],
                    s_state,
                    s[5],
                    output,
                    error,
                    s[6],
                    s[7],
                    s[8],
                    tuple(attempts.get(s[0], ())),
                    s[9],
                )
            )
        return tuple(steps)

    @staticmethod
    def _events(cur: Cursor, run_id: str, problems: _Problems) -> tuple[EventRecord, ...]:
        cur.execute(
            "SELECT id, run_id, position, step, from_state, to_state, at, actor, reason,"
            " attempt FROM surestep_events WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        events = []
        for e in cur.fetchall():
            where = Where("surestep_events", run_id, e[2])
            before = len(problems.found)
            from_state = problems.decode(None, optional_state, e[4], where, "from_state")
            to_state = problems.decode(None, state_of, e[5], where, "to_state")
            if to_state is None or len(problems.found) > before:
                continue
            events.append(EventRecord(e[0], e[1], e[2], e[3], from_state, to_state, *e[6:10]))
        return tuple(events)

    @staticmethod
    def _run_record(
        row: Sequence[Any],
        steps: tuple[StepRecord, ...],
        events: tuple[EventRecord, ...],
        problems: _Problems,
    ) -> RunRecord:
        where = Where("surestep_runs", row[0])
        waiting_for = problems.decode(None, json_value, row[15], where, "waiting_for")
        inputs = problems.decode(None, json_value, row[4], where, "inputs")
        return RunRecord(
            id=row[0],
            workflow=row[1],
            workflow_version=row[2],
            # An unknown state is shown as it is stored, and named in ``corrupt``.
            state=problems.decode(str(row[3]), state_of, row[3], where),
            inputs=inputs if isinstance(inputs, dict) else {},
            output=problems.decode(None, json_value, row[5], where, "output"),
            error=problems.decode(None, json_value, row[6], where, "error"),
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
            waiting_for=tuple(waiting_for) if isinstance(waiting_for, list) else (),
            compensating=problems.decode(None, optional_state, row[16], where, "compensating"),
            corrupt=tuple(problems.found),
        )
