"""SQLite: the embedded default. One file, no server.

One connection per process, serialised by a lock: SQLite admits one writer at a time
anyway, and its busy handler sleeps in steps of up to 100 ms, so letting threads of one
process contend through it would cost far more than the lock. Other processes (more
workers, the CLI) contend through ``busy_timeout``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from surestep.errors import SchemaVersionError, StorageError
from surestep.storage.base import check_outcome
from surestep.storage.coordination import CoordinationStore
from surestep.storage.group_commit import GroupCommit
from surestep.storage.migrations import check_recorded, pending
from surestep.storage.rows import Cursor, StepOutcome
from surestep.storage.transient import retry_transient, sqlite_transient


class SQLiteStore(CoordinationStore):
    """Storage in one SQLite file, in WAL mode.

    ``synchronous="full"`` (the default) makes every commit durable across a power cut;
    ``"normal"`` survives a process crash but may lose the last commits on power loss,
    for roughly ten times the commit rate.
    """

    def __init__(
        self,
        path: str,
        synchronous: str = "full",
        *,
        upgrade_to: int | None = None,
        busy_timeout_ms: int = 30_000,
    ) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._synced = synchronous.lower() == "full"
        #: Batches the checkpoints of this process's runs (its ``commits`` and ``writes``
        #: count the transactions and the checkpoints they held).
        self.group_commit = GroupCommit.of_writes(self._commit, lambda: self._conn.in_transaction)
        #: Write transactions committed with an fsync of their own, and without.
        self.synced_commits = 0
        self.unsynced_commits = 0
        self._busy_timeout = busy_timeout_ms / 1000
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._enable_wal()
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            self._migrate(upgrade_to)
        except SchemaVersionError:
            self._conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            if hasattr(self, "_conn"):
                self._conn.close()  # not left open: the caller may try again (a lock)
            raise self._explain(exc) from None
        except OSError as exc:
            raise StorageError(
                f"cannot create the directory for SQLite database {path!r}: {exc}. "
                f"Point the database URL at a writable location"
            ) from None

    @property
    def description(self) -> str:
        return f"sqlite:///{self.path}"

    def transaction(self) -> AbstractContextManager[Cursor]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads
        # first and then writes could fail to upgrade, which busy_timeout does not cover.
        return self._transaction("BEGIN IMMEDIATE")

    def unsynced(self) -> AbstractContextManager[Cursor]:
        # Committed to the WAL without an fsync of its own: the next synced commit (the
        # run's next checkpoint, anyone's) makes it durable with itself, as the WAL is
        # written in order. A process crash loses nothing; a power cut may lose what
        # came after the last fsync, which recovery redoes.
        if not self._synced:
            return self.transaction()
        return self._transaction("BEGIN IMMEDIATE", synced=False)

    def reading(self) -> AbstractContextManager[Cursor]:
        return self._transaction("BEGIN")

    @retry_transient
    def record_step(self, run_id: str, token: int, worker: str, outcome: StepOutcome) -> None:
        """The contract's per-step checkpoint, committed together with the checkpoints
        other threads of this process have ready (see :mod:`.group_commit`)."""
        check_outcome(outcome)

        def write(cur: Cursor) -> None:
            try:
                self.write_step(cur, run_id, token, worker, outcome)
            except sqlite3.DatabaseError as exc:  # this run's alone, in a batch
                raise self._explain(exc) from None

        self.group_commit.submit(write)

    def _commit(self, write: Callable[[Cursor], None]) -> None:
        """``write`` in one write transaction: the group commit's."""
        with self.transaction() as cur:
            write(cur)

    @contextmanager
    def _transaction(self, begin: str, synced: bool = True) -> Iterator[Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            if not synced:
                cur.execute("PRAGMA synchronous = NORMAL")
            try:
                cur.execute(begin)
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.rollback()
                if isinstance(exc, sqlite3.DatabaseError):
                    raise self._explain(exc) from None
                raise
            finally:
                if not synced:
                    cur.execute("PRAGMA synchronous = FULL")
            if begin != "BEGIN":
                if synced:
                    self.synced_commits += 1
                else:
                    self.unsynced_commits += 1

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _enable_wal(self) -> None:
        # While another process switches a new file to WAL, this pragma fails at once
        # with SQLITE_BUSY: the busy handler does not cover it. The switch is permanent
        # and one winner is enough, so wait for it like any other lock.
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.002
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def _migrate(self, upgrade_to: int | None) -> None:
        cur = self._conn.cursor()
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening an empty
        # file at once apply the migrations once, one after the other.
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS surestep_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            cur.execute("SELECT MAX(version) FROM surestep_migrations")
            current = int(cur.fetchone()[0] or 0)
            cur.execute("SELECT name FROM sqlite_master")
            check_recorded("sqlite", current, {row[0] for row in cur.fetchall()}, repr(self.path))
            for migration in pending("sqlite", current, repr(self.path), upgrade_to):
                for statement in _statements(migration.sql):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO surestep_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
            cur.execute("COMMIT")
        except BaseException:
            self._conn.rollback()
            raise

    def _explain(self, exc: sqlite3.DatabaseError) -> StorageError:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            hint = (
                "the file is not a SQLite database or is corrupt; restore it from a "
                "backup, or point the database URL at another file"
            )
        elif "unable to open" in text:
            hint = "check that the directory exists and this user may write to it"
        elif "readonly" in text:
            hint = "the file or its directory is read-only; make both writable"
        elif "full" in text:
            hint = "free disk space; runs resume from their last checkpoint"
        elif "locked" in text or "busy" in text:
            hint = "another process holds the database lock; is one stuck?"
        else:
            hint = "see the SQLite message above"
        transient = sqlite_transient(getattr(exc, "sqlite_errorcode", None), text)
        return StorageError(f"SQLite database {self.path!r}: {text} ({hint})", transient=transient)


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()
