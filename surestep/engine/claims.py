"""What a worker claims: runs in no queue through the plain claim, runs of each queue
through that queue's claim (its limits), taking turns so neither starves the other.

A worker whose workflows are in no queue makes exactly the plain claim, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from surestep.storage import ClaimedRun
from surestep.storage.queues import QueueStore

if TYPE_CHECKING:
    from surestep.registry import Registry
    from surestep.storage import Store


class Claims:
    """The claims of one worker, and when it next has something to do."""

    def __init__(self, store: Store, registry: Registry, worker: str) -> None:
        self.store, self.worker = store, worker
        self.queues = QueueStore(store)
        self.declared = registry.queues()
        workflows = registry.workflows()
        self.plain = [(wf.name, wf.version) for wf in workflows if wf.queue is None]
        self.queued: dict[str, list[tuple[str, str]]] = {}
        for wf in workflows:
            if wf.queue is not None:
                self.queued.setdefault(wf.queue, []).append((wf.name, wf.version))
        self._turn = 0
        # Queues whose last claim a limit held back: their due runs are not "something
        # to do" until a run of this worker's ends (which wakes it), its next poll (a run
        # ending in another process sends no wake-up), or their rate allows more.
        self._blocked: dict[str, float | None] = {}

    def declare(self, now: float) -> None:
        """Write this worker's queue declarations (called when it starts)."""
        self.queues.declare(self.declared, now)

    def claim(
        self, free: int, clock: Callable[[], float], lease_seconds: float
    ) -> list[ClaimedRun]:
        """Lease up to ``free`` due runs; the plain claim and each queue take turns
        going first."""
        now = clock()
        if not self.queued:
            return self.store.claim(self.worker, self.plain, free, now, lease_seconds)
        sources: list[str | None] = [None, *self.queued]
        self._turn = (self._turn + 1) % len(sources)
        claimed: list[ClaimedRun] = []
        for source in sources[self._turn :] + sources[: self._turn]:
            want = free - len(claimed)
            if want <= 0:
                break
            if source is None:
                claimed += self.store.claim(self.worker, self.plain, want, now, lease_seconds)
                continue
            got = self.queues.claim(
                source, self.worker, self.queued[source], want, clock, lease_seconds
            )
            claimed += got.runs
            if got.blocked:
                self._blocked[source] = got.retry_at
            else:
                self._blocked.pop(source, None)
        return claimed

    def next_due(self) -> float | None:
        """When something may next be claimable: the plain runs' and unblocked queues'
        next due time (and deadlines), or a blocked queue's rate allowing a start."""
        keys: list[tuple[str, str]] = list(self.plain)
        for queue, workflows in self.queued.items():
            if queue not in self._blocked:
                keys += workflows
        times = [self.store.next_due(keys)]
        times += [t for t in self._blocked.values()]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    @property
    def workflows(self) -> Sequence[tuple[str, str]]:
        return [*self.plain, *(k for keys in self.queued.values() for k in keys)]
