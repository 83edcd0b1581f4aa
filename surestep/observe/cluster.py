"""Cluster-wide figures, read from the database: the same whoever asks.

A worker sees only its own work; the database sees everyone's. :class:`ClusterFigures`
reads, in one consistent snapshot, what ``surestep metrics``, ``surestep serve``'s
``/metrics``, ``surestep stats`` and ``surestep top`` show.

Every query reads an index range whose size is the backlog or the recent window, never
the stored history, so a scrape stays cheap at millions of finished runs:

- unfinished runs by workflow and state: the partial index ``surestep_runs_unfinished``
  (its size is the backlog, however many finished runs the table holds);
- finished runs: only those finished within the window, from
  ``surestep_runs_finished_recent`` (counting every finished run ever would read them all);
- the oldest due run: one lookup per (workflow, version) in the claim's own index;
- reviews: open tasks (``state = 'open'``), and tasks created within the window;
- auto-recovery: failed attempts finished within the window (``surestep_attempts_by_finished``);
- model calls, their cost and confidences, and confidence drift: see
  :mod:`surestep.observe.quality`; the scrape path reads them in the background
  (:mod:`surestep.observe.model_feed`).

>>> figures = ClusterFigures(app.store, app.clock).read()      # doctest: +SKIP
>>> figures.runs[("invoice", "pending")]                        # doctest: +SKIP
12
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from surestep.clock import Clock
from surestep.observe.drift import DriftSettings
from surestep.observe.model_feed import ModelFeed
from surestep.observe.quality import ModelFigures
from surestep.review.policy import percentile
from surestep.review.records import ReviewStats
from surestep.review.stats import OVERRIDES
from surestep.storage import Store
from surestep.storage.rows import Cursor
from surestep.storage.transient import retry_transient

#: The states a run has not finished in; each counted whole (the backlog).
UNFINISHED = ("pending", "running", "waiting", "needs_review", "dead_letter")
#: The states a run finishes in; counted within the window only.
FINISHED = ("success", "failed", "cancelled")
#: The default window of the rates and the finished counts: one hour.
DEFAULT_WINDOW = 3600.0


def _in(states: Sequence[str]) -> str:
    # Literal lists, not parameters: the partial indexes' predicates must match them.
    return "(" + ", ".join(f"'{s}'" for s in states) + ")"


@dataclass(frozen=True)
class Figures:
    """What the database says at ``at``, over the window ``[at - window, at]``."""

    at: float
    window: float
    #: (workflow, state) → unfinished runs, dead letters included
    runs: dict[tuple[str, str], int]
    #: (workflow, state) → runs that finished within the window
    finished: dict[tuple[str, str], int]
    #: workflow → seconds since its oldest claimable run became due (0: none due)
    oldest_due: dict[str, float]
    #: kind → open review tasks, and those of them past their due time
    review_open: dict[str, int]
    review_overdue: dict[str, int]
    #: kind → review figures over the tasks created within the window
    reviews: dict[str, ReviewStats]
    #: workflow → share of its runs created within the window that opened a review task
    review_needed: dict[str, float]
    #: failed attempts finished within the window, and those whose step later succeeded
    failed_attempts: int = 0
    recovered_attempts: int = 0
    workflows: list[str] = field(default_factory=list)
    #: model calls within the window, their cost and confidences, and confidence drift
    llm: ModelFigures = field(default_factory=ModelFigures)

    def dead_letters(self, workflow: str) -> int:
        return self.runs.get((workflow, "dead_letter"), 0)

    @property
    def auto_recovery(self) -> float | None:
        """Failed attempts later recovered over failed attempts (None: no failures)."""
        if self.failed_attempts == 0:
            return None
        return self.recovered_attempts / self.failed_attempts

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready figures (``surestep stats --json``)."""
        return {
            "at": self.at,
            "window_seconds": self.window,
            "runs": _nested(self.runs),
            "finished": _nested(self.finished),
            "oldest_due_seconds": dict(sorted(self.oldest_due.items())),
            "dead_letter": {w: self.dead_letters(w) for w in self.workflows},
            "review_open": dict(sorted(self.review_open.items())),
            "review_overdue": dict(sorted(self.review_overdue.items())),
            "review_needed": dict(sorted(self.review_needed.items())),
            "reviews": {
                kind: {
                    "decided": s.decided,
                    "expired": s.expired,
                    "override_rate": s.override_rate,
                    "escalation_rate": s.escalation_rate,
                    "sla_adherence": s.sla_adherence,
                    "decision_p50_seconds": s.p50_seconds,
                    "decision_p95_seconds": s.p95_seconds,
                }
                for kind, s in sorted(self.reviews.items())
            },
            "failed_attempts": self.failed_attempts,
            "recovered_attempts": self.recovered_attempts,
            "auto_recovery": self.auto_recovery,
            "llm": self.llm.as_dict(),
        }


def _nested(pairs: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (workflow, state), n in sorted(pairs.items()):
        out.setdefault(workflow, {})[state] = n
    return out


class ClusterFigures:
    """Reads :class:`Figures` from ``store`` (composition: its ``reading()`` cursor).

    ``model_feed``: where the model figures come from. By default they are read with the
    rest, in the same snapshot; the scrape path passes a :class:`ModelFeed` reading them
    in the background instead (:func:`surestep.observe.collector.cluster_registry`), and
    shows the last ones read (none on its very first scrape); its collector starts each
    read after a scrape (:meth:`ModelFeed.refresh`).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        window: float = DEFAULT_WINDOW,
        drift: DriftSettings | None = None,
        model_feed: ModelFeed | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self._window = window
        #: the windows of the drift verdicts: their own, not ``window`` (see DriftSettings)
        self.drift = drift or DriftSettings()
        self.reconnect_timeout = store.reconnect_timeout
        self.background = model_feed is not None
        self.model_feed = model_feed or ModelFeed(store, window, self.drift)

    @property
    def window(self) -> float:
        return self._window

    @window.setter
    def window(self, seconds: float) -> None:
        self._window = self.model_feed.window = seconds

    @retry_transient
    def read(self, now: float | None = None) -> Figures:
        """The figures now, from one snapshot of the database."""
        at = self.clock.now() if now is None else now
        since = at - self.window
        with self.store.reading() as cur:
            runs, versions = _unfinished(cur)
            finished = _finished(cur, since, at)
            oldest = _oldest_due(cur, versions, at)
            review_open, review_overdue = _open_reviews(cur, at)
            reviews, reviewed = _review_window(cur, since, at)
            workflows = sorted({w for w, _ in runs} | {w for w, _ in finished})
            created = _created(cur, sorted(set(workflows) | set(reviewed)), since, at)
            failed, recovered = _recovery(cur, since, at)
            if self.background:
                llm = self.model_feed.last() or ModelFigures(drift_settings=self.drift)
            else:
                llm = self.model_feed.read_with(cur, at)
        return Figures(
            at=at,
            window=self.window,
            runs=runs,
            finished=finished,
            oldest_due=oldest,
            review_open=review_open,
            review_overdue=review_overdue,
            reviews=reviews,
            review_needed={w: min(1.0, len(reviewed[w]) / n) for w, n in created.items() if n > 0},
            failed_attempts=failed,
            recovered_attempts=recovered,
            workflows=workflows,
            llm=llm,
        )


def _unfinished(cur: Cursor) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
    # Grouped in the index's own order (state, workflow, version): read from it alone.
    cur.execute(
        "SELECT state, workflow, workflow_version, COUNT(*) FROM surestep_runs"
        f" WHERE state IN {_in(UNFINISHED)} GROUP BY state, workflow, workflow_version"
    )
    runs: dict[tuple[str, str], int] = defaultdict(int)
    claimable: set[tuple[str, str]] = set()
    for state, workflow, version, n in cur.fetchall():
        runs[(str(workflow), str(state))] += int(n)
        if state in ("pending", "waiting"):
            claimable.add((str(workflow), str(version)))
    return dict(runs), claimable


def _finished(cur: Cursor, since: float, until: float) -> dict[tuple[str, str], int]:
    # Bounded on both sides: SQLite then prefers surestep_runs_finished_recent (three
    # ranges) to surestep_runs_by_state_workflow (every finished run).
    cur.execute(
        "SELECT workflow, state, COUNT(*) FROM surestep_runs"
        f" WHERE state IN {_in(FINISHED)} AND updated_at BETWEEN ? AND ?"
        " GROUP BY workflow, state",
        (since, until),
    )
    return {(str(w), str(s)): int(n) for w, s, n in cur.fetchall()}


def _oldest_due(cur: Cursor, versions: Iterable[tuple[str, str]], now: float) -> dict[str, float]:
    pairs = sorted(versions)
    if not pairs:
        return {}
    # One index lookup per (workflow, version), in the claim's index, like next_due.
    one = (
        "SELECT workflow, MIN(available_at) AS t FROM surestep_runs WHERE workflow = ?"
        " AND workflow_version = ? AND state IN ('pending', 'waiting') GROUP BY workflow"
    )
    cur.execute(" UNION ALL ".join([one] * len(pairs)), [p for pair in pairs for p in pair])
    oldest: dict[str, float] = {w: 0.0 for w, _ in pairs}
    for workflow, due in cur.fetchall():
        if due is not None and due <= now:
            oldest[str(workflow)] = max(oldest[str(workflow)], now - float(due))
    return oldest


def _open_reviews(cur: Cursor, now: float) -> tuple[dict[str, int], dict[str, int]]:
    cur.execute(
        "SELECT kind, COUNT(*), SUM(CASE WHEN due_at <= ? THEN 1 ELSE 0 END)"
        " FROM surestep_review_tasks WHERE state = 'open' GROUP BY kind",
        (now,),
    )
    rows = cur.fetchall()
    return {str(k): int(n) for k, n, _ in rows}, {str(k): int(o or 0) for k, _, o in rows}


def _review_window(
    cur: Cursor, since: float, until: float
) -> tuple[dict[str, ReviewStats], dict[str, set[str]]]:
    """The figures of ``surestep.review.stats.summarize`` over the tasks created in the
    window, aggregated in SQL: decoding every task's JSON would cost more than the rest
    of a scrape together."""
    window = "FROM surestep_review_tasks WHERE created_at BETWEEN ? AND ?"
    proposed = "state = 'decided' AND proposal IS NOT NULL"
    with_sla = "state = 'decided' AND sla IS NOT NULL"
    overrides = ", ".join(f"'{o}'" for o in OVERRIDES)
    cur.execute(
        "SELECT kind, COUNT(*),"
        " SUM(CASE WHEN state = 'decided' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN state = 'expired' THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN {proposed} THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN {proposed} AND outcome IN ({overrides}) THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN level > 0 THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN {with_sla} THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN {with_sla} AND level = 0 AND decided_at <= due_at THEN 1 ELSE 0 END)"
        f" {window} GROUP BY kind",
        (since, until),
    )
    counts = {str(row[0]): [int(n or 0) for n in row[1:]] for row in cur.fetchall()}
    cur.execute(
        f"SELECT kind, workflow, run_id, decided_at - created_at {window}",
        (since, until),
    )
    waits: dict[str, list[float]] = defaultdict(list)
    reviewed: dict[str, set[str]] = defaultdict(set)
    for kind, workflow, run_id, wait in cur.fetchall():
        reviewed[str(workflow)].add(str(run_id))
        if wait is not None:
            waits[str(kind)].append(float(wait))
    stats = {}
    for kind, (total, decided, expired, prop, over, escalated, sla, on_time) in counts.items():
        stats[kind] = ReviewStats(
            kind=kind,
            open=0,  # open and overdue are counted over every open task, not the window
            overdue=0,
            decided=decided,
            expired=expired,
            override_rate=_rate(over, prop),
            escalation_rate=_rate(escalated, total),
            sla_adherence=_rate(on_time, sla),
            p50_seconds=percentile(waits[kind], 0.5),
            p95_seconds=percentile(waits[kind], 0.95),
        )
    return stats, reviewed


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _created(cur: Cursor, workflows: Sequence[str], since: float, until: float) -> dict[str, int]:
    if not workflows:
        return {}
    # One range of surestep_runs_by_workflow (workflow, created_at) each.
    one = (
        "SELECT CAST(? AS TEXT), COUNT(*) FROM surestep_runs WHERE workflow = ?"
        " AND created_at BETWEEN ? AND ?"
    )
    cur.execute(
        " UNION ALL ".join([one] * len(workflows)),
        [p for w in workflows for p in (w, w, since, until)],
    )
    return {str(w): int(n) for w, n in cur.fetchall()}


def _recovery(cur: Cursor, since: float, until: float) -> tuple[int, int]:
    """(failed attempts, failed attempts recovered), from the attempts index alone.

    A step that succeeds at attempt N recovered the N - 1 failed attempts before it
    (attempt numbers go on across a redrive), so the recovered ones are counted when the
    recovery happens, not by a join from each failure to its step: that join cost a
    lookup per failure, ~3 us each on PostgreSQL. At the window's edges the two sides may
    count different failures; the ratio is capped at 1.
    """
    cur.execute(
        "SELECT SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN state = 'success' THEN attempt - 1 ELSE 0 END)"
        " FROM surestep_attempts WHERE finished_at BETWEEN ? AND ?"
        " AND (state = 'failed' OR attempt > 1)",
        (since, until),
    )
    failed, recovered = cur.fetchone()
    return int(failed or 0), min(int(recovered or 0), int(failed or 0))
