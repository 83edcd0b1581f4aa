"""Step timings over a window: p50/p95 duration and retries per workflow and step.

Read for ``surestep stats`` and ``surestep top``, not on a scrape: the attempts of the
window are read (through ``surestep_attempts_by_finished``) and ranked here, so the cost
is what the window holds. Durations per step are a histogram per process (the
``surestep_step_duration_seconds`` of each worker); this is the cluster's view of them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from surestep.review.policy import percentile
from surestep.storage import Store
from surestep.storage.transient import retry_transient


@dataclass(frozen=True)
class StepTiming:
    """One step of one workflow over the window."""

    workflow: str
    step: str
    attempts: int
    #: attempts after the first (attempt number > 1)
    retries: int
    failed: int
    p50_seconds: float | None
    p95_seconds: float | None


class StepTimings:
    """Reads :class:`StepTiming` rows from ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def since(self, since: float) -> list[StepTiming]:
        """Every step that had an attempt finish at or after ``since``."""
        with self.store.reading() as cur:
            cur.execute(
                "SELECT r.workflow, s.name, a.attempt, a.state, a.finished_at - a.started_at"
                " FROM surestep_attempts a"
                " JOIN surestep_steps s ON s.run_id = a.run_id AND s.position = a.position"
                " JOIN surestep_runs r ON r.id = a.run_id"
                " WHERE a.finished_at >= ?",
                (since,),
            )
            rows = cur.fetchall()
        grouped: dict[tuple[str, str], list[tuple[int, str, float]]] = defaultdict(list)
        for workflow, step, attempt, state, seconds in rows:
            grouped[(str(workflow), str(step))].append((int(attempt), str(state), float(seconds)))
        return [
            StepTiming(
                workflow=workflow,
                step=step,
                attempts=len(found),
                retries=sum(1 for a, _, _ in found if a > 1),
                failed=sum(1 for _, s, _ in found if s == "failed"),
                p50_seconds=percentile([d for _, _, d in found], 0.5),
                p95_seconds=percentile([d for _, _, d in found], 0.95),
            )
            for (workflow, step), found in sorted(grouped.items())
        ]
