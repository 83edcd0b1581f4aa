"""LLM steps with a scripted provider (FakeLLM), on both databases, with a fake clock:
repair, fallback, durable retries of faults, confidence routing to review, budgets,
the response cache, replay and the call ledger."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from pydantic import BaseModel

from surestep import App, ConfigurationError, FakeClock, Retry, State
from surestep.llm import AnswerRejectedError, ModelError, complete
from surestep.testing import FakeLLM, drive, run_workflow

GOOD = {"vendor": "ACME", "total": "12.50", "confidence": 0.95}


class Invoice(BaseModel):
    vendor: str
    total: Decimal
    confidence: float


def setup(app: App, fake: FakeLLM, **settings: object) -> None:
    app.llm_provider("fake", provider=fake)
    app.llm_price("fake:big", input_per_mtok=1000, output_per_mtok=2000)
    options: dict[str, object] = {
        "name": "extract_invoice",
        "schema": Invoice,
        "models": ["fake:big", "fake:small"],
        "prompt": lambda doc: f"Extract the invoice: {doc}",
        "confidence": "confidence",
        "min_confidence": 0.8,
        "retry": Retry(max_attempts=3, initial_delay=10, max_delay=60, jitter=False),
        **settings,
    }
    extract = app.llm_step(**options)  # type: ignore[arg-type]

    @app.workflow(name="invoice")
    def invoice(doc: str) -> str:
        found = extract(doc)
        assert isinstance(found, Invoice)
        return f"{found.vendor} {found.total}"


def outcomes(app: App, run_id: str) -> list[tuple[str, str, bool]]:
    return [(c.model, c.outcome, c.chosen) for c in app.llm.ledger.calls(run_id)]


def test_repair_then_fallback_then_answer(app: App) -> None:
    fake = FakeLLM()
    setup(app, fake, max_repairs=1)
    fake.reply('{"vendor": "ACME"}', model="big").reply("sorry, no JSON", model="big")
    fake.reply(GOOD, model="small")
    handle = run_workflow(app, "invoice", "doc-1")
    assert handle.result() == "ACME 12.50"
    assert outcomes(app, handle.id) == [
        ("big", "invalid", False),
        ("big", "invalid", False),
        ("small", "ok", True),
    ]
    # The repair quoted pydantic's errors, field by field, after the rejected reply.
    repair = fake.requests[1].messages
    assert repair[-2] == {"role": "assistant", "content": '{"vendor": "ACME"}'}
    assert "total: Field required" in repair[-1]["content"]
    assert fake.requests[2].messages == fake.requests[0].messages  # next model: fresh
    assert fake.requests[0].schema is not None
    assert fake.requests[0].schema["properties"]["vendor"]["type"] == "string"
    calls = app.llm.ledger.calls(handle.id)
    assert calls[0].cost_usd == pytest.approx((10 * 1000 + 5 * 2000) / 1e6)
    assert calls[0].priced and not calls[2].priced  # no price known for fake:small
    assert [c.seq for c in calls] == [1, 2, 3] and {c.attempt for c in calls} == {1}


def test_transient_fault_retries_durably_after_retry_after(app: App, clock: FakeClock) -> None:
    fake = FakeLLM()
    setup(app, fake)
    fake.fault("rate_limited", retry_after=45).fault("timeout").reply(GOOD)
    handle = run_workflow(app, "invoice", "doc-1")
    assert handle.result() == "ACME 12.50"
    calls = app.llm.ledger.calls(handle.id)
    assert [(c.attempt, c.outcome) for c in calls] == [
        (1, "rate_limited"),
        (2, "timeout"),
        (3, "ok"),
    ]
    # A 429 is not retried sooner than the provider asked, even with a 10 s backoff; the
    # fallback model was not tried for a transient fault.
    assert calls[1].started_at - calls[0].started_at >= 45
    assert calls[2].started_at - calls[1].started_at >= 20  # the policy's own backoff
    assert [r.model for r in fake.requests] == ["big", "big", "big"]


def test_fallback_on_transient_is_opt_in(app: App) -> None:
    fake = FakeLLM()
    setup(app, fake, fallback_on_transient=True)
    fake.fault("server_error", model="big").reply(GOOD, model="small")
    handle = run_workflow(app, "invoice", "doc-1")
    assert handle.result() == "ACME 12.50"
    assert outcomes(app, handle.id) == [("big", "server_error", False), ("small", "ok", True)]


def test_every_model_refusing_escalates_at_once(app: App) -> None:
    fake = FakeLLM()
    setup(app, fake)
    fake.fault("rejected", model="big").fault("rejected", model="small")
    handle = app.start("invoice", "doc-1")
    drive(app, until=lambda: handle.state == State.DEAD_LETTER)
    run = app.get_run(handle.id)
    [step] = run.steps
    assert step.attempts == 1  # retrying a refused request cannot help
    assert "every model failed" in str(run.error)
    assert "fake:big: rejected" in str(run.error)


def test_classify_overrides_the_default(app: App) -> None:
    fake = FakeLLM()

    def classify(error: ModelError) -> str | None:
        return "rejected" if error.fault == "timeout" else None

    setup(app, fake, classify=classify)
    fake.fault("timeout", model="big").reply(GOOD, model="small")
    handle = run_workflow(app, "invoice", "doc-1")
    assert handle.result() == "ACME 12.50"
    assert outcomes(app, handle.id) == [("big", "timeout", False), ("small", "ok", True)]


def low_confidence_run(app: App, fake: FakeLLM, **settings: object) -> tuple[str, int]:
    setup(app, fake, review={"groups": ["finance"], "sla": timedelta(hours=2)}, **settings)
    fake.reply({**GOOD, "confidence": 0.4}, model="big")
    handle = app.start("invoice", "doc-1")
    drive(app, until=lambda: handle.state == State.NEEDS_REVIEW)
    [task] = app.reviews.list(group="finance")
    return handle.id, task.id


def test_low_confidence_goes_to_review_and_approve_uses_the_proposal(app: App) -> None:
    fake = FakeLLM()
    run_id, task_id = low_confidence_run(app, fake)
    task = app.reviews.get(task_id)
    assert task.kind == "extract_invoice"
    assert task.proposal == {"vendor": "ACME", "total": "12.50", "confidence": 0.4}
    assert task.confidence == pytest.approx(0.4)
    assert task.payload == {"doc": "doc-1"}
    assert task.context is not None
    assert task.context["model"] == "fake:big" and task.context["reason"] == "low_confidence"
    assert len(task.context["prompt_version"]) == 16
    app.reviews.decide(task_id, "approve", by="alice")
    drive(app, until=lambda: app.handle(run_id).state == State.SUCCESS)
    assert app.handle(run_id).result() == "ACME 12.50"
    assert outcomes(app, run_id) == [("big", "review", True)]
    assert len(fake.requests) == 1  # resuming replayed the answer


def test_low_confidence_edit_becomes_the_output(app: App) -> None:
    fake = FakeLLM()
    run_id, task_id = low_confidence_run(app, fake)
    edited = {"vendor": "ACME GmbH", "total": "99.00", "confidence": 1.0}
    app.reviews.decide(task_id, "edit", by="alice", data=edited)
    drive(app, until=lambda: app.handle(run_id).state == State.SUCCESS)
    assert app.handle(run_id).result() == "ACME GmbH 99.00"


def test_low_confidence_reject_fails_the_step(app: App) -> None:
    fake = FakeLLM()
    run_id, task_id = low_confidence_run(app, fake)
    app.reviews.decide(task_id, "reject", by="alice", comment="wrong vendor")
    drive(app, until=lambda: app.handle(run_id).state == State.FAILED)
    error = str(app.get_run(run_id).error)
    assert AnswerRejectedError.__name__ in error and "wrong vendor" in error


def test_low_confidence_fallback_tries_the_next_model(app: App) -> None:
    fake = FakeLLM()
    setup(app, fake, on_low_confidence="fallback")
    fake.reply({**GOOD, "confidence": 0.5}, model="big").reply(GOOD, model="small")
    handle = run_workflow(app, "invoice", "doc-1")
    assert handle.result() == "ACME 12.50"
    assert outcomes(app, handle.id) == [("big", "low_confidence", False), ("small", "ok", True)]


def test_every_model_unsure_goes_to_review_with_the_surest_answer(app: App) -> None:
    fake = FakeLLM()
    setup(app, fake, on_low_confidence="fallback")
    fake.reply({**GOOD, "confidence": 0.7}, model="big")
    fake.reply({**GOOD, "confidence": 0.3}, model="small")
    handle = app.start("invoice", "doc-1")
    drive(app, until=lambda: handle.state == State.NEEDS_REVIEW)
    [task] = app.reviews.list()
    assert task.confidence == pytest.approx(0.7)


def test_exhausted_chain_goes_to_review_and_the_edit_is_the_output(app: App) -> None:
    fake = FakeLLM()
    setup(app, fake, on_exhausted="review", retry=Retry(max_attempts=1))
    fake.fault("rejected", model="big").reply("{", model="small").reply("{", model="small")
    fake.reply("{", model="small")
    handle = app.start("invoice", "doc-1")
    drive(app, until=lambda: handle.state == State.NEEDS_REVIEW)
    [task] = app.reviews.list()
    assert task.kind == "extract_invoice" and task.proposal is None
    assert "No model gave step" in (task.instructions or "")
    with pytest.raises(Exception, match="vendor"):
        app.reviews.decide(task.id, "edit", by="alice", data={"total": "1"})
    app.reviews.decide(task.id, "edit", by="alice", data={**GOOD, "vendor": "Hand"})
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == "Hand 12.50"


def test_budget_stops_the_call_and_raising_it_lets_the_run_go_on(app: App) -> None:
    fake = FakeLLM()
    setup(app, fake)
    handle = app.start("invoice", "doc-1", budget_usd=0.00001)
    drive(app, until=lambda: handle.state == State.DEAD_LETTER)
    run = app.get_run(handle.id)
    assert "BudgetExceededError" in str(run.error) and "surestep budget" in str(run.error)
    assert fake.requests == []  # the call was not made
    assert app.llm.ledger.budget(handle.id) == (0.00001, 0.0)
    app.llm.ledger.set_budget(handle.id, 5.0)
    fake.reply(GOOD, model="big")
    app.retry(handle.id)
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert app.llm.ledger.budget(handle.id)[1] > 0


def test_workflow_budget_is_the_default(db_url: str, clock: FakeClock) -> None:
    app = App(db_url, clock=clock)
    try:

        @app.workflow(name="capped", budget_usd=0.25)
        def capped() -> None: ...

        first = app.start("capped")
        second = app.start("capped", run_id="other", budget_usd=2)
        assert app.llm.ledger.budget(first.id) == (0.25, 0.0)
        assert app.llm.ledger.budget(second.id) == (2.0, 0.0)
        with pytest.raises(ConfigurationError, match="budget_usd"):
            app.start("capped", budget_usd=-1)
    finally:
        app.close()


def test_replay_never_calls_the_model_again(app: App) -> None:
    fake = FakeLLM()
    app.llm_provider("fake", provider=fake)
    extract = app.llm_step(name="summary", models=["fake:m"], prompt=lambda doc: doc)
    flaky = {"left": 1}

    @app.step(retry=Retry(max_attempts=3, initial_delay=1, jitter=False))
    def publish(text: str) -> str:
        if flaky["left"]:
            flaky["left"] -= 1
            raise ConnectionError("down")
        return text.upper()

    @app.workflow(name="summarize")
    def summarize(doc: str) -> str:
        return publish(extract(doc))

    fake.reply("a summary")
    handle = run_workflow(app, "summarize", "text")
    assert handle.result() == "A SUMMARY"
    assert len(fake.requests) == 1  # the run executed twice; the model was asked once


def test_the_cache_answers_the_same_request(app: App) -> None:
    fake = FakeLLM()
    setup(app, fake, cache_ttl=timedelta(hours=1))
    fake.reply(GOOD, model="big")
    first = run_workflow(app, "invoice", "doc-1")
    second = run_workflow(app, "invoice", "doc-1")
    assert first.result() == second.result() == "ACME 12.50"
    assert len(fake.requests) == 1
    [cached] = app.llm.ledger.calls(second.id)
    assert cached.cached and cached.cost_usd == 0 and cached.chosen


def test_complete_inside_a_step_is_recorded(app: App) -> None:
    fake = FakeLLM()
    app.llm_provider("fake", provider=fake)

    @app.step(name="tool_loop")
    def tool_loop(question: str) -> str:
        first = complete("fake:m", question, app=app)
        return str(complete("fake:m", [{"role": "user", "content": first}], app=app))

    @app.workflow(name="ask")
    def ask(question: str) -> str:
        return tool_loop(question)

    fake.reply("step one").reply("step two")
    handle = run_workflow(app, "ask", "why?")
    assert handle.result() == "step two"
    calls = app.llm.ledger.calls(handle.id)
    assert [(c.step, c.outcome) for c in calls] == [("tool_loop", "ok"), ("tool_loop", "ok")]


def test_async_workflows_await_llm_steps(app: App) -> None:
    fake = FakeLLM(respond=lambda request: GOOD)
    setup(app, fake)
    extract = app.llm_step(
        name="extract_async", schema=Invoice, models=["fake:small"], prompt=lambda d: d
    )

    @app.workflow(name="both")
    async def both(a: str, b: str) -> list[str]:
        found = await asyncio.gather(extract(a), extract(b))
        return [f.vendor for f in found]

    handle = run_workflow(app, "both", "x", "y")
    assert handle.result() == ["ACME", "ACME"]
    assert len(app.llm.ledger.calls(handle.id)) == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"models": "fake:big"}, "non-empty list"),
        ({"models": ["nowhere:x"]}, "no provider named 'nowhere'"),
        ({"models": ["big"]}, "'<provider>:<model>'"),
        ({"confidence": None}, "min_confidence needs confidence="),
        ({"on_low_confidence": "maybe"}, "on_low_confidence='maybe'"),
        ({"review": {"group": ["x"]}}, "unknown"),
        ({"on_exhausted": "panic"}, "on_exhausted='panic'"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"schema": object()}, "has no JSON Schema"),
    ],
)
def test_bad_settings_fail_at_declaration(
    tmp_path: object, settings: dict[str, object], message: str
) -> None:
    app = App(f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(ConfigurationError, match=message):
        setup(app, FakeLLM(), **settings)


def test_a_shared_rate_limit_defers_the_call_durably(app: App, clock: FakeClock) -> None:
    fake = FakeLLM(respond=lambda request: GOOD)
    setup(app, fake)
    app.rate_limit("fake:big", rpm=2)
    handles = [app.start("invoice", f"doc-{n}") for n in range(3)]
    drive(app, until=lambda: all(h.state == State.SUCCESS for h in handles))
    assert len(fake.requests) == 3  # the refused place was no call
    starts = sorted(c.started_at for h in handles for c in app.llm.ledger.calls(h.id))
    assert starts[2] - starts[0] >= 60  # the third waited for the window to move on
    attempts = sorted(app.get_run(h.id).steps[0].attempts for h in handles)
    assert attempts == [1, 1, 2]


def test_rate_limit_settings_are_checked(app: App) -> None:
    setup(app, FakeLLM())
    with pytest.raises(ConfigurationError, match="give rpm= and/or tpm="):
        app.rate_limit("fake:big")
    with pytest.raises(ConfigurationError, match="rpm must be an int >= 1"):
        app.rate_limit("fake:big", rpm=0)
    with pytest.raises(ConfigurationError, match="no provider named 'elsewhere'"):
        app.rate_limit("elsewhere:x", rpm=5)


def test_model_calls_feed_the_worker_metrics(app: App) -> None:
    from surestep.observe.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    app.hooks.subscribe(metrics)
    fake = FakeLLM()
    setup(app, fake, cache_ttl=timedelta(hours=1))
    fake.reply("{", model="big").reply(GOOD, model="big")
    run_workflow(app, "invoice", "doc-1")
    run_workflow(app, "invoice", "doc-1")  # answered from the cache
    value = metrics.registry.get_sample_value
    labels = {"model": "fake:big", "workflow": "invoice"}
    assert value("surestep_llm_calls_total", {**labels, "outcome": "invalid"}) == 1
    assert value("surestep_llm_calls_total", {**labels, "outcome": "ok"}) == 2
    assert value("surestep_llm_cost_usd_total", labels) == pytest.approx(0.04)
    tokens = {"model": "fake:big", "type": "input"}
    assert value("gen_ai_client_token_usage_count", tokens) == 2  # the cached one: none
    assert value("gen_ai_client_token_usage_sum", tokens) == 20
    assert value("gen_ai_client_operation_duration_seconds_count", {"model": "fake:big"}) == 2


def test_gathered_reviews_keep_their_places_whatever_finishes_first(app: App) -> None:
    fake = FakeLLM(respond=lambda request: {**GOOD, "confidence": 0.3})
    setup(app, fake, review={"groups": ["finance"]})
    extract = app.llm_step(
        name="extract_async",
        schema=Invoice,
        models=["fake:small"],
        prompt=lambda d: d,
        confidence="confidence",
        min_confidence=0.8,
    )

    @app.workflow(name="pair")
    async def pair(a: str, b: str) -> list[str]:
        found = await asyncio.gather(extract(a), extract(b))
        return [f.vendor for f in found]

    handle = app.start("pair", "x", "y")
    positions = {}
    # Whichever step's review opens first (the other may wait for the run to resume),
    # each lands at its own step's review place.
    while len(positions) < 2:
        drive(app, until=lambda: bool(app.reviews.list()) or handle.state == State.SUCCESS)
        for task in app.reviews.list():
            doc = task.payload["d"]
            positions[doc] = task.position
            vendor = f"{doc.upper()} Ltd"
            app.reviews.decide(task.id, "edit", by="alice", data={**GOOD, "vendor": vendor})
    assert positions == {"x": 1, "y": 3}
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == ["X Ltd", "Y Ltd"]
