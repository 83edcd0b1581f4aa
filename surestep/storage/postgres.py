"""PostgreSQL: how surestep scales out. Any number of workers on any number of machines
share one database; ``FOR UPDATE SKIP LOCKED`` keeps their claims apart and
``LISTEN``/``NOTIFY`` wakes idle workers when a run becomes due.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import surestep.storage.postgres_ends as ends
import surestep.storage.postgres_steps as steps
from surestep.errors import (
    ConfigurationError,
    CorruptRecordError,
    LeaseLostError,
    MissingDependencyError,
    StorageError,
)
from surestep.states import TERMINAL, State, check_run_transition, check_step_transition
from surestep.storage.base import CLAIM_COLUMNS
from surestep.storage.coordination import CoordinationStore
from surestep.storage.group_commit import GroupCommit
from surestep.storage.migrations import check_recorded, pending
from surestep.storage.rows import ClaimedRun, Cursor, StepOutcome
from surestep.storage.transient import postgres_transient, retry_transient
from surestep.storage.urls import redact

try:
    import psycopg
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as missing:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "PostgreSQL support needs psycopg 3 and psycopg_pool: pip install 'surestep[postgres]'"
    ) from missing

log = logging.getLogger("surestep.postgres")

CHANNEL = ends.CHANNEL
# Serialises migrations of concurrently starting workers; any constant will do, as long
# as every surestep process uses the same one.
_MIGRATION_LOCK = 0x5375_7265  # "Sure"
_OPTIONS = {
    "pool_size": "the most connections this App opens (default 8)",
    "group_commit": "on (default) or off: whether checkpoints ready at once share a commit",
}


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    # The shared SQL is written with qmark placeholders; psycopg wants %s. No statement
    # of ours contains a literal ? or %.
    return sql.replace("?", "%s")


class _Cursor:
    """A psycopg cursor that speaks the shared SQL's placeholders."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(_placeholders(sql), params)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any:
        return self._cursor.executemany(_placeholders(sql), params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class PostgresStore(CoordinationStore):
    """Storage in a PostgreSQL database, through a pool of psycopg 3 connections."""

    lock_rows = "FOR UPDATE SKIP LOCKED"
    lock_fence = "FOR SHARE"
    lock_for_update = "FOR UPDATE"
    notify_sql = f"SELECT pg_notify('{CHANNEL}', '')"
    lateral_joins = True
    default_poll_interval = 1.0  # NOTIFY does the waking; polling is the fallback

    def __init__(self, url: str, *, upgrade_to: int | None = None) -> None:
        self.url, pool_size, self._batching = _split_options(url)
        self._description = _redacted(self.url)
        self._probe()
        #: Batches the checkpoints of this process's runs: one statement and one commit
        #: for those ready at once (``commits`` and ``writes`` count the transactions and
        #: the checkpoints they held).
        self.group_commit: GroupCommit[dict[str, Any]] = GroupCommit(
            self._record_one, self._record_many
        )
        #: Batches written again one checkpoint at a time (a row of theirs was refused).
        self.batch_fallbacks = 0
        self._pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=pool_size,
            open=False,
            name="surestep",
            # Autocommit: a single statement (the per-step checkpoint) commits in its own
            # round trip; multi-statement work opens conn.transaction() explicitly.
            kwargs={"autocommit": True},
            configure=_configure,
            # A broken connection (server restart) is discarded when it is returned;
            # the pool replaces it in the background.
            reconnect_timeout=60,
        )
        try:
            self._pool.open(wait=True, timeout=10)
        except PoolTimeout:
            self._pool.close()
            raise StorageError(
                f"cannot connect to PostgreSQL at {self._description} within 10 s: is the "
                f"server running and reachable, and do the user and database exist?",
                transient=True,
            ) from None
        try:
            self._migrate(upgrade_to)
        except BaseException:
            self._pool.close()
            raise

    @property
    def description(self) -> str:
        return self._description

    def _probe(self) -> None:
        """Connect once, so a wrong address, database or role fails at once with
        libpq's own reason rather than after the pool's retries."""
        try:
            psycopg.connect(self.url, connect_timeout=10).close()
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StorageError(
                f"cannot connect to PostgreSQL at {self._description}: {reason} (check that "
                f"the server is running and reachable, and that the user and database exist)",
                transient=postgres_transient(
                    getattr(exc, "sqlstate", None), isinstance(exc, psycopg.OperationalError)
                ),
            ) from None

    def transaction(self) -> AbstractContextManager[Cursor]:
        return self._transaction(begin=True)

    def reading(self) -> AbstractContextManager[Cursor]:
        # Autocommit: a single SELECT needs no BEGIN/COMMIT round trips.
        return self._transaction(begin=False)

    def snapshot(self) -> AbstractContextManager[Cursor]:
        return self._transaction(begin=True, isolation="REPEATABLE READ READ ONLY")

    @contextmanager
    def _transaction(self, begin: bool, isolation: str | None = None) -> Iterator[Cursor]:
        try:
            with self._pool.connection(timeout=30) as conn, conn.cursor() as cur:
                if not begin:
                    yield _Cursor(cur)
                    return
                with conn.transaction():
                    if isolation is not None:
                        cur.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
                    yield _Cursor(cur)
        except psycopg.Error as exc:
            raise _explain(exc, self._description) from None
        except PoolTimeout:
            raise StorageError(
                f"no PostgreSQL connection free within 30 s at {self._description}; "
                f"raise pool_size or lower the worker's concurrency",
                transient=True,
            ) from None

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in autocommit, for work done in one statement."""
        try:
            with self._pool.connection(timeout=30) as conn:
                yield conn
        except psycopg.Error as exc:
            raise _explain(exc, self._description) from None
        except PoolTimeout:
            raise StorageError(
                f"no PostgreSQL connection free within 30 s at {self._description}",
                transient=True,
            ) from None

    def close(self) -> None:
        self._pool.close()

    def server_time(self) -> float:
        # clock_timestamp(), not now(): now() is the start of the transaction.
        with self.reading() as cur:
            cur.execute("SELECT extract(epoch FROM clock_timestamp())::double precision")
            return float(cur.fetchone()[0])

    def _due_runs(
        self, workflows: Sequence[tuple[str, str]], now: float, limit: int
    ) -> tuple[str, list[Any]]:
        # As the portable query, with a LATERAL join so that the rows can be locked:
        # FOR UPDATE SKIP LOCKED is not allowed on a UNION.
        pairs = ", ".join("(?, ?)" for _ in workflows)
        sql = (
            f"SELECT due.* FROM (VALUES {pairs}) AS wanted (workflow, version)"
            f" CROSS JOIN LATERAL (SELECT {CLAIM_COLUMNS} FROM surestep_runs"
            " WHERE workflow = wanted.workflow AND workflow_version = wanted.version"
            " AND state IN ('pending', 'waiting') AND available_at <= ?"
            " ORDER BY available_at LIMIT ? FOR UPDATE SKIP LOCKED) AS due"
            " ORDER BY due.available_at LIMIT ?"
        )
        return sql, [*(part for pair in workflows for part in pair), now, limit, limit]

    def claim(
        self,
        worker: str,
        workflows: Sequence[tuple[str, str]],
        limit: int,
        now: float,
        lease_seconds: float,
    ) -> list[ClaimedRun]:
        """The contract's claim (see ``SQLStore.claim``) in one statement: the runs
        leased, their claims logged and their recorded steps read in one round trip.
        Not retried on a transient error, for the same reason."""
        if limit <= 0 or not workflows:
            return []
        params = ends.claim_params(worker, workflows, limit, now, lease_seconds)
        with self._connection() as conn:
            rows = conn.execute(ends.CLAIM, params).fetchall()
        if not rows:
            return []
        runs, steps = ends.split_claimed(rows)
        problems: dict[str, CorruptRecordError] = {}
        recorded = self._decode_recorded(steps, problems)
        for row in runs:
            self._check_run_row(row, problems)
        if problems:
            # Rare: a record that cannot be decoded. The run is leased to this worker
            # already; parking it (fenced by the new token) is a transaction of its own.
            with self.transaction() as cur:
                for row in runs:
                    if row[0] in problems:
                        self._quarantine(cur, row[0], row[5], worker, problems[row[0]], now)
        return [
            ClaimedRun(
                r[0],
                r[2],
                r[3],
                r[4],
                r[5],
                recorded.get(r[0], {}),
                parent_id=r[6],
                compensating=r[7],
                trace_context=r[8],
                due_at=r[9],
            )
            for r in runs
            if r[0] not in problems
        ]

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
        waiting_for: Sequence[str] = (),
        parent_id: str | None = None,
    ) -> None:
        """The contract's finish (see ``CoordinationStore.finish``), in one statement
        when nothing beyond the run itself takes part in its end: no parent to wake, no
        children to cancel, no wait to check, no end listener with work to do (their
        ``end_probes`` say). Otherwise, the general transaction.

        A retry after a lost acknowledgement finds the run ended by this very finish
        (same state, token and time) and returns, as if the first try had answered."""
        check_run_transition(State.RUNNING, to_state)
        ending = ends.Ending(run_id, token, worker, to_state, now)
        fields: dict[str, Any] = {"output": output, "error": error, "reason": reason}
        fields |= {"available_at": available_at, "waiting_for": waiting_for}
        if ends.finishes_in_one(to_state, waiting_for, parent_id):
            probes = tuple(self.end_probes.get(f) for f in self.end_listeners)
            if None not in probes:
                sql = ends.finish_sql(tuple(p for p in probes if p is not None))
                quiet, ended, already = self._finish_in_one(sql, ends.finish_params(ending, fields))
                if ended or already:
                    return
                if quiet:
                    raise LeaseLostError(f"run {run_id!r} is no longer held by {worker}")
        elif (
            to_state in TERMINAL
            and parent_id is not None
            and self._end_child_in_one(ending, fields, parent_id)
        ):
            return
        try:
            super().finish(run_id, token, worker, to_state, now, parent_id=parent_id, **fields)
        except LeaseLostError:
            if not self._ended_by(ending):
                raise

    def _end_child_in_one(self, ending: ends.Ending, fields: dict[str, Any], parent: str) -> bool:
        """A child's end in the one statement of the end listener it concerns (a map's
        child counting itself, see ``end_statements``), if it has one for this run and
        no other listener has work: whether the run was ended (or had been, by this very
        finish). False: the general path ends it."""
        for owner, statement in self.end_statements.items():
            others = [f for f in self.end_listeners if f != owner]
            probes = tuple(self.end_probes[f] for f in others if f in self.end_probes)
            if len(probes) < len(others):
                continue  # a listener that cannot tell whether it has work
            found = statement(ending.run_id, parent, (ends._CHILDREN, *probes))
            if found is None:
                continue
            sql, extra = found
            params = ends.finish_params(ending, fields) | extra
            quiet, ended, already = self._finish_in_one(sql, params)
            if quiet and not (ended or already):
                raise LeaseLostError(f"run {ending.run_id!r} is no longer held by {ending.worker}")
            return ended or already
        return False

    @retry_transient
    def _finish_in_one(self, sql: str, params: dict[str, Any]) -> tuple[bool, bool, bool]:
        """(no listener has work, the run was ended, it had been ended by this finish)."""
        with self._connection() as conn:
            row = conn.execute(sql, params).fetchone()
        assert row is not None
        return bool(row[0]), bool(row[1]), bool(row[2])

    @retry_transient
    def _ended_by(self, ending: ends.Ending) -> bool:
        """Whether ``ending`` happened already: a finish whose acknowledgement was lost."""
        with self._connection() as conn:
            row = conn.execute(ends.ENDED_BY, ends.finish_params(ending, {})).fetchone()
        return row is not None

    @retry_transient
    def record_step(self, run_id: str, token: int, worker: str, outcome: StepOutcome) -> None:
        """The contract's per-step checkpoint (see ``SQLStore.record_step``), in one
        round trip: fenced, idempotent and atomic like the portable version. Committed
        together with the checkpoints other threads of this process have ready (see
        :mod:`.postgres_steps`), unless the URL says ``group_commit=off``."""
        check_step_transition(outcome.from_state, State.RUNNING)
        check_step_transition(State.RUNNING, outcome.to_state)
        checkpoint = steps.step_params(run_id, token, worker, outcome)
        if self._batching:
            self.group_commit.submit(checkpoint)
        else:
            self._record_one(checkpoint)

    def _record_one(self, checkpoint: dict[str, Any]) -> None:
        with self._connection() as conn:
            row = conn.execute(steps.RECORD_STEP, checkpoint).fetchone()
        if row is None or not row[0]:
            raise _lease_lost(checkpoint)

    def _record_many(
        self, checkpoints: Sequence[dict[str, Any]], errors: list[BaseException | None]
    ) -> int:
        """Several runs' checkpoints in one statement; returns how many commits it took.

        A transient failure (the connection lost, the ack with it) fails the batch as a
        whole: each thread retries its own checkpoint, which finds it recorded if it was.
        Any other failure is one row's (a constraint, text that cannot be encoded): the
        batch is written again one checkpoint at a time, so that the others commit and it
        alone fails. A run the statement left out (fenced off, or its row locked by
        another transaction) is then written alone, which raises ``LeaseLostError`` if it
        was fenced off."""
        try:
            with self._connection() as conn:
                held = {
                    row[0]
                    for row in conn.execute(steps.RECORD_STEPS, steps.batch_params(checkpoints))
                }
        except (StorageError, UnicodeEncodeError) as exc:  # a row's text libpq cannot send
            if isinstance(exc, StorageError) and exc.transient:
                raise
            self.batch_fallbacks += 1
            return self._record_each(checkpoints, range(len(checkpoints)), errors)
        left_out = [i for i, c in enumerate(checkpoints) if c["run"] not in held]
        return 1 + self._record_each([checkpoints[i] for i in left_out], left_out, errors)

    def _record_each(
        self,
        checkpoints: Sequence[dict[str, Any]],
        places: Sequence[int],
        errors: list[BaseException | None],
    ) -> int:
        """Each checkpoint in a statement and a commit of its own, its error noted at its
        place in ``errors``; returns how many committed."""
        committed = 0
        for place, checkpoint in zip(places, checkpoints, strict=True):
            try:
                self._record_one(checkpoint)
                committed += 1
            except Exception as exc:
                errors[place] = exc
        return committed

    def listen(self, on_notify: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_notify`` (from a thread) whenever a run becomes claimable.

        Returns a function that stops listening. The listener reconnects with backoff
        after losing its connection, and calls ``on_notify`` once on reconnecting, as it
        may have missed notifications meanwhile.
        """
        stop = threading.Event()
        thread = threading.Thread(
            target=self._listen, args=(on_notify, stop), name="surestep-listen", daemon=True
        )
        thread.start()

        def unlisten() -> None:
            stop.set()
            thread.join(timeout=5)

        return unlisten

    def _listen(self, on_notify: Callable[[], None], stop: threading.Event) -> None:
        pause = 0.1
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    pause = 0.1
                    on_notify()
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=64):
                            on_notify()
            except psycopg.Error as exc:
                if stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, pause)
                stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _migrate(self, upgrade_to: int | None) -> None:
        try:
            with self._pool.connection() as conn, conn.transaction():
                # The advisory lock makes workers that start together against an empty
                # database apply the migrations once, one after another.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS surestep_migrations (version INTEGER PRIMARY "
                    "KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
                row = conn.execute("SELECT MAX(version) FROM surestep_migrations").fetchone()
                current = int(row[0] or 0) if row else 0
                names = conn.execute(
                    "SELECT relname FROM pg_class"
                    " WHERE relnamespace = current_schema()::regnamespace"
                    " UNION ALL SELECT conname FROM pg_constraint"
                    " WHERE connamespace = current_schema()::regnamespace"
                ).fetchall()
                check_recorded("postgresql", current, {n[0] for n in names}, self._description)
                for migration in pending("postgresql", current, self._description, upgrade_to):
                    conn.execute(migration.sql.encode())  # several statements, no params
                    conn.execute(
                        "INSERT INTO surestep_migrations VALUES (%s, %s, %s)",
                        (migration.version, migration.name, time.time()),
                    )
        except psycopg.Error as exc:
            raise _explain(exc, self._description) from None


def _lease_lost(checkpoint: dict[str, Any]) -> LeaseLostError:
    return LeaseLostError(
        f"run {checkpoint['run']!r} is no longer held under lease {checkpoint['token']}: it "
        f"was cancelled or another worker took it over"
    )


def _configure(conn: psycopg.Connection[Any]) -> None:
    # surestep's transactions last milliseconds. A session idle inside one is a frozen or
    # partitioned worker holding row locks; end it rather than let it block others.
    conn.execute("SET idle_in_transaction_session_timeout = '60s'")


def _split_options(url: str) -> tuple[str, int, bool]:
    """Take surestep's own options (``_OPTIONS``) out of the URL: the URL left for libpq,
    the pool size and whether to group commits."""
    parts = urlsplit(url)
    kept, pool_size, group_commit = [], 8, True
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "pool_size":
            if not value.isdigit() or int(value) < 1:
                raise ConfigurationError(
                    f"pool_size={value!r} in the database URL: use a whole number >= 1"
                )
            pool_size = int(value)
        elif key == "group_commit":
            if value not in ("on", "off"):
                raise ConfigurationError(
                    f"group_commit={value!r} in the database URL: use on or off"
                )
            group_commit = value == "on"
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), pool_size, group_commit


def _redacted(url: str) -> str:
    return redact(url)


def _explain(exc: psycopg.Error, where: str) -> StorageError:
    sqlstate = getattr(exc, "sqlstate", None)
    transient = postgres_transient(sqlstate, isinstance(exc, psycopg.OperationalError))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if transient:
        hint = "a transient error: the connection failed, or the server is busy or restarting"
    elif sqlstate == "23514":
        hint = "surestep's schema refuses this row; it is not retried"
    elif sqlstate is not None and sqlstate.startswith("54"):
        hint = "a value is too large for the database (an id or name?); it is not retried"
    else:
        hint = "see the PostgreSQL message; it is not retried"
    code = "" if sqlstate is None else f" [SQLSTATE {sqlstate}]"
    return StorageError(f"PostgreSQL at {where}: {text}{code} ({hint})", transient=transient)
