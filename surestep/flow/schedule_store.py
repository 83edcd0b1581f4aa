"""The ``surestep_schedules`` table, beside the run store and over its connections."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from surestep.storage.rows import Cursor
from surestep.storage.transient import retry_transient

_COLUMNS = (
    "name, cron, timezone, catch_up, workflow_version, next_fire_at, last_fire_at, paused,"
    " updated_at"
)


class Transactional(Protocol):
    """The connection helpers of the run store that this store shares."""

    reconnect_timeout: float

    def transaction(self) -> AbstractContextManager[Cursor]: ...

    def reading(self) -> AbstractContextManager[Cursor]: ...


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule as stored: what the code declared when a worker last started, and
    where it stands."""

    name: str
    cron: str
    timezone: str
    catch_up: str
    workflow_version: str
    next_fire_at: float
    last_fire_at: float | None
    paused: bool
    updated_at: float


@dataclass(frozen=True)
class Declared:
    """A schedule as the code declares it; ``first_fire_at`` is where a new (or
    re-timed) schedule starts: its first fire after now."""

    name: str
    cron: str
    timezone: str
    catch_up: str
    workflow_version: str
    first_fire_at: float


def _record(row: Sequence[object]) -> ScheduleRecord:
    name, cron, timezone, catch_up, version, next_at, last_at, paused, updated = row
    return ScheduleRecord(
        str(name),
        str(cron),
        str(timezone),
        str(catch_up),
        str(version),
        float(next_at),  # type: ignore[arg-type]
        None if last_at is None else float(last_at),  # type: ignore[arg-type]
        bool(paused),
        float(updated),  # type: ignore[arg-type]
    )


class ScheduleStore:
    """Reads and writes of the schedules table; each a short transaction."""

    def __init__(self, store: Transactional) -> None:
        self._store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def declare(self, schedules: Sequence[Declared], now: float) -> None:
        """Write what the code declares. A new schedule starts at its first fire after
        now; one whose cron or time zone changed starts again the same way (its old
        next fire time means nothing under the new expression); one unchanged keeps its
        next fire time, so fires missed while no worker ran are still caught up."""
        with self._store.transaction() as cur:
            for s in schedules:
                cur.execute(
                    f"INSERT INTO surestep_schedules ({_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, NULL, 0, ?) ON CONFLICT (name) DO NOTHING",
                    (s.name, s.cron, s.timezone, s.catch_up, s.workflow_version,
                     s.first_fire_at, now),
                )  # fmt: skip
                cur.execute(
                    "UPDATE surestep_schedules SET cron = ?, timezone = ?, next_fire_at = ?,"
                    " updated_at = ? WHERE name = ? AND (cron <> ? OR timezone <> ?)",
                    (s.cron, s.timezone, s.first_fire_at, now, s.name, s.cron, s.timezone),
                )
                cur.execute(
                    "UPDATE surestep_schedules SET catch_up = ?, workflow_version = ?,"
                    " updated_at = ? WHERE name = ? AND (catch_up <> ? OR workflow_version <> ?)",
                    (s.catch_up, s.workflow_version, now, s.name, s.catch_up,
                     s.workflow_version),
                )  # fmt: skip

    @retry_transient
    def due(self, names: Sequence[str], now: float) -> list[ScheduleRecord]:
        """The unpaused schedules among ``names`` whose next fire time has come."""
        if not names:
            return []
        marks = ", ".join("?" * len(names))
        with self._store.reading() as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM surestep_schedules WHERE paused = 0"
                f" AND next_fire_at <= ? AND name IN ({marks}) ORDER BY next_fire_at",
                (now, *names),
            )
            return [_record(row) for row in cur.fetchall()]

    @retry_transient
    def next_due(self, names: Sequence[str]) -> float | None:
        """The earliest next fire time of the unpaused schedules among ``names``."""
        if not names:
            return None
        marks = ", ".join("?" * len(names))
        with self._store.reading() as cur:
            cur.execute(
                "SELECT MIN(next_fire_at) FROM surestep_schedules WHERE paused = 0"
                f" AND name IN ({marks})",
                tuple(names),
            )
            row = cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @retry_transient
    def advance(
        self, name: str, seen: float, next_fire_at: float, last_fire_at: float | None, now: float
    ) -> bool:
        """Move ``name`` on to ``next_fire_at`` if its next fire time is still ``seen``
        (another worker may have moved it first); return whether this call did."""
        with self._store.transaction() as cur:
            cur.execute(
                "UPDATE surestep_schedules SET next_fire_at = ?,"
                " last_fire_at = COALESCE(?, last_fire_at), updated_at = ?"
                " WHERE name = ? AND next_fire_at = ?",
                (next_fire_at, last_fire_at, now, name, seen),
            )
            return bool(cur.rowcount == 1)

    @retry_transient
    def get(self, name: str) -> ScheduleRecord | None:
        with self._store.reading() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM surestep_schedules WHERE name = ?", (name,))
            row = cur.fetchone()
        return None if row is None else _record(row)

    @retry_transient
    def all(self) -> list[ScheduleRecord]:
        with self._store.reading() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM surestep_schedules ORDER BY name")
            return [_record(row) for row in cur.fetchall()]

    @retry_transient
    def set_paused(self, name: str, paused: bool, next_fire_at: float | None, now: float) -> bool:
        """Pause or resume ``name`` (resuming moves it to ``next_fire_at``); return
        whether the schedule exists."""
        with self._store.transaction() as cur:
            cur.execute(
                "UPDATE surestep_schedules SET paused = ?,"
                " next_fire_at = COALESCE(?, next_fire_at), updated_at = ? WHERE name = ?",
                (int(paused), next_fire_at, now, name),
            )
            return bool(cur.rowcount == 1)
