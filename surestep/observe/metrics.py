"""Per-process Prometheus metrics: what this process's workers executed.

:class:`WorkerMetrics` is a hook subscriber (see :mod:`surestep.hooks`) that keeps its
series in a registry of its own, never prometheus_client's global one, so that several
Apps and workers in one process (tests, an app that embeds a worker) never collide.
Labels are bounded: workflow and step names, outcomes, states and exception type names,
never a run id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

from surestep.states import SETTLED, State

if TYPE_CHECKING:
    from surestep.engine.context import StepContext
    from surestep.llm.ledger import ModelCall

#: Step attempts run from milliseconds (a local call) to minutes (an LLM, a batch job).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: Claim lag: how long a due run waited for a worker (a slot or a poll).
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Model calls: from a cached answer (0) to a slow model with a long reply.
MODEL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
#: Tokens per call, in powers of 4 (OpenTelemetry's GenAI conventions suggest these).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
#: Distinct error type names kept per (workflow, step); beyond, they count as "other",
#: so a library raising dynamically named exceptions cannot grow the series without end.
MAX_ERROR_NAMES = 20


class WorkerMetrics:
    """Counters and histograms of the steps and runs this process executed.

    >>> metrics = WorkerMetrics()
    >>> unsubscribe = app.hooks.subscribe(metrics)  # doctest: +SKIP
    >>> metrics.serve(9464)  # doctest: +SKIP
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("workflow", "step", "outcome")
        self.step_attempts = Counter(
            "surestep_step_attempts",
            "Step attempts executed, by the step's state after the attempt.",
            labels,
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "surestep_step_duration_seconds",
            "Wall time of step attempts.",
            labels,
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.claim_lag = Histogram(
            "surestep_claim_lag_seconds",
            "Time from a run becoming due to a worker claiming it.",
            ("workflow",),
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "surestep_retries",
            "Step retries scheduled, by the error's type name.",
            ("workflow", "step", "error"),
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "surestep_runs_finished",
            "Runs this process settled (success, failed, cancelled, dead_letter).",
            ("workflow", "state"),
            registry=self.registry,
        )
        self._model_series()
        self.slots = Gauge(
            "surestep_worker_slots",
            "Run slots of this process's workers, busy or free.",
            ("state",),
            registry=self.registry,
        )
        self._errors: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    # -- hooks -------------------------------------------------------------------------

    def _model_series(self) -> None:
        """The model-call series (OpenTelemetry GenAI names where there is one)."""
        self.model_tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per model call, by model and type (input, output).",
            ("model", "type"),
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.model_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of model calls, by model.",
            ("model",),
            buckets=MODEL_BUCKETS,
            registry=self.registry,
        )
        self.model_calls = Counter(
            "surestep_llm_calls",
            "Model calls, by model and outcome (ok, review, invalid, low_confidence, or a"
            " fault such as timeout or rate_limited).",
            ("model", "workflow", "outcome"),
            registry=self.registry,
        )
        self.model_cost = Counter(
            "surestep_llm_cost_usd",
            "What model calls cost in USD, used or not, by model and workflow.",
            ("model", "workflow"),
            registry=self.registry,
        )

    def on_model_call(self, call: ModelCall) -> None:
        model = call.model_ref
        self.model_calls.labels(model, call.workflow, call.outcome).inc()
        if call.cached:
            return  # no call was made: no tokens, no time, no cost
        self.model_duration.labels(model).observe(call.latency)
        self.model_tokens.labels(model, "input").observe(call.input_tokens)
        self.model_tokens.labels(model, "output").observe(call.output_tokens)
        self.model_cost.labels(model, call.workflow).inc(call.cost_usd)

    def after_step(self, step: StepContext, state: State, seconds: float) -> None:
        outcome = str(state)
        self.step_attempts.labels(step.workflow, step.name, outcome).inc()
        self.step_duration.labels(step.workflow, step.name, outcome).observe(seconds)

    def on_retry(self, step: StepContext, error: BaseException, delay: float) -> None:
        self.retries.labels(step.workflow, step.name, self._error_name(step, error)).inc()

    def on_claim(self, run_id: str, workflow: str, due_at: float, claimed_at: float) -> None:
        self.claim_lag.labels(workflow).observe(max(0.0, claimed_at - due_at))

    def on_run_state(
        self, run_id: str, from_state: State, to_state: State, workflow: str = ""
    ) -> None:
        if to_state in SETTLED:
            self.runs_finished.labels(workflow, str(to_state)).inc()

    # -- slots and serving ---------------------------------------------------------------

    def track_slots(self, busy: Callable[[], int], capacity: int) -> None:
        """Read the slot gauge from ``busy()`` at each scrape (no per-run bookkeeping)."""
        self.slots.labels("busy").set_function(lambda: float(busy()))
        self.slots.labels("free").set_function(lambda: float(capacity - busy()))

    def serve(self, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
        """Serve ``/metrics`` over HTTP in a daemon thread; return a function that stops it."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop

    def _error_name(self, step: StepContext, error: BaseException) -> str:
        name = type(error).__name__
        with self._lock:
            seen = self._errors.setdefault((step.workflow, step.name), set())
            if name not in seen:
                if len(seen) >= MAX_ERROR_NAMES:
                    return "other"
                seen.add(name)
        return name
