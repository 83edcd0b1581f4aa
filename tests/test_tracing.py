"""OpenTelemetry traces of runs, on both databases: the span tree of a run, one trace
per run across interrupted slices, a caller's traceparent joined, and nothing recorded
with tracing off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import surestep
from surestep import App, ConfigurationError, Retry, State
from surestep.clock import FakeClock
from surestep.testing import drive, run_workflow

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class WorkerCrash(BaseException):
    """Stands in for a crash of the worker mid-step (the engine does not catch it)."""


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()  # not the global one: tests stay independent
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def three_steps(app: App, crash: set[str] | None = None, flaky: set[str] | None = None) -> object:
    crash = crash if crash is not None else set()
    flaky = flaky if flaky is not None else set()

    def act(name: str) -> str:
        if name in crash:
            crash.discard(name)
            raise WorkerCrash(name)
        if name in flaky:
            flaky.discard(name)
            raise ConnectionError(f"{name}: service down")
        return name

    retry = Retry(max_attempts=3, initial_delay=60, jitter=False)

    @app.step(name="fetch", retry=retry)
    def fetch() -> str:
        return act("fetch")

    @app.step(name="parse", retry=retry)
    def parse(text: str) -> str:
        return act("parse") + text

    @app.step(name="store", retry=retry)
    def store(text: str) -> str:
        return act("store") + text

    @app.workflow(name="ingest")
    def ingest() -> str:
        return store(parse(fetch()))

    return ingest


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_time or 0)


def test_a_run_is_a_tree_of_a_slice_and_its_step_attempts(
    app: App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app.trace(provider)
    handle = run_workflow(app, three_steps(app), run_id="r-1")
    assert handle.state == State.SUCCESS

    spans = exporter.get_finished_spans()
    (start,) = by_name(spans, "surestep.start ")
    (run,) = by_name(spans, "surestep.run ")
    steps = by_name(spans, "surestep.step ")
    assert start.name == "surestep.start ingest" and run.name == "surestep.run ingest"
    assert [s.name for s in steps] == [
        "surestep.step fetch",
        "surestep.step parse",
        "surestep.step store",
    ]
    assert run.context is not None and start.context is not None
    assert run.parent is not None and run.parent.span_id == start.context.span_id
    for position, step in enumerate(steps):
        assert step.parent is not None and step.parent.span_id == run.context.span_id
        assert step.context is not None and step.context.trace_id == start.context.trace_id
        assert step.attributes is not None
        assert step.attributes["surestep.run.id"] == "r-1"
        assert step.attributes["surestep.step.position"] == position
        assert step.attributes["surestep.step.attempt"] == 1
        assert step.attributes["surestep.step.outcome"] == "success"
    assert run.attributes is not None and run.attributes["surestep.run.state"] == "success"
    # The stored context is the start span's: the run's later slices continue it.
    with app.store.reading() as cur:
        cur.execute("SELECT trace_context FROM surestep_runs WHERE id = ?", ("r-1",))
        (stored,) = cur.fetchone()
    ids = f"{start.context.trace_id:032x}-{start.context.span_id:016x}"
    assert stored == f"00-{ids}-{start.context.trace_flags:02x}"


def test_a_retried_run_resumed_in_a_second_drive_is_one_trace(
    app: App, clock: FakeClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app.trace(provider)
    handle = app.start(three_steps(app, flaky={"parse"}), run_id="r-2")
    drive(app, until=lambda: handle.state == State.WAITING)
    clock.advance(61)
    drive(app, until=lambda: handle.state == State.SUCCESS)

    spans = exporter.get_finished_spans()
    (start,) = by_name(spans, "surestep.start ")
    runs = by_name(spans, "surestep.run ")
    assert len(runs) == 2
    assert start.context is not None
    assert {s.context.trace_id for s in spans if s.context} == {start.context.trace_id}
    for run in runs:  # each slice continues the run's trace from its start
        assert run.parent is not None and run.parent.span_id == start.context.span_id
    first, second = runs
    assert first.attributes is not None and first.attributes["surestep.run.state"] == "waiting"
    assert second.attributes is not None and second.attributes["surestep.run.state"] == "success"
    assert [e.name for e in first.events].count("surestep.retry") == 1
    attempts = [
        (s.attributes["surestep.step.attempt"], s.attributes["surestep.step.outcome"])
        for s in by_name(spans, "surestep.step parse")
        if s.attributes is not None
    ]
    assert attempts == [(1, "waiting"), (2, "success")]
    failed = by_name(spans, "surestep.step parse")[0]
    assert failed.status.status_code == StatusCode.ERROR


def test_a_run_whose_worker_crashed_mid_step_is_one_trace(
    app: App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app.trace(provider)
    handle = run_workflow(app, three_steps(app, crash={"store"}), run_id="r-3")
    assert handle.state == State.SUCCESS

    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    assert len(by_name(spans, "surestep.run ")) == 2
    outcomes = [
        s.attributes["surestep.step.outcome"]
        for s in by_name(spans, "surestep.step store")
        if s.attributes is not None
    ]
    assert outcomes == ["interrupted", "success"]  # no span is left open by the crash


def test_a_callers_traceparent_is_joined_even_when_started_untraced(
    db_url: str, clock: FakeClock, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    client = App(db_url, clock=clock)  # a web app that starts runs, tracing off
    worker = App(db_url, clock=clock, tracing=provider)
    try:
        three_steps(client)
        three_steps(worker)
        handle = client.start("ingest", run_id="r-4", traceparent=CALLER + " ")
        drive(worker, until=lambda: handle.state == State.SUCCESS)
    finally:
        client.close()
        worker.close()

    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "surestep.run ")
    assert run.context is not None and run.parent is not None
    assert f"{run.context.trace_id:032x}" == CALLER.split("-")[1]
    assert f"{run.parent.span_id:016x}" == CALLER.split("-")[2]
    assert len(by_name(spans, "surestep.step ")) == 3


def test_a_traced_start_joins_the_callers_trace(
    app: App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app.trace(provider)
    run_workflow(app, three_steps(app), run_id="r-5", traceparent=CALLER)
    spans = exporter.get_finished_spans()
    (start,) = by_name(spans, "surestep.start ")
    assert start.parent is not None and f"{start.parent.span_id:016x}" == CALLER.split("-")[2]
    assert {f"{s.context.trace_id:032x}" for s in spans if s.context} == {CALLER.split("-")[1]}


def test_a_child_run_continues_its_parents_trace(
    app: App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app.trace(provider)

    @app.workflow(name="kid")
    def kid(x: int) -> int:
        return x * 2

    @app.workflow(name="parent")
    def parent() -> int:
        return surestep.run_child(kid, 21)

    assert run_workflow(app, parent, run_id="r-8").result() == 42
    spans = exporter.get_finished_spans()
    (start,) = by_name(spans, "surestep.start ")
    assert start.context is not None
    (child,) = by_name(spans, "surestep.run kid")
    assert child.parent is not None and child.parent.span_id == start.context.span_id
    assert {s.context.trace_id for s in spans if s.context} == {start.context.trace_id}


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ],
)
def test_a_malformed_traceparent_is_refused_before_anything_is_stored(app: App, bad: str) -> None:
    three_steps(app)
    with pytest.raises(ConfigurationError, match="not a W3C traceparent"):
        app.start("ingest", run_id="r-6", traceparent=bad)
    assert app.list_runs() == []


def test_with_tracing_off_nothing_is_recorded(
    app: App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handle = run_workflow(app, three_steps(app, flaky={"fetch"}), run_id="r-7")
    assert handle.state in (State.WAITING, State.SUCCESS)
    assert exporter.get_finished_spans() == ()
    assert app.tracing is None
    assert not app.hooks.before_step and not app.hooks.on_run_start


def test_an_app_is_traced_once(app: App, provider: TracerProvider) -> None:
    app.trace(provider)
    with pytest.raises(ConfigurationError, match="traced already"):
        app.trace(provider)


def test_model_calls_are_genai_spans_inside_their_step_attempt(
    app: App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from surestep.testing import FakeLLM

    app.trace(provider)
    fake = FakeLLM()
    app.llm_provider("fake", provider=fake)
    app.llm_price("fake:m", input_per_mtok=1, output_per_mtok=2)
    answer = app.llm_step(name="answer", models=["fake:m"], prompt=lambda q: q)

    @app.workflow(name="ask")
    def ask(question: str) -> str:
        return str(answer(question))

    fake.fault("server_error").reply("42", usage=(7, 3))
    assert run_workflow(app, ask, "why?").result() == "42"
    spans = exporter.get_finished_spans()
    steps = by_name(spans, "surestep.step answer")
    chats = by_name(spans, "chat m")
    assert len(steps) == 2 and len(chats) == 2  # one per attempt: the fault, the answer
    for step, chat in zip(steps, chats, strict=True):
        assert chat.parent is not None and step.context is not None
        assert chat.parent.span_id == step.context.span_id
    failed, ok = chats
    assert failed.status.status_code.name == "ERROR"
    assert ok.attributes is not None
    assert ok.attributes["gen_ai.request.model"] == "m"
    assert ok.attributes["gen_ai.provider.name"] == "fake"
    assert ok.attributes["gen_ai.usage.input_tokens"] == 7
    assert ok.attributes["gen_ai.usage.output_tokens"] == 3
    assert ok.attributes["surestep.llm.outcome"] == "ok"


def test_an_unsampled_run_makes_no_step_spans(app: App, exporter: InMemorySpanExporter) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = app.trace(provider)
    seen: list[object] = []

    @app.step(name="look")
    def look() -> str:
        seen.append(tracing.step_span(surestep.current_step()))
        return "ok"

    @app.workflow(name="quiet")
    def quiet() -> str:
        return look()

    assert run_workflow(app, quiet).result() == "ok"
    assert seen == [None]  # the slice was dropped: its attempt has no span to parent
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


def test_a_step_span_asked_for_inside_the_step_is_the_attempts_span(
    app: App, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = app.trace(provider)

    @app.step(name="call_out")
    def call_out() -> int:
        parent = tracing.step_span(surestep.current_step())
        assert parent is not None and parent is tracing.step_span(surestep.current_step())
        context = trace.set_span_in_context(parent)
        tracing.tracer.start_span("http GET", context=context).end()
        return 1

    @app.workflow(name="outbound")
    def outbound() -> int:
        return call_out()

    assert run_workflow(app, outbound, run_id="r-9").result() == 1
    spans = exporter.get_finished_spans()
    (step,) = by_name(spans, "surestep.step call_out")
    (http,) = by_name(spans, "http GET")
    assert step.context is not None and http.parent is not None
    assert http.parent.span_id == step.context.span_id
    assert step.attributes is not None and step.attributes["surestep.step.outcome"] == "success"
    assert step.attributes["surestep.run.id"] == "r-9"
    assert step.start_time is not None and http.start_time is not None
    assert step.start_time <= http.start_time
