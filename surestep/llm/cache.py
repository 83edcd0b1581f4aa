"""The opt-in cache of model replies, kept in the database with a time to live.

A reply is reused only for the same model, prompt, schema and parameters: the key is a
digest of all four (:func:`cache_key`), so a changed temperature or a new schema version
is a miss, never a stale answer. Every worker process shares the cache through the run
store's database.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from typing import Any, Protocol

from surestep.errors import ConfigurationError, SerializationError
from surestep.storage.rows import Cursor
from surestep.storage.transient import retry_transient


class CacheStore(Protocol):
    """The connection helpers of the run store that the cache shares."""

    reconnect_timeout: float

    def transaction(self) -> AbstractContextManager[Cursor]: ...

    def reading(self) -> AbstractContextManager[Cursor]: ...


def cache_key(model: str, prompt_hash: str, schema_hash: str | None, params: dict[str, Any]) -> str:
    """The cache key of a call: the sha256 hex digest of its canonical JSON (sorted keys,
    no spaces), so equal calls get equal keys whatever the order of ``params``.

    >>> a = cache_key("openai:gpt-4o-mini", "ab12", None, {"temperature": 0, "seed": 7})
    >>> a == cache_key("openai:gpt-4o-mini", "ab12", None, {"seed": 7, "temperature": 0})
    True
    """
    call = {"model": model, "prompt": prompt_hash, "schema": schema_hash, "params": params}
    try:
        canonical = json.dumps(
            call, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot make a cache key of the parameters {params!r} for {model!r}: {exc}. "
            f"Give parameters as JSON values (strings, numbers, booleans, lists, dicts)"
        ) from None
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """The ``surestep_llm_cache`` table: JSON replies by key, each until it expires."""

    def __init__(self, store: CacheStore) -> None:
        self._store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def get(self, key: str, now: float) -> str | None:
        """The reply stored under ``key``, or None if there is none or it has expired."""
        with self._store.reading() as cur:
            cur.execute(
                "SELECT value FROM surestep_llm_cache WHERE key = ? AND expires_at > ?",
                (key, now),
            )
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str, *, now: float, ttl: float) -> None:
        """Store ``value`` (JSON text) under ``key`` for ``ttl`` seconds from ``now``,
        replacing what was there."""
        if not ttl > 0:
            raise ConfigurationError(
                f"a cache entry's ttl must be a positive number of seconds (got {ttl!r})"
            )
        try:
            json.loads(value)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"a cached reply must be JSON text (json.dumps it first): {exc}"
            ) from None
        self._put(key, value, now, now + ttl)

    @retry_transient
    def _put(self, key: str, value: str, now: float, expires_at: float) -> None:
        with self._store.transaction() as cur:
            cur.execute(
                "INSERT INTO surestep_llm_cache (key, value, stored_at, expires_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " stored_at = excluded.stored_at, expires_at = excluded.expires_at",
                (key, value, now, expires_at),
            )

    @retry_transient
    def purge(self, now: float) -> int:
        """Delete the entries expired at ``now``; return how many."""
        with self._store.transaction() as cur:
            cur.execute("DELETE FROM surestep_llm_cache WHERE expires_at <= ?", (now,))
            return cur.rowcount
