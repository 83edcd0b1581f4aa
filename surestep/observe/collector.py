"""The cluster-wide figures as Prometheus gauges: one database read per scrape.

>>> registry = CollectorRegistry()                                   # doctest: +SKIP
>>> registry.register(ClusterCollector(ClusterFigures(app.store, app.clock)))
>>> serve_cluster_metrics(app, port=9465)  # what `surestep metrics` runs
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from surestep.errors import ConfigurationError
from surestep.observe.cluster import DEFAULT_WINDOW, UNFINISHED, ClusterFigures, Figures
from surestep.observe.model_feed import ModelFeed
from surestep.observe.quality import CONFIDENCE_BUCKETS, ModelFigures
from surestep.storage import open_store

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from surestep.app import App

PIP_LINE = "pip install 'prometheus-client>=0.20' (a dependency of surestep: reinstall it)"


def prometheus() -> Any:
    """The prometheus_client module, or a ConfigurationError with the pip line."""
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise ConfigurationError(f"Prometheus metrics need prometheus-client: {PIP_LINE}") from exc
    return prometheus_client


class ClusterCollector:
    """A prometheus_client collector: each ``collect()`` reads :class:`Figures` once."""

    def __init__(self, figures: ClusterFigures) -> None:
        self.figures = figures

    def describe(self) -> list[Any]:
        # No description: describing would read the database at registration time.
        return []

    def collect(self) -> Iterator[Any]:
        figures = self.figures.read()
        yield from families(figures)
        if self.figures.background:
            # Once this scrape's answer is made: the read would otherwise compete with it.
            self.figures.model_feed.refresh(figures.at)


def families(f: Figures) -> Iterator[Any]:
    """The metric families of one reading."""
    from prometheus_client.core import GaugeMetricFamily as Gauge

    window = f"within the last surestep_window_seconds ({f.window:g} s)"
    g = Gauge("surestep_window_seconds", "The window of the *_recent and rate gauges.")
    g.add_metric([], f.window)
    yield g

    g = Gauge(
        "surestep_runs", "Unfinished runs by workflow and state.", labels=["workflow", "state"]
    )
    for workflow in f.workflows:
        for state in UNFINISHED:
            g.add_metric([workflow, state], f.runs.get((workflow, state), 0))
    yield g

    g = Gauge(
        "surestep_runs_finished_recent",
        f"Runs that finished {window}, by workflow and state.",
        labels=["workflow", "state"],
    )
    for (workflow, state), n in sorted(f.finished.items()):
        g.add_metric([workflow, state], n)
    yield g

    g = Gauge(
        "surestep_oldest_due_seconds",
        "How long the oldest claimable run has been due (0: none due): the queue's lag.",
        labels=["workflow"],
    )
    for workflow, seconds in sorted(f.oldest_due.items()):
        g.add_metric([workflow], seconds)
    yield g

    g = Gauge("surestep_dead_letter_runs", "Dead-lettered runs.", labels=["workflow"])
    for workflow in f.workflows:
        g.add_metric([workflow], f.dead_letters(workflow))
    yield g

    yield from _review_families(f, window)

    g = Gauge(
        "surestep_auto_recovery_ratio",
        f"Failed attempts {window} whose step later succeeded, over failed attempts.",
    )
    if f.auto_recovery is not None:
        g.add_metric([], f.auto_recovery)
    yield g

    yield from _model_families(f.llm, window)


def _review_families(f: Figures, window: str) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily as Gauge

    for name, text, values in (
        ("surestep_review_open", "Open review tasks.", f.review_open),
        ("surestep_review_overdue", "Open review tasks past their due time.", f.review_overdue),
    ):
        g = Gauge(name, text, labels=["kind"])
        for kind, n in sorted(values.items()):
            g.add_metric([kind], n)
        yield g

    g = Gauge(
        "surestep_review_needed_ratio",
        f"Share of runs created {window} that opened a review task.",
        labels=["workflow"],
    )
    for workflow, ratio in sorted(f.review_needed.items()):
        g.add_metric([workflow], ratio)
    yield g

    for name, text, attr in (
        ("surestep_review_override_ratio", "Edits and rejects over decisions", "override_rate"),
        ("surestep_review_escalation_ratio", "Tasks escalated at least once", "escalation_rate"),
        ("surestep_review_sla_adherence_ratio", "Decided by the first due time", "sla_adherence"),
    ):
        g = Gauge(name, f"{text}, over review tasks created {window}.", labels=["kind"])
        for kind, stats in sorted(f.reviews.items()):
            value = getattr(stats, attr)
            if value is not None:
                g.add_metric([kind], value)
        yield g

    g = Gauge(
        "surestep_review_decision_seconds",
        f"Time from a review task's creation to its decision (tasks created {window}).",
        labels=["kind", "quantile"],
    )
    for kind, stats in sorted(f.reviews.items()):
        for q, value in (("0.5", stats.p50_seconds), ("0.95", stats.p95_seconds)):
            if value is not None:
                g.add_metric([kind, q], value)
    yield g


def _model_families(m: ModelFigures, window: str) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily as Gauge
    from prometheus_client.core import HistogramMetricFamily as Histogram

    g = Gauge(
        "surestep_llm_window_calls",
        f"Model calls started {window}, by workflow, model and outcome.",
        labels=["workflow", "model", "outcome"],
    )
    for labels, n in sorted(m.calls.items()):
        g.add_metric(list(labels), n)
    yield g

    g = Gauge(
        "surestep_llm_window_cost_usd",
        f"What model calls started {window} cost in USD, used or not, by workflow.",
        labels=["workflow"],
    )
    for workflow, usd in sorted(m.cost_usd.items()):
        g.add_metric([workflow], usd)
    yield g

    g = Gauge(
        "surestep_llm_cost_per_success_usd",
        f"Cost of the model calls {window} of runs that succeeded, over those runs.",
        labels=["workflow"],
    )
    for workflow, usd in m.cost_per_success_usd.items():
        g.add_metric([workflow], usd)
    yield g

    h = Histogram(
        "surestep_llm_confidence",
        f"Confidence of the model answers used {window}, by step and model.",
        labels=["step", "model"],
    )
    for (step, model), c in sorted(m.confidence.items()):
        buckets = [(f"{le:g}", n) for le, n in zip(CONFIDENCE_BUCKETS, c.buckets, strict=True)]
        h.add_metric([step, model], [*buckets, ("+Inf", c.count)], c.total)
    yield h

    s = m.drift_settings
    g = Gauge(
        "surestep_llm_confidence_drift_psi",
        f"Population stability index of the confidences of the last {s.recent:g} s against"
        f" the {s.reference:g} s before (drifted from {s.threshold:g}; none below"
        f" {s.min_samples} answers a side).",
        labels=["step", "model"],
    )
    for report in m.drift:
        if report.psi is not None:
            g.add_metric([report.step, report.model], report.psi)
    yield g


def cluster_registry(
    app: App, window: float | None = None, *, background: bool = False
) -> CollectorRegistry:
    """A registry of its own holding only the cluster-wide gauges of ``app``'s database.

    ``background``: read the model figures off the scrape path (:class:`ModelFeed`), as
    ``surestep metrics`` and ``surestep serve``'s ``/metrics`` do, so that a scrape costs
    the same with a busy model-call ledger; the model families then show the figures read
    last, and are empty on the very first scrape."""
    client = prometheus()
    registry: CollectorRegistry = client.CollectorRegistry(auto_describe=False)
    figures = ClusterFigures(app.store, app.clock, model_feed=_feed(app) if background else None)
    if window is not None:
        figures.window = window
    registry.register(ClusterCollector(figures))
    return registry


def _feed(app: App) -> ModelFeed:
    # A SQLite connection serves one statement at a time, the App's included: the
    # background reads get a connection of their own, or a scrape would wait for them.
    # PostgreSQL's pool hands them one already.
    if app.database_url.split("://", 1)[0].lower() == "sqlite":
        return ModelFeed(open_store(app.database_url), DEFAULT_WINDOW, owns_store=True)
    return ModelFeed(app.store, DEFAULT_WINDOW)


def serve_cluster_metrics(
    app: App, port: int = 9465, host: str = "127.0.0.1", window: float | None = None
) -> Any:
    """Serve the cluster-wide gauges at ``http://host:port/metrics`` from a daemon thread,
    the model figures read in the background; returns (server, thread)."""
    client = prometheus()
    registry = cluster_registry(app, window, background=True)
    return client.start_http_server(port, addr=host, registry=registry)
