"""Injectable clocks, so that backoff, leases and timers are testable without sleeping."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """What surestep needs of time: the wall clock in epoch seconds, and a way to wait."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class DatabaseClock:
    """A real-time clock corrected to the database server's clock.

    Leases and due times are compared across processes and hosts, so all of them must
    read one clock: the database's. Rather than read ``now()`` from the server in every
    statement, the App measures the offset between the server's clock and its own (at
    connect, and on every worker heartbeat) and adds it to its readings. That keeps the
    storage contract clock-agnostic (every operation takes ``now``), costs no extra
    round trip per statement, and leaves an injected :class:`FakeClock` in charge of
    time in tests. Only an App on a :class:`SystemClock` (or a subclass) is corrected;
    SQLite has no clock of its own (the file lives on the worker's host), so there the
    offset stays 0.
    """

    def __init__(self, local: SystemClock) -> None:
        self.local = local
        #: The database's clock minus the local one, in seconds (0 until measured).
        self.offset = 0.0

    def now(self) -> float:
        return self.local.now() + self.offset

    async def sleep(self, seconds: float) -> None:
        await self.local.sleep(seconds)

    def align(self, server_now: Callable[[], float | None]) -> float | None:
        """Measure the offset to the server's clock; return it, or None if the database
        has no clock of its own. The server's reading is taken to be from the middle of
        the round trip, so the error is at most half of it."""
        before = self.local.now()
        server = server_now()
        after = self.local.now()
        if server is None:
            return None
        self.offset = server - (before + after) / 2
        return self.offset


class FakeClock:
    """A clock that moves only when told to.

    ``sleep`` returns at once and advances the clock by the requested amount, so a
    worker waiting for a retry backoff of an hour moves an hour forward instantly.

    >>> clock = FakeClock(start=1000.0)
    >>> clock.advance(30)
    >>> clock.now()
    1030.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, when: float) -> None:
        with self._lock:
            self._now = max(self._now, when)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)
