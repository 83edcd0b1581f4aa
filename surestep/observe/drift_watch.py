"""The drift watch: workers judge confidence drift every few minutes and raise
``on_drift`` once per crossing.

Every :class:`surestep.App` has one (``app.drift``) among its timers, which each of its
workers sweeps beside run deadlines and review SLAs. It does nothing until a hook is
added to ``on_drift``; then, every ``interval`` seconds (5 minutes by default) per
process, it reads the drift verdict of each (step, model) with recent answers
(:func:`surestep.observe.quality.drift_reports`) and stores each verdict that changed in
``surestep_llm_drift``. A verdict is flipped by a conditional upsert that only one
process can win, and only the process whose update flipped a (step, model) to drifted
raises ``on_drift(report)``: once per crossing across every worker process, and not
again after a restart while it stays drifted. When it is judged stable again the row
flips back, so the next crossing is raised too. No verdict (too few answers) leaves the
row as it is.

>>> app.hooks.add("on_drift", lambda report: page(f"{report.step}: PSI {report.psi:.2f}"))
... # doctest: +SKIP
>>> app.drift.interval = 60          # check every minute  # doctest: +SKIP
>>> app.drift.check()                # or check now, from anywhere  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from typing import Protocol

from surestep.clock import Clock
from surestep.hooks import Hooks
from surestep.observe.drift import DriftReport, DriftSettings
from surestep.observe.quality import drift_reports
from surestep.storage.transient import retry_transient
from surestep.storage.workers import Transactional

#: How often each worker process checks, by default (seconds).
DEFAULT_INTERVAL = 300.0

# Inserts a (step, model)'s verdict, or flips it if it changed; a row count of 1 means
# this statement changed it (an unchanged verdict matches the conflict but not the WHERE).
_FLIP = (
    "INSERT INTO surestep_llm_drift (step, model, drifted, psi, changed_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (step, model) DO UPDATE SET"
    " drifted = excluded.drifted, psi = excluded.psi, changed_at = excluded.changed_at"
    " WHERE surestep_llm_drift.drifted <> excluded.drifted"
)


class DriftHost(Protocol):
    """What the watch needs of its App (an :class:`surestep.App` is one)."""

    clock: Clock
    hooks: Hooks

    @property
    def store(self) -> Transactional: ...


class DriftVerdicts:
    """The ``surestep_llm_drift`` table: the last verdict of each (step, model)."""

    def __init__(self, store: Transactional) -> None:
        self._store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def judge(self, at: float, settings: DriftSettings) -> list[DriftReport]:
        """The verdicts at ``at`` (nothing is stored)."""
        with self._store.reading() as cur:
            return drift_reports(cur, at, settings)

    @retry_transient
    def record(self, reports: list[DriftReport], at: float) -> list[DriftReport]:
        """Store the verdicts; return the reports whose (step, model) this call flipped
        from stable (or never judged) to drifted."""
        crossed = []
        with self._store.transaction() as cur:
            for r in reports:
                if r.drifted is None or r.psi is None:
                    continue
                cur.execute(_FLIP, (r.step, r.model, r.drifted, r.psi, at))
                if cur.rowcount == 1 and r.drifted:
                    crossed.append(r)
        return crossed

    @retry_transient
    def drifted(self) -> dict[tuple[str, str], float]:
        """(step, model) → PSI of those whose last verdict was drifted."""
        with self._store.reading() as cur:
            cur.execute("SELECT step, model, psi FROM surestep_llm_drift WHERE drifted")
            return {(str(s), str(m)): float(p) for s, m, p in cur.fetchall()}


class DriftWatch:
    """A timer (see :class:`surestep.engine.worker.Timer`) that checks confidence drift
    every ``interval`` seconds while ``on_drift`` has hooks; see the module's docstring."""

    def __init__(
        self,
        host: DriftHost,
        interval: float = DEFAULT_INTERVAL,
        settings: DriftSettings | None = None,
    ) -> None:
        self._host = host
        self.interval = interval
        self.settings = settings or DriftSettings()
        self._next_check: float | None = None
        self._lock = threading.Lock()

    def next_due(self) -> float | None:
        if not self._host.hooks.on_drift:
            return None
        return self._next_check

    def sweep(self, now: float | None = None, actor: str | None = None) -> list[DriftReport]:
        """Check if a check is due (``actor`` is unused: a check changes no run)."""
        if not self._host.hooks.on_drift:
            return []
        at = self._host.clock.now() if now is None else now
        with self._lock:  # the workers of one App share the watch
            if self._next_check is not None and at < self._next_check:
                return []
            self._next_check = at + self.interval
        return self.check(at)

    def check(self, now: float | None = None) -> list[DriftReport]:
        """Judge every (step, model) with recent answers now, store the verdicts, raise
        ``on_drift`` for each that this call saw cross into drift, and return those."""
        at = self._host.clock.now() if now is None else now
        verdicts = DriftVerdicts(self._host.store)
        crossed = verdicts.record(verdicts.judge(at, self.settings), at)
        for report in crossed:
            Hooks.emit(self._host.hooks.on_drift, report)
        return crossed
