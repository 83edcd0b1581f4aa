"""A worker's presence: it says which workflow versions it serves, with a heartbeat, and
watches for unfinished runs of versions that no live worker serves.

A deploy that replaces every worker of version 1 by workers of version 2 leaves the
version-1 runs unfinished forever, and silently. Each worker records what it serves, so
that any of them (and ``surestep versions``) can see it and say so.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from surestep.errors import StorageError
from surestep.storage.workers import WorkerStore
from surestep.versions import read_versions, stranded_warning

if TYPE_CHECKING:
    from surestep.clock import Clock
    from surestep.storage import Store

log = logging.getLogger("surestep.worker")

#: How often a worker looks for runs of versions no live worker serves, in seconds.
CHECK_EVERY = 60.0
#: How long a stopped or silent worker's entry is kept, in seconds.
FORGET_AFTER = 24 * 3600.0


class Presence:
    """The entry of one worker in ``surestep_workers``."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        worker: str,
        serves: Sequence[tuple[str, str]],
        lease_seconds: float,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self.workers = WorkerStore(store)
        self.clock = clock
        self.worker = worker
        self.serves = list(serves)
        self.lease_seconds = lease_seconds
        self.check_every = check_every
        self._next_check = 0.0

    def arrive(self) -> None:
        """Announce the worker, then check the versions at once (a deploy just happened)."""
        self.beat()

    def beat(self) -> None:
        """Announce the worker again; check the versions when a check is due."""
        now = self.clock.now()
        try:
            self.workers.announce(
                self.worker,
                socket.gethostname(),
                os.getpid(),
                self.serves,
                now,
                self.lease_seconds,
            )
            if time.monotonic() >= self._next_check:
                self._next_check = time.monotonic() + self.check_every
                self.workers.prune(now - FORGET_AFTER)
                warning = stranded_warning(read_versions(self.workers, now))
                if warning is not None:
                    log.warning("worker %s: %s", self.worker, warning)
        except StorageError as exc:
            log.warning("worker %s: cannot record its presence yet: %s", self.worker, exc)

    def leave(self) -> None:
        """Record a clean shutdown, so the worker no longer counts as serving anything."""
        try:
            self.workers.stopped(self.worker, self.clock.now())
        except StorageError as exc:
            log.warning(
                "worker %s: cannot record its shutdown (%s); it counts as alive until its "
                "lease length has passed",
                self.worker,
                exc,
            )
