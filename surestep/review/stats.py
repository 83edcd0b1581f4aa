"""Review figures from task records: pure functions, no database.

- override rate: edits and rejects over the decided tasks that had a proposal (how often
  people overrule the model);
- escalation rate: tasks escalated at least once over all tasks;
- SLA adherence: tasks decided by their first due time (no escalation) over decided
  tasks that had an SLA;
- time to decision: from the task's creation to its decision, p50 and p95.
"""

from __future__ import annotations

from collections.abc import Sequence

from surestep.review.policy import percentile
from surestep.review.records import ReviewerStats, ReviewStats, ReviewTask

OVERRIDES = ("edit", "reject")


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def summarize(tasks: Sequence[ReviewTask], kind: str | None, now: float) -> ReviewStats:
    decided = [t for t in tasks if t.state == "decided"]
    proposed = [t for t in decided if t.proposal is not None]
    with_sla = [t for t in decided if t.sla is not None]
    on_time = [
        t
        for t in with_sla
        if t.level == 0
        and t.decided_at is not None
        and t.due_at is not None
        and t.decided_at <= t.due_at
    ]
    waits = [t.decided_at - t.created_at for t in decided if t.decided_at is not None]
    reviewers: dict[str, ReviewerStats] = {}
    for name in sorted({t.reviewer for t in decided if t.reviewer}):
        mine = [t for t in decided if t.reviewer == name]
        mine_waits = [t.decided_at - t.created_at for t in mine if t.decided_at is not None]
        reviewers[name] = ReviewerStats(
            decided=len(mine),
            overrides=sum(1 for t in mine if t.proposal is not None and t.outcome in OVERRIDES),
            p50_seconds=percentile(mine_waits, 0.5),
            p95_seconds=percentile(mine_waits, 0.95),
        )
    return ReviewStats(
        kind=kind,
        open=sum(1 for t in tasks if t.state == "open"),
        overdue=sum(1 for t in tasks if t.overdue(now)),
        decided=len(decided),
        expired=sum(1 for t in tasks if t.state == "expired"),
        override_rate=_rate(sum(1 for t in proposed if t.outcome in OVERRIDES), len(proposed)),
        escalation_rate=_rate(sum(1 for t in tasks if t.level > 0), len(tasks)),
        sla_adherence=_rate(len(on_time), len(with_sla)),
        p50_seconds=percentile(waits, 0.5),
        p95_seconds=percentile(waits, 0.95),
        reviewers=reviewers,
    )
