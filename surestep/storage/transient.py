"""Retrying storage operations through transient failures (a restarting server)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from surestep.errors import StorageError

log = logging.getLogger("surestep.storage")

P = ParamSpec("P")
R = TypeVar("R")


class _HasTimeout(Protocol):
    reconnect_timeout: float


S = TypeVar("S", bound=_HasTimeout)


#: SQLSTATEs that may pass by themselves; class 08 (connection exceptions) is added
#: below. Everything else (a value too long, a constraint, a syntax error) fails at once:
#: retrying it for a minute only hides the server's message.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (the server is starting)
    }
)

#: SQLite's primary result codes for a lock another connection holds.
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def postgres_transient(sqlstate: str | None, connection_lost: bool) -> bool:
    """Whether a PostgreSQL error may pass by itself. ``sqlstate`` is None for errors
    raised by the client library (``connection_lost`` when the connection failed)."""
    if sqlstate is None:
        return connection_lost
    return sqlstate.startswith("08") or sqlstate in TRANSIENT_SQLSTATES


def sqlite_transient(code: int | None, message: str) -> bool:
    """Whether a SQLite error may pass by itself: only a lock held by another
    connection (busy, locked). A full disk or a corrupt file is not retried."""
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in message or "busy" in message


def retry_transient(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Retry ``method`` with exponential backoff while it fails with a transient
    ``StorageError``, for up to the store's ``reconnect_timeout`` seconds.

    Only operations that are safe to repeat are decorated: their writes are conditional
    (lease token, expected state) or idempotent (``ON CONFLICT``), so a commit whose
    acknowledgement was lost with the connection is not applied twice. (``claim`` is
    not: the worker recovers from a lost claim acknowledgement itself.)
    """

    @functools.wraps(method)
    def retrying(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        started = time.monotonic()
        deadline = started + self.reconnect_timeout
        pause = 0.05
        tries = 0
        while True:
            tries += 1
            try:
                return method(self, *args, **kwargs)
            except StorageError as exc:
                if not exc.transient:
                    raise
                if time.monotonic() + pause > deadline:
                    if tries == 1:
                        raise
                    raise StorageError(
                        f"{exc}; gave up after {tries} tries over "
                        f"{time.monotonic() - started:.1f} s (reconnect_timeout is "
                        f"{self.reconnect_timeout:g} s). Check that the database is up "
                        f"and reachable",
                        transient=True,
                    ) from None
                log.warning("%s; retrying in %.2fs", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    return retrying
