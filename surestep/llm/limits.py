"""Rate limits shared by every worker process through the database.

``app.rate_limit("openai:gpt-4o-mini", rpm=500, tpm=200_000)`` is one budget for the
whole cluster, not one per process: before a call, a worker reserves a request and its
estimated tokens in a sliding 60-second window kept in the database, and after the call
replaces the estimate with the tokens actually used. A request that does not fit is told
how long to wait, so the step can park as a durable backoff instead of holding a slot.

The decision (:func:`admission`) is pure; :class:`RateLedger` only reads the window and
records the outcome, one reservation of a key at a time across processes and machines.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from surestep.errors import ConfigurationError
from surestep.storage.rows import Cursor
from surestep.storage.transient import retry_transient

#: The length of the sliding window, in seconds: rpm and tpm are per minute.
WINDOW = 60.0


class LedgerStore(Protocol):
    """The connection helpers of the run store that the ledger shares."""

    reconnect_timeout: float
    #: "FOR UPDATE" where rows can be locked (PostgreSQL), "" where the write
    #: transaction already excludes every other writer (SQLite).
    lock_for_update: str

    def transaction(self) -> AbstractContextManager[Cursor]: ...

    def reading(self) -> AbstractContextManager[Cursor]: ...


@dataclass(frozen=True)
class Admitted:
    """The request may be sent now; ``reservation_id`` is for :meth:`RateLedger.reconcile`."""

    reservation_id: str


@dataclass(frozen=True)
class Wait:
    """The request does not fit the window; ask again in ``seconds`` (always > 0)."""

    seconds: float


class RequestTooLargeError(ConfigurationError):
    """A request's tokens exceed the key's whole tpm: no window could ever admit it, so a
    step does not retry it (``permanent``) but goes to its ``on_exhausted`` route."""

    code = "rate_limit_too_small"
    permanent = True


#: The least wait returned: a wait rounded to 0 would make a caller spin.
_LEAST_WAIT = 0.001


def check_limits(key: str, rpm: int | None, tpm: int | None, tokens: int) -> None:
    """Refuse limits and requests that no window could admit, with what to change."""
    if rpm is not None and rpm < 1:
        raise ConfigurationError(
            f"rate limit for {key!r}: rpm={rpm} admits no request; give rpm >= 1, "
            f"or None for no request limit"
        )
    if tpm is not None and tpm < 1:
        raise ConfigurationError(
            f"rate limit for {key!r}: tpm={tpm} admits no token; give tpm >= 1, "
            f"or None for no token limit"
        )
    if tokens < 0:
        raise ValueError(f"a reservation's tokens cannot be negative (got {tokens})")
    if tpm is not None and tokens > tpm:
        raise RequestTooLargeError(
            f"a request of {tokens} tokens to {key!r} can never be admitted: the limit is "
            f"tpm={tpm} for the whole minute. Raise tpm for {key!r}, lower the request's "
            f"max_tokens, or shorten the prompt"
        )


def admission(
    window: Sequence[tuple[float, int]],
    *,
    rpm: int | None,
    tpm: int | None,
    tokens: int,
    now: float,
) -> float:
    """How long until a request of ``tokens`` fits: 0.0 if it fits now.

    ``window`` is the (reserved_at, tokens) of the requests still in the window, oldest
    first. The request fits once enough of the oldest have left (at reserved_at +
    WINDOW) that one more request stays within ``rpm`` and its tokens within ``tpm``.
    Limits are assumed checked (:func:`check_limits`), so dropping them all always fits.

    >>> admission([(0.0, 10), (30.0, 10)], rpm=2, tpm=None, tokens=5, now=45.0)
    15.0
    """
    held = sum(t for _, t in window)
    dropped = 0
    # The oldest entries leave first: drop them until what is left admits one more.
    while (rpm is not None and len(window) - dropped + 1 > rpm) or (
        tpm is not None and held + tokens > tpm
    ):
        held -= window[dropped][1]
        dropped += 1
    if dropped == 0:
        return 0.0
    return max(window[dropped - 1][0] + WINDOW - now, _LEAST_WAIT)


class RateLedger:
    """The ``surestep_llm_rate_*`` tables: reservations in a sliding window per key.

    ::

        ledger = RateLedger(app.store)
        match ledger.reserve("openai:gpt-4o-mini", rpm=500, tpm=200_000, tokens=900, now=t):
            case Admitted(reservation_id):
                response = call_the_model()
                ledger.reconcile(reservation_id, response.usage.total)
            case Wait(seconds):
                ...  # park the step for ``seconds``
    """

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self.reconnect_timeout = store.reconnect_timeout

    def reserve(
        self, key: str, *, rpm: int | None, tpm: int | None, tokens: int, now: float
    ) -> Admitted | Wait:
        """Reserve one request of ``tokens`` (an estimate) for ``key`` at ``now``, or
        say how long to wait. Raises :class:`RequestTooLargeError` for a request larger
        than ``tpm``, which waiting would never admit."""
        check_limits(key, rpm, tpm, tokens)
        # The id is chosen before the first try, so that a retry after a commit whose
        # acknowledgement was lost finds its own reservation instead of making a second.
        return self._reserve(uuid.uuid4().hex, key, rpm, tpm, tokens, now)

    @retry_transient
    def _reserve(
        self,
        reservation_id: str,
        key: str,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
        now: float,
    ) -> Admitted | Wait:
        with self._store.transaction() as cur:
            self._lock_key(cur, key)
            cur.execute(
                "DELETE FROM surestep_llm_rate_reservations WHERE key = ? AND reserved_at <= ?",
                (key, now - WINDOW),
            )
            # Entries stamped after ``now`` (another host's clock ahead of ours) count
            # too: the limit is the provider's, whoever's clock is right.
            cur.execute(
                "SELECT id, reserved_at, tokens FROM surestep_llm_rate_reservations"
                " WHERE key = ? ORDER BY reserved_at, id",
                (key,),
            )
            rows = cur.fetchall()
            if any(row[0] == reservation_id for row in rows):
                return Admitted(reservation_id)
            window = [(float(at), int(held)) for _, at, held in rows]
            wait = admission(window, rpm=rpm, tpm=tpm, tokens=tokens, now=now)
            if wait > 0:
                return Wait(wait)
            cur.execute(
                "INSERT INTO surestep_llm_rate_reservations (id, key, reserved_at, tokens)"
                " VALUES (?, ?, ?, ?)",
                (reservation_id, key, now, tokens),
            )
        return Admitted(reservation_id)

    def _lock_key(self, cur: Cursor, key: str) -> None:
        """Serialize reservations of ``key``: until this transaction ends, another one
        reserving for the same key waits here (PostgreSQL's row lock; on SQLite the
        write transaction already holds the database's only write lock)."""
        cur.execute(
            "INSERT INTO surestep_llm_rate_keys (key) VALUES (?) ON CONFLICT (key) DO NOTHING",
            (key,),
        )
        cur.execute(
            f"SELECT key FROM surestep_llm_rate_keys WHERE key = ? {self._store.lock_for_update}",
            (key,),
        )
        cur.fetchone()

    @retry_transient
    def reconcile(self, reservation_id: str, tokens: int) -> bool:
        """Replace a reservation's estimated tokens with the ``tokens`` the call used.
        False if it has already left the window (and was pruned): nothing to correct."""
        if tokens < 0:
            raise ValueError(f"a call's tokens cannot be negative (got {tokens})")
        with self._store.transaction() as cur:
            cur.execute(
                "UPDATE surestep_llm_rate_reservations SET tokens = ? WHERE id = ?",
                (tokens, reservation_id),
            )
            return cur.rowcount > 0

    @retry_transient
    def usage(self, key: str, now: float) -> tuple[int, int]:
        """(requests, tokens) reserved for ``key`` in the window ending at ``now``."""
        with self._store.reading() as cur:
            cur.execute(
                "SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM surestep_llm_rate_reservations"
                " WHERE key = ? AND reserved_at > ?",
                (key, now - WINDOW),
            )
            requests, tokens = cur.fetchone()
        return int(requests), int(tokens)
