"""How a worker takes runs back: from workers whose process is gone, from leases that
lapsed, from its own failed executions, and from claims whose acknowledgement was lost.

Every way ends in ``Store.release``: the run goes back to pending (its place in the
queue kept) to resume after its last checkpoint, or, recovered too often without
progress, to the dead-letter queue.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

from surestep.errors import StorageError
from surestep.hooks import Hooks
from surestep.states import State

if TYPE_CHECKING:
    from surestep.clock import Clock
    from surestep.storage import Store

log = logging.getLogger("surestep.worker")


def host_key() -> str:
    """Names this host *and* PID namespace, so that a worker may judge whether another
    worker's process is alive only when it can really see that process."""
    host = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return host
    return f"{host}/{hashlib.sha256(f'{boot}:{namespace}'.encode()).hexdigest()[:8]}"


class Recovery:
    """The recoveries one worker makes; ``store`` is called for the App's store, which
    opens lazily."""

    def __init__(
        self,
        store: Callable[[], Store],
        clock: Clock,
        hooks: Hooks,
        worker: str,
        host: str,
        max_recoveries: int,
    ) -> None:
        self._store = store
        self.clock = clock
        self.hooks = hooks
        self.worker = worker
        self.host = host
        self.max_recoveries = max_recoveries

    def recover(self, run_id: str, token: int, reason: str) -> None:
        """Hand a run back after its worker failed, died or let its lease lapse; one
        recovered too often is dead-lettered, and the hooks hear of it like any end."""
        released = self._store().release(
            [(run_id, token)],
            self.worker,
            reason,
            self.clock.now(),
            max_recoveries=self.max_recoveries,
        )
        for dead, workflow in released.dead_lettered:
            log.warning(
                "run %s: dead-lettered after %d recoveries in a row without progress",
                dead,
                self.max_recoveries,
                extra={"run_id": dead, "worker": self.worker},
            )
            if self.hooks.on_run_state:
                Hooks.emit(
                    self.hooks.on_run_state, dead, State.RUNNING, State.DEAD_LETTER, workflow
                )

    def release_orphans(self, in_flight: Collection[str]) -> None:
        """Hand back runs leased to this worker that it is not executing."""
        store = self._store()
        try:
            orphans = [
                (run, token)
                for run, token, owner in store.leases_of(self.worker)
                if owner == self.worker and run not in in_flight
            ]
            if orphans:
                store.release(
                    orphans,
                    self.worker,
                    "claimed but not started (lost acknowledgement)",
                    self.clock.now(),
                )
        except StorageError as exc:
            log.warning("worker %s: cannot hand back orphaned leases yet: %s", self.worker, exc)

    def recover_expired(self, in_flight: Collection[str]) -> bool:
        """Take back runs whose lease lapsed; return whether there were any."""
        store, now = self._store(), self.clock.now()
        lapsed = [lease for lease in store.expired_leases(now) if lease[0] not in in_flight]
        for run, token, owner in lapsed:
            _log_takeover(run, owner, "its lease expired", self.worker)
            self.recover(run, token, f"lease of worker {owner} expired")
        return bool(lapsed)

    def recover_local(self) -> None:
        """Take back at once the runs of workers on this host whose process is gone; a
        database not reachable yet is left for the next heartbeat."""
        try:
            gone = []
            for run, token, owner in self._store().leases_of(self.host + ":"):
                pid = owner.rsplit(":", 2)[1]
                if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                    gone.append((run, token, owner))
            for run, token, owner in gone:
                _log_takeover(run, owner, "its process has exited", self.worker)
                self.recover(run, token, f"worker {owner} is gone (its process has exited)")
        except StorageError as exc:
            log.warning("worker %s: cannot recover dead workers' runs yet: %s", self.worker, exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers signal 0, but it
    # will never renew its leases: count it as gone.
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and awaits reaping (Linux: state Z or X in
    /proc/PID/stat). Where /proc is missing (macOS), False: liveness then rests on
    ``os.kill`` alone, and a zombie's runs wait for its lease."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name (field 2) is in parentheses and may itself hold ") "; the state
    # is the field after the last ")".
    fields = stat[stat.rfind(")") + 1 :].split()
    return bool(fields) and fields[0] in ("Z", "X")


def _log_takeover(run_id: str, owner: str, why: str, worker: str) -> None:
    log.info(
        "run %s: taking it over from worker %s (%s); it resumes after its last checkpoint",
        run_id,
        owner,
        why,
        extra={"run_id": run_id, "worker": worker},
    )
