"""AI-quality figures and confidence drift, read from the model-call ledger of a real
store on SQLite and PostgreSQL: real LLM steps (FakeLLM) for calls, cost and confidence;
ledger rows at chosen times for drift, with the verdicts stored and on_drift raised once
per crossing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from surestep import App, FakeClock, State
from surestep.llm.ledger import CallLedger, ModelCall
from surestep.observe.cluster import ClusterFigures
from surestep.observe.drift import DriftReport, DriftSettings
from surestep.observe.drift_watch import DriftVerdicts, DriftWatch
from surestep.testing import FakeLLM, drive, run_workflow

GOOD = {"vendor": "ACME", "total": "12.50", "confidence": 0.95}
BIG = 0.02  # what a FakeLLM reply (10 in, 5 out) costs on fake:big at the price below
DAY = 86400.0


def invoice_app(app: App, fake: FakeLLM) -> None:
    from pydantic import BaseModel

    class Invoice(BaseModel):
        vendor: str
        total: str
        confidence: float

    app.llm_provider("fake", provider=fake)
    app.llm_price("fake:big", input_per_mtok=1000, output_per_mtok=2000)
    extract = app.llm_step(
        name="extract_invoice",
        schema=Invoice,
        models=["fake:big", "fake:small"],
        prompt=lambda doc: f"Extract the invoice: {doc}",
        confidence="confidence",
        min_confidence=0.8,
        max_repairs=1,
        review={"groups": ["finance"], "sla": timedelta(hours=2)},
    )

    @app.workflow(name="invoice")
    def invoice(doc: str) -> str:
        return extract(doc).vendor  # type: ignore[no-any-return]


def three_runs(app: App, fake: FakeLLM) -> None:
    """a: two invalid replies of fake:big (priced), then fake:small (unpriced) answers;
    b: fake:big answers at once; c: fake:big is unsure and the run waits for review."""
    invoice_app(app, fake)
    fake.reply('{"vendor": "ACME"}', model="big").reply("no JSON", model="big")
    fake.reply(GOOD, model="small")
    run_workflow(app, "invoice", "a", run_id="a")
    fake.reply(GOOD, model="big")
    run_workflow(app, "invoice", "b", run_id="b")
    fake.reply({**GOOD, "confidence": 0.4}, model="big")
    app.start("invoice", "c", run_id="c")
    drive(app, until=lambda: app.handle("c").state == State.NEEDS_REVIEW)


def test_calls_cost_and_confidence_of_real_llm_steps(app: App) -> None:
    three_runs(app, FakeLLM())
    m = ClusterFigures(app.store, app.clock).read().llm
    assert m.calls == {
        ("invoice", "fake:big", "invalid"): 2,
        ("invoice", "fake:small", "ok"): 1,
        ("invoice", "fake:big", "ok"): 1,
        ("invoice", "fake:big", "review"): 1,
    }
    assert m.cost_usd == {"invoice": pytest.approx(4 * BIG)}  # unused calls included
    # a and b succeeded; c (one priced call) has not: it counts in neither part.
    assert m.succeeded_runs == {"invoice": 2}
    assert m.cost_per_success_usd == {"invoice": pytest.approx(3 * BIG / 2)}
    big = m.confidence[("extract_invoice", "fake:big")]  # b's 0.95 and c's 0.4
    assert (big.count, big.total) == (2, pytest.approx(1.35))
    assert big.buckets == (0, 0, 0, 1, 1, 1, 1, 1, 1, 2)  # cumulative, le 0.1 .. 1.0
    small = m.confidence[("extract_invoice", "fake:small")]
    assert (small.count, small.buckets[-2:]) == (1, (0, 1))
    # The invalid replies were not used: no confidence of theirs is counted.
    assert sum(h.count for h in m.confidence.values()) == 3


def test_the_window_bounds_the_model_figures(app: App, clock: FakeClock) -> None:
    start = clock.now()
    three_runs(app, FakeLLM())
    figures = ClusterFigures(app.store, app.clock, window=3600)
    assert figures.read(now=start - 1).llm.calls == {}  # all started after that
    clock.advance(3601)
    later = figures.read().llm
    assert (later.calls, later.cost_usd, later.succeeded_runs) == ({}, {}, {})
    assert (later.cost_per_success_usd, later.confidence, later.drift) == ({}, {}, [])
    assert figures.read(now=start + 3600).llm.succeeded_runs == {"invoice": 2}


def test_the_model_figures_are_equal_on_sqlite_and_postgresql(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    def llm_figures(url: str) -> dict[str, Any]:
        app = App(url, clock=FakeClock(start=1_700_000_000.0))
        try:
            three_runs(app, FakeLLM())
            record(app, "extract_invoice", [0.9] * 40, at=app.clock.now() - 2 * DAY)
            data: dict[str, Any] = ClusterFigures(app.store, app.clock).read().as_dict()["llm"]
            return data
        finally:
            app.close()

    on_sqlite = llm_figures(f"sqlite:///{tmp_path / 'surestep.db'}")
    assert on_sqlite == llm_figures(postgres_schema_url)
    assert on_sqlite["cost_per_success_usd"] == {"invoice": pytest.approx(3 * BIG / 2)}
    assert on_sqlite["drift"][0]["reference_n"] == 40


# -- drift -------------------------------------------------------------------------------

#: An answer of a model: record() gives it a step, a confidence and a time.
ANSWER = ModelCall(
    run_id="r",
    position=0,
    attempt=1,
    seq=1,
    workflow="w",
    step="s",
    provider="fake",
    model="big",
    prompt_hash="p",
    schema_hash=None,
    outcome="ok",
    error=None,
    finish_reason="stop",
    input_tokens=1,
    output_tokens=1,
    cost_usd=0.0,
    priced=False,
    price_version=None,
    latency=0.1,
    confidence=None,
    chosen=True,
    cached=False,
    started_at=0.0,
)


def record(
    app: App, step: str, confidences: list[float], at: float, spacing: float = 1.0, **what: Any
) -> None:
    """Answers of ``step`` with these confidences, ``spacing`` seconds apart, the last
    one at ``at``."""
    ledger = CallLedger(app.store)
    last = len(confidences) - 1
    for i, confidence in enumerate(confidences):
        at_i = at - (last - i) * spacing
        ledger.record(replace(ANSWER, step=step, confidence=confidence, started_at=at_i, **what))


def spread(low: float, high: float, n: int) -> list[float]:
    return [low + (high - low) * i / (n - 1) for i in range(n)]


def test_drift_verdicts_over_the_two_windows(app: App, clock: FakeClock) -> None:
    now = clock.now()
    stable_ref, stable_now = spread(0.80, 0.99, 100), spread(0.81, 0.98, 60)
    record(app, "steady", stable_ref, at=now - 2 * DAY, spacing=60)
    record(app, "steady", stable_now, at=now - 10, spacing=30)
    record(app, "shifted", stable_ref, at=now - 3 * DAY, spacing=60)
    record(app, "shifted", spread(0.30, 0.60, 50), at=now, spacing=30)
    record(app, "quiet", stable_ref, at=now - DAY)
    record(app, "quiet", [0.1] * 29, at=now)  # one short of a verdict
    # Outside both windows, or not used, or without a confidence: not read.
    record(app, "steady", [0.1] * 50, at=now - 9 * DAY)
    record(app, "steady", [0.1] * 50, at=now, chosen=False)
    record(app, "old", stable_ref, at=now - 2 * DAY)  # no recent answer: not judged

    reports = {r.step: r for r in ClusterFigures(app.store, app.clock).read().llm.drift}
    assert sorted(reports) == ["quiet", "shifted", "steady"]
    steady, shifted, quiet = reports["steady"], reports["shifted"], reports["quiet"]
    assert (steady.drifted, steady.recent_n, steady.reference_n) == (False, 60, 100)
    assert steady.psi is not None and steady.psi < 0.1
    assert (shifted.drifted, shifted.model, shifted.ks) == (True, "fake:big", 1.0)
    assert shifted.psi is not None and shifted.psi > 1
    assert (quiet.drifted, quiet.psi, quiet.recent_n, quiet.reference_n) == (None, None, 29, 100)


def test_each_side_reads_only_its_most_recent_answers(app: App, clock: FakeClock) -> None:
    now = clock.now()
    record(app, "s", [0.1] * 60, at=now - 3 * DAY)  # older reference answers: low
    record(app, "s", [0.9] * 40, at=now - 2 * DAY)  # the most recent reference answers
    record(app, "s", [0.9] * 40, at=now)
    capped = ClusterFigures(app.store, app.clock, drift=DriftSettings(limit=40)).read()
    [report] = capped.llm.drift
    assert (report.reference_n, report.drifted) == (40, False)
    [whole] = ClusterFigures(app.store, app.clock).read().llm.drift
    assert (whole.reference_n, whole.drifted) == (100, True)


def drifting(app: App, now: float) -> None:
    record(app, "extract", spread(0.8, 0.99, 100), at=now - DAY, spacing=60)
    record(app, "extract", spread(0.2, 0.5, 40), at=now, spacing=60)


def test_on_drift_is_raised_once_per_crossing(app: App, clock: FakeClock) -> None:
    fired: list[DriftReport] = []
    app.hooks.add("on_drift", fired.append)
    assert app.drift.check() == []  # nothing recorded yet
    drifting(app, clock.now())
    [crossed] = app.drift.check()
    assert fired == [crossed] and (crossed.step, crossed.drifted) == ("extract", True)
    assert app.drift.check() == [] and len(fired) == 1  # still drifted: not raised again
    verdicts = DriftVerdicts(app.store)
    assert verdicts.drifted() == {("extract", "fake:big"): pytest.approx(crossed.psi)}
    # Judged stable again, the row flips back; the next crossing is raised again.
    stable = replace(crossed, psi=0.01, drifted=False)
    assert verdicts.record([stable], clock.now()) == [] and verdicts.drifted() == {}
    assert app.drift.check() == [crossed] and len(fired) == 2
    # No verdict leaves the stored one alone.
    assert verdicts.record([replace(crossed, psi=None, drifted=None)], clock.now()) == []
    assert verdicts.drifted() == {("extract", "fake:big"): pytest.approx(crossed.psi)}


def test_many_processes_raise_a_crossing_once(db_url: str, clock: FakeClock) -> None:
    apps = [App(db_url, clock=clock) for _ in range(3)]
    try:
        fired: list[tuple[int, DriftReport]] = []
        for i, one in enumerate(apps):
            one.hooks.add("on_drift", lambda report, i=i: fired.append((i, report)))
        drifting(apps[0], clock.now())
        for one in apps:
            one.drift.check()
        assert [i for i, _ in fired] == [0]
        # A process started later (a restarted worker) does not raise it again.
        late = App(db_url, clock=clock)
        late.hooks.add("on_drift", lambda report: fired.append((3, report)))
        assert late.drift.check() == [] and len(fired) == 1
        late.close()
    finally:
        for one in apps:
            one.close()


def test_the_watch_checks_only_with_hooks_and_at_its_interval(app: App, clock: FakeClock) -> None:
    watch: DriftWatch = app.drift
    assert watch in app.timers
    drifting(app, clock.now())
    assert watch.next_due() is None and watch.sweep() == []  # no hook: no check
    assert DriftVerdicts(app.store).drifted() == {}
    fired: list[DriftReport] = []
    app.hooks.add("on_drift", fired.append)
    watch.interval = 600
    record(app, "later", spread(0.8, 0.99, 100), at=clock.now() - DAY)
    assert [r.step for r in watch.sweep()] == ["extract"]
    assert watch.next_due() == clock.now() + 600
    record(app, "later", [0.1] * 40, at=clock.now())
    clock.advance(599)
    assert watch.sweep() == []  # not due: "later" is not judged yet
    clock.advance(1)
    assert [r.step for r in watch.sweep()] == ["later"]
    assert [r.step for r in fired] == ["extract", "later"]


def test_a_worker_raises_on_drift(app: App, clock: FakeClock) -> None:
    fired: list[DriftReport] = []
    app.hooks.add("on_drift", fired.append)
    drifting(app, clock.now())
    drive(app, until=lambda: bool(fired))
    assert [(r.step, r.drifted) for r in fired] == [("extract", True)]


# -- exposition --------------------------------------------------------------------------


def test_the_prometheus_exposition_parses(app: App, clock: FakeClock) -> None:
    from prometheus_client import generate_latest

    from surestep.observe.collector import cluster_registry

    three_runs(app, FakeLLM())
    drifting(app, clock.now())
    text = generate_latest(cluster_registry(app)).decode()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    invalid = (("model", "fake:big"), ("outcome", "invalid"), ("workflow", "invoice"))
    assert found[("surestep_llm_window_calls", invalid)] == 2
    assert found[("surestep_llm_window_cost_usd", (("workflow", "invoice"),))] == pytest.approx(
        4 * BIG
    )
    per_success = ("surestep_llm_cost_per_success_usd", (("workflow", "invoice"),))
    assert found[per_success] == pytest.approx(3 * BIG / 2)
    big = (("model", "fake:big"), ("step", "extract_invoice"))
    assert found[("surestep_llm_confidence_count", big)] == 2
    assert found[("surestep_llm_confidence_sum", big)] == pytest.approx(1.35)
    assert found[("surestep_llm_confidence_bucket", (("le", "0.5"), *big))] == 1
    assert found[("surestep_llm_confidence_bucket", (("le", "+Inf"), *big))] == 2
    psi = found[("surestep_llm_confidence_drift_psi", (("model", "fake:big"), ("step", "extract")))]
    assert psi > 0.2
    # Too few answers for a verdict: no PSI sample rather than a made-up one.
    assert ("surestep_llm_confidence_drift_psi", big) not in found


def test_the_scrape_path_reads_the_model_figures_in_the_background(
    app: App, clock: FakeClock
) -> None:
    from prometheus_client import generate_latest

    from surestep.observe.collector import cluster_registry
    from surestep.observe.model_feed import DEFAULT_REFRESH

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = generate_latest(registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    three_runs(app, FakeLLM())
    drifting(app, clock.now())
    registry = cluster_registry(app, background=True)
    (collector,) = registry._collector_to_names  # the one ClusterCollector
    feed = collector.figures.model_feed  # type: ignore[attr-defined]
    first = scraped()
    assert ("surestep_runs", (("state", "pending"), ("workflow", "invoice"))) in first
    assert not any(name.startswith("surestep_llm_") for name, _ in first)  # read under way
    feed.wait()
    served = scraped()
    expected = ClusterFigures(app.store, app.clock).read().llm  # read in the same snapshot
    calls = {
        tuple(v for _, v in labels): n
        for (name, labels), n in served.items()
        if name == "surestep_llm_window_calls"
    }
    assert calls == {(m, o, w): n for (w, m, o), n in expected.calls.items()}
    extract = (("model", "fake:big"), ("step", "extract"))
    psi = served[("surestep_llm_confidence_drift_psi", extract)]
    assert psi == pytest.approx(expected.drift[0].psi)
    # Newer calls show once the figures are older than the refresh: the scrape that finds
    # them stale is served the old ones and starts a read; the next shows the new ones.
    record(app, "extract", spread(0.2, 0.5, 5), at=clock.now(), spacing=1)
    clock.advance(DEFAULT_REFRESH + 1)
    assert scraped() == served
    feed.wait()
    assert scraped()[("surestep_llm_confidence_count", extract)] == 45
    feed.close()
