"""Cluster-wide figures after a known workload: the same on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import surestep
from surestep import App, FakeClock, Retry, State
from surestep.observe.cluster import ClusterFigures
from surestep.review.queries import ReviewQueries
from surestep.review.stats import summarize
from surestep.testing import drive

START = 1_700_000_000.0


def workload(app: App, clock: FakeClock) -> None:
    """Runs in every state, a recovered retry, a dead letter, a failure, review tasks
    open, overdue and decided (an override)."""
    tries: dict[str, int] = {}

    @app.step(retry=Retry(max_attempts=3, initial_delay=0, jitter=False))
    def flaky(key: str) -> str:
        tries[key] = tries.get(key, 0) + 1
        if tries[key] == 1:
            raise ConnectionError("once")
        return key

    @app.step(retry=Retry(max_attempts=2, initial_delay=0, jitter=False))
    def broken() -> None:
        raise ValueError("always")

    @app.step(retry=Retry(max_attempts=1), on_exhausted="fail")
    def fatal() -> None:
        raise ValueError("fatal")

    @app.workflow(name="etl")
    def etl(key: str) -> str:
        return flaky(key)

    @app.workflow(name="parked")
    def parked() -> None:
        broken()

    @app.workflow(name="doomed")
    def doomed() -> None:
        fatal()

    @app.workflow(name="invoice")
    def invoice(doc: str) -> str:
        decision = surestep.request_review(
            {"doc": doc},
            kind="approve_invoice",
            proposal={"doc": doc},
            sla=timedelta(minutes=10) if doc != "later" else timedelta(days=1),
        )
        return decision.outcome

    for i in range(3):
        app.start("etl", f"k{i}", run_id=f"etl-{i}")
    app.start("parked", run_id="parked-0")
    app.start("doomed", run_id="doomed-0")
    for doc in ("a", "b", "later"):
        app.start("invoice", doc, run_id=f"inv-{doc}")
    drive(
        app,
        until=lambda: (
            all(app.handle(f"etl-{i}").state == State.SUCCESS for i in range(3))
            and app.handle("parked-0").state == State.DEAD_LETTER
            and app.handle("doomed-0").state == State.FAILED
            and len(app.reviews.list()) == 3
        ),
    )
    [first] = [t for t in app.reviews.list() if t.run_id == "inv-a"]
    app.reviews.decide(first.id, "edit", by="alice", data={"doc": "A"})
    drive(app, until=lambda: app.handle("inv-a").state == State.SUCCESS)
    clock.advance(3600)  # inv-b's review is overdue now; inv-later's is not
    # Queued and never claimed: due for 40 s at the reading.
    app.start("etl", "late", run_id="etl-late")
    clock.advance(40)


def figures_after_workload(url: str) -> dict[str, Any]:
    clock = FakeClock(start=START)
    app = App(url, clock=clock)
    try:
        workload(app, clock)
        return ClusterFigures(app.store, app.clock, window=2 * 3600).read().as_dict()
    finally:
        app.close()


def test_figures_after_a_known_workload(app: App, clock: FakeClock) -> None:
    workload(app, clock)
    f = ClusterFigures(app.store, app.clock, window=2 * 3600).read()
    assert f.runs == {
        ("etl", "pending"): 1,
        ("parked", "dead_letter"): 1,
        ("invoice", "needs_review"): 2,
    }
    assert f.finished == {
        ("etl", "success"): 3,
        ("doomed", "failed"): 1,
        ("invoice", "success"): 1,
    }
    assert f.oldest_due == {"etl": pytest.approx(40.0)}
    assert f.dead_letters("parked") == 1 and f.dead_letters("etl") == 0
    assert f.review_open == {"approve_invoice": 2}
    assert f.review_overdue == {"approve_invoice": 1}
    stats = f.reviews["approve_invoice"]
    assert (stats.decided, stats.override_rate, stats.sla_adherence) == (1, 1.0, 1.0)
    # Aggregated in SQL, the same as review.stats.summarize over the decoded tasks.
    tasks = ReviewQueries(app.store).created_since(f.at - f.window, None)
    expected = summarize(tasks, "approve_invoice", f.at)
    assert stats == replace(expected, open=0, overdue=0, reviewers={})
    assert f.review_needed == {"doomed": 0.0, "etl": 0.0, "invoice": 1.0, "parked": 0.0}
    # etl: 3 failed first attempts, all recovered; parked: 2 failed, doomed: 1 failed.
    assert (f.failed_attempts, f.recovered_attempts) == (6, 3)
    assert f.auto_recovery == 0.5


def test_the_figures_are_equal_on_sqlite_and_postgresql(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    on_sqlite = figures_after_workload(f"sqlite:///{tmp_path / 'surestep.db'}")
    on_postgres = figures_after_workload(postgres_schema_url)
    assert on_sqlite == on_postgres
    assert on_sqlite["dead_letter"]["parked"] == 1


def test_a_window_leaves_older_finished_runs_and_attempts_out(app: App, clock: FakeClock) -> None:
    workload(app, clock)
    f = ClusterFigures(app.store, app.clock, window=30).read()
    assert f.finished == {}  # all finished over an hour ago
    assert (f.failed_attempts, f.reviews) == (0, {})
    assert f.runs[("etl", "pending")] == 1  # unfinished runs count whatever their age


def test_drift_is_read_at_most_once_a_minute(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    import surestep.observe.quality as quality
    from surestep.observe.cluster import ClusterFigures
    from surestep.observe.model_feed import DRIFT_CACHE_SECONDS

    reads: list[float] = []
    real = quality.drift_reports

    def counted(cur: object, until: float, settings: object) -> object:
        reads.append(until)
        return real(cur, until, settings)  # type: ignore[arg-type]

    monkeypatch.setattr(quality, "drift_reports", counted)
    figures = ClusterFigures(app.store, app.clock)
    start = app.clock.now()
    for offset in (0.0, 1.0, DRIFT_CACHE_SECONDS - 1):
        figures.read(now=start + offset)
    assert reads == [start]  # the scrapes within the minute reused it
    figures.read(now=start + DRIFT_CACHE_SECONDS + 1)
    assert reads == [start, start + DRIFT_CACHE_SECONDS + 1]
