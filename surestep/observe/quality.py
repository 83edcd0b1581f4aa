"""AI-quality figures, read from the model-call ledger (``surestep_llm_calls``).

Part of the cluster-wide figures (:class:`surestep.observe.cluster.ClusterFigures` reads
them in the same pass). Every query reads an index range bounded by time, never the
ledger's history:

- calls, cost and the confidence histograms: the calls started within the window, from
  ``surestep_llm_calls_by_started`` (schema 12);
- cost per successful run: the same calls, grouped by run first, then one primary-key
  lookup per run that called a model within the window;
- drift: per (step, model) with answers in the recent window, at most
  ``DriftSettings.limit`` most recent confidences on each side, from
  ``surestep_llm_calls_confidence`` (schema 15).

**Cost per successful run** of a workflow: take the runs that made at least one model
call within the window and are in state ``success`` when read; it is what their calls
made within the window cost (used or not: repairs, fallbacks and faults included),
divided by how many such runs there are. Failed and unfinished runs count in neither
part (``surestep costs`` spreads everything spent over the successes instead).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from surestep.observe.drift import DriftReport, DriftSettings, judge
from surestep.storage.rows import Cursor

#: The upper bounds of the confidence histogram's buckets (Prometheus ``le``).
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: The answers whose confidence the histograms and drift read: used, with a confidence.
#: Verbatim the predicate of the partial index surestep_llm_calls_confidence, so that
#: SQLite's planner may use it (it matches predicates term by term).
ANSWERED = "chosen AND confidence IS NOT NULL"


@dataclass(frozen=True)
class ConfidenceHistogram:
    """The confidences of one (step, model)'s used answers within the window."""

    #: cumulative: answers with a confidence <= each bound of CONFIDENCE_BUCKETS
    buckets: tuple[int, ...]
    count: int
    total: float  # the sum of the confidences

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass(frozen=True)
class ModelFigures:
    """What the model calls within the window say, and the drift of each (step, model)."""

    #: (workflow, provider:model, outcome) → calls started within the window
    calls: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: workflow → what its calls started within the window cost, used or not
    cost_usd: dict[str, float] = field(default_factory=dict)
    #: workflow → runs that called a model within the window and have succeeded
    succeeded_runs: dict[str, int] = field(default_factory=dict)
    #: workflow → what those runs' calls within the window cost
    succeeded_cost_usd: dict[str, float] = field(default_factory=dict)
    #: (step, provider:model) → confidences of the answers used within the window
    confidence: dict[tuple[str, str], ConfidenceHistogram] = field(default_factory=dict)
    drift: list[DriftReport] = field(default_factory=list)
    drift_settings: DriftSettings = field(default_factory=DriftSettings)

    @property
    def cost_per_success_usd(self) -> dict[str, float]:
        """workflow → cost per successful run (see the module's docstring); workflows
        without a successful run are left out rather than shown as 0."""
        return {
            w: self.succeeded_cost_usd.get(w, 0.0) / n
            for w, n in sorted(self.succeeded_runs.items())
            if n
        }

    def as_dict(self) -> dict[str, Any]:
        calls: dict[str, dict[str, dict[str, int]]] = {}
        for (workflow, model, outcome), n in sorted(self.calls.items()):
            calls.setdefault(workflow, {}).setdefault(model, {})[outcome] = n
        confidence: dict[str, dict[str, Any]] = {}
        for (step, model), h in sorted(self.confidence.items()):
            confidence.setdefault(step, {})[model] = {
                "answers": h.count,
                "mean": h.mean,
                "buckets": {
                    f"{le:g}": n for le, n in zip(CONFIDENCE_BUCKETS, h.buckets, strict=True)
                },
            }
        s = self.drift_settings
        return {
            "calls": calls,
            "cost_usd": dict(sorted(self.cost_usd.items())),
            "succeeded_runs": dict(sorted(self.succeeded_runs.items())),
            "cost_per_success_usd": self.cost_per_success_usd,
            "confidence": confidence,
            "drift": [asdict(report) for report in self.drift],
            "drift_settings": {
                "recent_seconds": s.recent,
                "reference_seconds": s.reference,
                "threshold": s.threshold,
                "min_samples": s.min_samples,
            },
        }


def read_model_figures(
    cur: Cursor,
    since: float,
    until: float,
    drift: DriftSettings | None = None,
    known_drift: list[DriftReport] | None = None,
) -> ModelFigures:
    """The figures of the calls started in ``[since, until]``, and the drift at ``until``
    (``known_drift``: reports read a moment ago, reused instead of read again)."""
    settings = drift or DriftSettings()
    calls, cost = _calls(cur, since, until)
    succeeded, succeeded_cost = _successes(cur, since, until)
    return ModelFigures(
        calls=calls,
        cost_usd=cost,
        succeeded_runs=succeeded,
        succeeded_cost_usd=succeeded_cost,
        confidence=_confidence(cur, since, until),
        drift=drift_reports(cur, until, settings) if known_drift is None else known_drift,
        drift_settings=settings,
    )


def _calls(
    cur: Cursor, since: float, until: float
) -> tuple[dict[tuple[str, str, str], int], dict[str, float]]:
    cur.execute(
        "SELECT workflow, provider, model, outcome, COUNT(*), SUM(cost_usd)"
        " FROM surestep_llm_calls WHERE started_at BETWEEN ? AND ?"
        " GROUP BY workflow, provider, model, outcome",
        (since, until),
    )
    calls: dict[tuple[str, str, str], int] = {}
    cost: dict[str, float] = defaultdict(float)
    for workflow, provider, model, outcome, n, usd in cur.fetchall():
        calls[(str(workflow), f"{provider}:{model}", str(outcome))] = int(n)
        cost[str(workflow)] += float(usd or 0)
    return calls, dict(cost)


def _successes(cur: Cursor, since: float, until: float) -> tuple[dict[str, int], dict[str, float]]:
    # Grouped by run first: one lookup per run, not per call. A correlated subquery, not
    # a join: with thousands of runs in the window, PostgreSQL planned the join as a hash
    # join over every stored run (a sequential scan of a million rows); the subquery is a
    # primary-key lookup per run on both databases.
    cur.execute(
        "SELECT c.workflow, COUNT(*), SUM(c.cost) FROM (SELECT run_id, workflow,"
        " SUM(cost_usd) AS cost FROM surestep_llm_calls WHERE started_at BETWEEN ? AND ?"
        " GROUP BY run_id, workflow) c"
        " WHERE (SELECT r.state FROM surestep_runs r WHERE r.id = c.run_id) = 'success'"
        " GROUP BY c.workflow",
        (since, until),
    )
    rows = cur.fetchall()
    return {str(w): int(n) for w, n, _ in rows}, {str(w): float(usd or 0) for w, _, usd in rows}


def _confidence(
    cur: Cursor, since: float, until: float
) -> dict[tuple[str, str], ConfidenceHistogram]:
    # Cumulative bucket counts in SQL: a scrape transfers 13 numbers per (step, model),
    # not one row per answer.
    buckets = ", ".join(
        f"SUM(CASE WHEN confidence <= {le!r} THEN 1 ELSE 0 END)" for le in CONFIDENCE_BUCKETS
    )
    cur.execute(
        f"SELECT step, provider, model, COUNT(*), SUM(confidence), {buckets}"
        f" FROM surestep_llm_calls WHERE started_at BETWEEN ? AND ? AND {ANSWERED}"
        " GROUP BY step, provider, model",
        (since, until),
    )
    return {
        (str(step), f"{provider}:{model}"): ConfidenceHistogram(
            buckets=tuple(int(n or 0) for n in counts), count=int(n), total=float(total or 0)
        )
        for step, provider, model, n, total, *counts in cur.fetchall()
    }


def drift_reports(cur: Cursor, at: float, settings: DriftSettings) -> list[DriftReport]:
    """The drift verdict at ``at`` of each (step, model) with answers in the recent window
    ``(at - recent, at]``, against the reference window before it."""
    recent_from = at - settings.recent
    reference_from = recent_from - settings.reference
    cur.execute(
        "SELECT DISTINCT step, provider, model FROM surestep_llm_calls"
        f" WHERE started_at > ? AND started_at <= ? AND {ANSWERED}",
        (recent_from, at),
    )
    pairs = sorted((str(s), str(p), str(m)) for s, p, m in cur.fetchall())
    if not pairs:
        return []
    # Both sides of every pair in one round trip: the most recent `limit` confidences of
    # each, each side one range of surestep_llm_calls_confidence.
    one = (
        "SELECT {i}, {side}, confidence FROM (SELECT confidence FROM surestep_llm_calls"
        f" WHERE step = ? AND provider = ? AND model = ? AND {ANSWERED}"
        " AND started_at > ? AND started_at <= ? ORDER BY started_at DESC LIMIT ?) s{i}_{side}"
    )
    parts, args = [], []
    for i, pair in enumerate(pairs):
        for side, (start, end) in enumerate(((reference_from, recent_from), (recent_from, at))):
            parts.append(one.format(i=i, side=side))
            args += [*pair, start, end, settings.limit]
    cur.execute(" UNION ALL ".join(parts), args)
    samples: dict[tuple[int, int], list[float]] = defaultdict(list)
    for i, side, confidence in cur.fetchall():
        samples[(int(i), int(side))].append(float(confidence))
    return [
        judge(step, f"{provider}:{model}", samples[(i, 0)], samples[(i, 1)], settings)
        for i, (step, provider, model) in enumerate(pairs)
    ]
