"""OpenTelemetry traces of runs, plugged into the hook catalogue (:mod:`surestep.hooks`).

Only the OpenTelemetry *API* is used. Without the SDK (``pip install 'surestep[otel]'``)
or another configured tracer provider, the API's tracer is a no-op and a span costs a
few attribute look-ups; with the SDK, spans go wherever its provider sends them.

What is traced (docs/traces.md):

- ``surestep.start <workflow>``: an instant span when a run is started; its context is
  stored with the run (``surestep_runs.trace_context``), so every later slice of the run,
  on any worker and any day, is a child of it: one trace per run. Started with a
  caller's ``traceparent``, it is a child of the caller's span.
- ``surestep.run <workflow>``: one execution slice of a run by a worker (claim to settle,
  halt or hand-back), with events for retries scheduled, state changes, reviews and
  deadline breaches.
- ``surestep.step <step>``: one attempt of a step, a child of its slice, with the run
  id, position, attempt and outcome; a compensation is a step span with
  ``surestep.step.compensation`` set. Its span is made when the attempt ends, with its
  start time and every attribute given at once (the cheapest way through the SDK), or
  as soon as something needs it as a parent (a model call, :meth:`Tracing.step_span`);
  a span processor's ``on_start`` therefore sees it late. Only the slice span of a run
  the sampler dropped is made.

Extension point: a layer that calls out from inside a step (the LLM layer's GenAI
``chat <model>`` spans) makes its spans children of :meth:`Tracing.step_span` with
:attr:`Tracing.tracer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import time_ns
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
)

from surestep.errors import ConfigurationError
from surestep.observe.traceparent import check_traceparent, format_traceparent
from surestep.states import State

if TYPE_CHECKING:
    from surestep.engine.context import StepContext
    from surestep.hooks import Hooks
    from surestep.llm.ledger import ModelCall
    from surestep.review.records import ReviewTask

#: The run and step states that mark a span as an error.
_ERRORS = frozenset({State.FAILED, State.DEAD_LETTER, State.CANCELLED})


class _Attempt:
    """A step attempt in flight: when it began, and its span once one was needed."""

    __slots__ = ("span", "started", "step")

    def __init__(self, step: StepContext, started: int) -> None:
        self.step = step
        self.started = started  # time.time_ns() at before_step
        self.span: Span | None = None


@dataclass
class _Slice:
    span: Span
    workflow: str
    context: Context  # with ``span`` current: the parent of its step spans, made once
    steps: dict[int, _Attempt] = field(default_factory=dict)  # in flight, by position


class Tracing:
    """Spans for the runs and steps this process starts and executes.

    >>> tracing = app.trace()   # the global tracer provider     # doctest: +SKIP
    >>> tracing = app.trace(tracer_provider=provider)            # doctest: +SKIP

    ``App(..., tracing=True)`` does the same when the App is built.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        #: The tracer surestep's spans are made with, for extensions' own spans.
        self.tracer = trace.get_tracer("surestep", tracer_provider=tracer_provider)
        # By run id: the slices this process is executing. A run is executed by at most
        # one slice of one worker at a time (its lease), so the run id is enough.
        self._slices: dict[str, _Slice] = {}

    def subscribe(self, hooks: Hooks) -> None:
        """Plug into an App's hooks (``app.trace()`` does it)."""
        hooks.add("on_run_start", self.run_started)
        hooks.add("on_run_end", self.run_ended)
        hooks.add("on_run_state", self.run_state)
        hooks.add("before_step", self.step_started)
        hooks.add("after_step", self.step_finished)
        hooks.add("on_retry", self.retry_scheduled)
        hooks.add("on_deadline", self.deadline_breached)
        hooks.add("on_review", self.review_changed)
        hooks.add("on_model_call", self.model_call)

    # -- where a run's trace begins -----------------------------------------------------

    def start_context(self, workflow: str, run_id: str, traceparent: str | None) -> str | None:
        """The traceparent to store with a run being started: of an instant
        ``surestep.start`` span, a child of the caller's ``traceparent`` if given."""
        parent = _context_of(traceparent)
        span = self.tracer.start_span(
            f"surestep.start {workflow}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={"surestep.run.id": run_id, "surestep.workflow": workflow},
        )
        span.end()
        ctx = span.get_span_context()
        if not ctx.is_valid:  # the API's no-op tracer: keep the caller's trace, if any
            return traceparent
        return format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags)

    # -- slices -------------------------------------------------------------------------

    def run_started(self, run_id: str, workflow: str, trace_context: str | None) -> None:
        span = self.tracer.start_span(
            f"surestep.run {workflow}",
            context=_context_of(trace_context, stored=True),
            kind=SpanKind.CONSUMER,
            attributes={"surestep.run.id": run_id, "surestep.workflow": workflow},
        )
        if not span.is_recording():
            # Not sampled (or the API's no-op tracer): its step spans would be dropped
            # too, since every sampler the SDK ships decides a child of an unsampled span
            # the same way, so none is made: an unsampled run costs one span a slice.
            return
        self._slices[run_id] = _Slice(span, workflow, trace.set_span_in_context(span))

    def run_state(
        self, run_id: str, from_state: State, to_state: State, workflow: str = ""
    ) -> None:
        found = self._slices.get(run_id)
        if found is None:
            return
        found.span.set_attribute("surestep.run.state", to_state.value)
        found.span.add_event("surestep.run.state", {"from": from_state.value, "to": to_state.value})
        if to_state in _ERRORS:
            found.span.set_status(Status(StatusCode.ERROR, f"run ended {to_state.value}"))

    def run_ended(self, run_id: str) -> None:
        found = self._slices.pop(run_id, None)
        if found is None:
            return
        # Attempts whose outcome was never committed (the lease was lost, the worker
        # failed): ended here, so no span is left open.
        for attempt in found.steps.values():
            span = attempt.span
            if span is None:
                span = self._start_step_span(found, attempt, "interrupted")
            else:
                span.set_attribute("surestep.step.outcome", "interrupted")
            span.set_status(Status(StatusCode.ERROR, "the slice ended before the attempt"))
            span.end()
        found.span.end()

    # -- step attempts ------------------------------------------------------------------

    def step_started(self, step: StepContext) -> None:
        found = self._slices.get(step.run_id)
        if found is None:  # subscribed while the run was executing
            return
        # No span yet: it is made when the attempt ends, with every attribute known,
        # in one call (the SDK validates attributes one by one, and each later
        # set_attribute takes the span's lock); or earlier, if something needs it as
        # a parent while the attempt runs (a model call, step_span()).
        found.steps[step.position] = _Attempt(step, time_ns())

    def step_finished(self, step: StepContext, state: State, seconds: float) -> None:
        found = self._slices.get(step.run_id)
        attempt = None if found is None else found.steps.pop(step.position, None)
        if found is None or attempt is None:
            return
        outcome = state.value
        span = attempt.span
        if span is None:
            span = self._start_step_span(found, attempt, outcome)
        else:
            span.set_attribute("surestep.step.outcome", outcome)
        if state is not State.SUCCESS:
            span.set_status(Status(StatusCode.ERROR, f"attempt ended {outcome}"))
        span.end()

    def _start_step_span(
        self, found: _Slice, attempt: _Attempt, outcome: str | None = None
    ) -> Span:
        step = attempt.step
        attributes: dict[str, str | int | bool] = {
            "surestep.run.id": step.run_id,
            "surestep.step.position": step.position,
            "surestep.step.attempt": step.attempt,
        }
        if step.position < 0:
            attributes["surestep.step.compensation"] = True
        if outcome is not None:
            attributes["surestep.step.outcome"] = outcome
        return self.tracer.start_span(
            f"surestep.step {step.name}",
            context=found.context,
            attributes=attributes,
            start_time=attempt.started,
        )

    def _step_span(self, run_id: str, position: int) -> Span | None:
        found = self._slices.get(run_id)
        attempt = None if found is None else found.steps.get(position)
        if found is None or attempt is None:
            return None
        if attempt.span is None:
            attempt.span = self._start_step_span(found, attempt)
        return attempt.span

    def step_span(self, step: StepContext) -> Span | None:
        """The span of a step attempt in flight in this process (from inside a step:
        ``tracing.step_span(surestep.current_step())``), to parent an extension's spans;
        None outside a traced slice, or in a run the sampler dropped."""
        return self._step_span(step.run_id, step.position)

    def model_call(self, call: ModelCall) -> None:
        """A GenAI ``chat <model>`` span for a model call, a child of its step attempt's
        span, timed as the call was (OpenTelemetry's GenAI conventions)."""
        if call.cached:
            return
        parent = self._step_span(call.run_id, call.position)
        if parent is None:
            return
        started = int(call.started_at * 1e9)
        span = self.tracer.start_span(
            f"chat {call.model}",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            start_time=started,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": call.provider,
                "gen_ai.request.model": call.model,
                "gen_ai.usage.input_tokens": call.input_tokens,
                "gen_ai.usage.output_tokens": call.output_tokens,
                "gen_ai.response.finish_reasons": [call.finish_reason or ""],
                "surestep.llm.outcome": call.outcome,
                "surestep.llm.cost_usd": call.cost_usd,
                "surestep.llm.chosen": call.chosen,
            },
        )
        if call.confidence is not None:
            span.set_attribute("surestep.llm.confidence", call.confidence)
        if call.outcome not in ("ok", "review"):
            span.set_status(Status(StatusCode.ERROR, call.error or call.outcome))
        span.end(end_time=started + int(call.latency * 1e9))

    # -- events of a slice --------------------------------------------------------------

    def retry_scheduled(self, step: StepContext, error: BaseException, delay: float) -> None:
        found = self._slices.get(step.run_id)
        if found is None:
            return
        found.span.add_event(
            "surestep.retry",
            {
                "surestep.step.name": step.name,
                "surestep.step.position": step.position,
                "surestep.step.attempt": step.attempt,
                "exception.type": type(error).__name__,
                "exception.message": str(error),
                "surestep.retry.delay_seconds": delay,
            },
        )

    def deadline_breached(self, run_id: str) -> None:
        found = self._slices.get(run_id)
        if found is not None:
            found.span.add_event("surestep.deadline")

    def review_changed(self, event: str, task: ReviewTask) -> None:
        # A review decided by another process (the console) is in no slice here; the
        # run's next slice shows what the decision led to.
        found = self._slices.get(task.run_id)
        if found is None:
            return
        attributes: dict[str, str | int] = {"surestep.review.id": task.id, "kind": task.kind}
        if task.position is not None:
            attributes["surestep.step.position"] = task.position
        found.span.add_event(f"surestep.review.{event}", attributes)


def _context_of(traceparent: str | None, *, stored: bool = False) -> Context | None:
    """The context whose current span is the remote span ``traceparent`` names."""
    if traceparent is None:
        return None
    try:
        trace_id, span_id, flags = check_traceparent(traceparent)
    except ConfigurationError:
        if stored:  # an unreadable stored context: the slice starts a trace of its own
            return None
        raise
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(remote))
