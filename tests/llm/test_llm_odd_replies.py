"""Replies and user functions that are not what they should be: each paid call is still
recorded, and the step goes on the way a fault of that kind should."""

from __future__ import annotations

from typing import Any

import pytest
from fakes.model_servers import ANTHROPIC, OPENAI, FakeModelServer, Reply, openai_completion

from surestep import App, Retry, State
from surestep.llm import ModelServerError
from surestep.llm.providers import AnthropicProvider, OpenAIProvider
from surestep.llm.types import ChatRequest, ChatResponse, Usage
from surestep.testing import FakeLLM, drive, run_workflow


def declare(app: App, **settings: Any) -> None:
    options: dict[str, Any] = {
        "name": "summarize",
        "models": ["fake:a", "fake:b"],
        "prompt": lambda t: t,
        "retry": Retry(max_attempts=3, initial_delay=10, max_delay=60, jitter=False),
        **settings,
    }
    summarize = app.llm_step(**options)

    @app.workflow(name="digest")
    def digest(text: str) -> str:
        return str(summarize(text))


def test_a_confidence_function_that_raises_is_recorded_and_the_next_model_tried(
    app: App,
) -> None:
    fake = FakeLLM()
    app.llm_provider("fake", provider=fake)

    def confidence(output: str, response: ChatResponse) -> float:
        return {"b": 0.9}[response.model]  # KeyError for model "a"

    declare(app, confidence=confidence, min_confidence=0.5)
    fake.reply("from a", model="a").reply("from b", model="b")
    # FakeLLM's scripted replies carry the model they were scripted for: "a" raises.
    handle = run_workflow(app, "digest", "text")
    assert handle.result() == "from b"
    calls = app.llm.ledger.calls(handle.id)
    assert [(c.model, c.outcome) for c in calls] == [("a", "invalid"), ("b", "ok")]
    assert "the confidence function raised KeyError" in str(calls[0].error)


class OddProvider:
    """Replies whose text or usage are the wrong types (a hand-written provider's bug)."""

    kind, pricing_id = "fake", None

    def __init__(self, replies: list[Any]) -> None:
        self.name = "fake"
        self.replies = replies

    def complete(self, request: ChatRequest) -> Any:
        return self.replies.pop(0)


def test_a_reply_with_no_text_is_a_recorded_server_error_and_odd_usage_counts_zero(
    app: App,
) -> None:
    odd = OddProvider(
        [
            ChatResponse(["not", "text"], Usage(3, 4)),  # type: ignore[arg-type]
            ChatResponse("fine", Usage(None, -7), 7, "m", ("x",)),  # type: ignore[arg-type]
        ]
    )
    app.llm_provider("fake", provider=odd)
    app.llm_price("fake:a", input_per_mtok=1000, output_per_mtok=1000)
    declare(app, models=["fake:a"])
    handle = run_workflow(app, "digest", "text")
    assert handle.result() == "fine"
    calls = app.llm.ledger.calls(handle.id)
    assert [(c.attempt, c.outcome) for c in calls] == [(1, "server_error"), (2, "ok")]
    assert "replied with list where text was expected" in str(calls[0].error)
    # Unreadable token counts are not priced (a negative count would lower what was spent).
    assert (calls[1].input_tokens, calls[1].output_tokens, calls[1].cost_usd) == (0, 0, 0.0)
    assert calls[1].finish_reason == "7"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (OPENAI, [1, 2]),
        (OPENAI, {**openai_completion("x"), "usage": {"prompt_tokens": None}}),
        (ANTHROPIC, {"content": "not a list of blocks", "usage": None}),
    ],
)
def test_a_body_of_the_wrong_shape_is_a_server_error(
    path: str, body: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}], timeout=5)
    with FakeModelServer() as server:
        server.script(path, Reply(body=body))
        if path == OPENAI:
            provider: Any = OpenAIProvider("p", base_url=server.openai_base_url, api_key_env=None)
        else:
            provider = AnthropicProvider("p", base_url=server.anthropic_base_url)
        with provider:
            if body == [1, 2] or path == ANTHROPIC:
                with pytest.raises(ModelServerError, match="cannot read"):
                    provider.complete(request)
            else:  # the text is fine; the usage is not a number, which the loop handles
                assert provider.complete(request).text == "x"


def test_a_request_larger_than_the_whole_tpm_is_not_retried(app: App) -> None:
    app.llm_provider("fake", provider=FakeLLM(respond=lambda request: "never asked"))
    app.rate_limit("fake:a", tpm=5)
    declare(app, models=["fake:a"])
    handle = app.start("digest", "text")
    drive(app, until=lambda: handle.state == State.DEAD_LETTER)
    [step] = app.get_run(handle.id).steps
    assert step.attempts == 1  # waiting can never admit it: retrying only delays the news
    assert "can never be admitted" in str(app.get_run(handle.id).error)
