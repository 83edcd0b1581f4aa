"""Storage: the contract the engine uses, and its dialects."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from surestep.errors import ConfigurationError, DatabaseNotFoundError
from surestep.storage.base import ClaimedRun, RecordedStep, SQLStore, StepOutcome
from surestep.storage.coordination import CoordinationStore as Store
from surestep.storage.urls import redact

#: How long a SQLite statement waits for another process's write lock before it fails
#: (and is retried by the caller); ``?busy_timeout=MS`` in the URL changes it.
DEFAULT_BUSY_TIMEOUT_MS = 30_000

__all__ = [
    "ClaimedRun",
    "RecordedStep",
    "SQLStore",
    "StepOutcome",
    "Store",
    "open_store",
    "redact",
]

_SQLITE_HELP = (
    "use sqlite:///relative/path.db or sqlite:////absolute/path.db "
    "(optionally ?synchronous=normal&busy_timeout=MS), or postgresql://user@host/database"
)


def open_store(url: str, *, must_exist: bool = False) -> Store:
    """Open (and migrate) the database at ``url``.

    With ``must_exist``, a SQLite file that does not exist is an error
    (:class:`DatabaseNotFoundError`) instead of being created with its directories: what
    commands that only read want, so that a typo in a path creates nothing.

    >>> store = open_store("sqlite:///surestep.db")  # doctest: +SKIP
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"malformed database URL {redact(url)!r}: expected a scheme, e.g. "
            f"sqlite:///surestep.db; {_SQLITE_HELP}"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from surestep.storage.sqlite import SQLiteStore

        path, synchronous, busy_timeout = _sqlite_target(url)
        if must_exist and path != ":memory:" and not Path(path).is_file():
            raise DatabaseNotFoundError(
                f"no surestep database at {path}; start a run or run `surestep migrate`"
            )
        return SQLiteStore(path, synchronous, busy_timeout_ms=busy_timeout)
    if scheme in ("postgresql", "postgres"):
        from surestep.storage.postgres import PostgresStore

        return PostgresStore(url)
    raise ConfigurationError(f"unsupported database URL scheme {scheme!r}; {_SQLITE_HELP}")


def _sqlite_target(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigurationError(
            f"malformed SQLite URL {redact(url)!r}: a SQLite URL has no host; {_SQLITE_HELP}"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigurationError(
            f"malformed SQLite URL {redact(url)!r}: no file path; {_SQLITE_HELP}"
        )
    options = parse_qs(parts.query)
    unknown = set(options) - {"synchronous", "busy_timeout"}
    if unknown:
        raise ConfigurationError(
            f"unknown SQLite URL option(s) {sorted(unknown)} in {redact(url)!r}; "
            f"the options are synchronous=full|normal and busy_timeout=MILLISECONDS"
        )
    synchronous = options.get("synchronous", ["full"])[-1].lower()
    if synchronous not in ("full", "normal"):
        raise ConfigurationError(
            f"synchronous={synchronous!r} in {redact(url)!r}: use synchronous=full or normal"
        )
    busy_timeout = options.get("busy_timeout", [str(DEFAULT_BUSY_TIMEOUT_MS)])[-1]
    if not busy_timeout.isdigit():
        raise ConfigurationError(
            f"busy_timeout={busy_timeout!r} in {redact(url)!r}: use a whole number of "
            f"milliseconds, e.g. busy_timeout=30000"
        )
    return path, synchronous, int(busy_timeout)
