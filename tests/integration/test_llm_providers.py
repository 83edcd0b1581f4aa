"""The provider adapters through the real openai and anthropic SDKs, over real HTTP, to a
scripted model server on 127.0.0.1: replies, the request bodies the SDKs send, every
fault mapped, one HTTP request per call, and the API key only where it belongs."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from fakes.model_servers import (  # tests/fakes/model_servers.py
    ANTHROPIC,
    OPENAI,
    FakeModelServer,
    Reply,
    anthropic_error,
    anthropic_message,
    openai_completion,
    openai_error,
)

from surestep.errors import ConfigurationError, MissingDependencyError
from surestep.llm.faults import (
    ModelConnectionError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelServerError,
    ModelTimeoutError,
)
from surestep.llm.providers import AnthropicProvider, OpenAIProvider
from surestep.llm.providers.anthropic_sdk import SCHEMA_INSTRUCTIONS
from surestep.llm.types import ChatRequest, ChatResponse

OPENAI_CANARY = "sk-proj-CANARY0openai0key0never0shown0e41f"
ANTHROPIC_CANARY = "sk-ant-api03-CANARY0anthropic0key0never0shown0a77c"
CANARIES = (OPENAI_CANARY, ANTHROPIC_CANARY)

SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
    "required": ["vendor", "total"],
}
HELLO = [{"role": "user", "content": "Say hello."}]

Provider = OpenAIProvider | AnthropicProvider


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_CANARY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_CANARY)


@pytest.fixture
def openai_provider(server: FakeModelServer, keys: None) -> Iterator[OpenAIProvider]:
    with OpenAIProvider("openai", base_url=server.openai_base_url) as provider:
        yield provider


@pytest.fixture
def anthropic_provider(server: FakeModelServer, keys: None) -> Iterator[AnthropicProvider]:
    with AnthropicProvider("anthropic", base_url=server.anthropic_base_url) as provider:
        yield provider


@pytest.fixture(params=["openai", "anthropic"])
def each_provider(request: pytest.FixtureRequest, server: FakeModelServer, keys: None) -> Any:
    """(provider, path it posts to, error body maker), once per adapter."""
    if request.param == "openai":
        with OpenAIProvider("openai", base_url=server.openai_base_url) as provider:
            yield provider, OPENAI, openai_error
    else:
        with AnthropicProvider("anthropic", base_url=server.anthropic_base_url) as provider:
            yield provider, ANTHROPIC, lambda message, code=None: anthropic_error(message)


def _no_canary(*texts: str) -> None:
    for text in texts:
        for canary in CANARIES:
            assert canary not in text
        assert "CANARY" not in text  # not even a fragment of one


def _fault_text(exc: BaseException) -> list[str]:
    """Everything a log, a traceback or an operator could be shown of a fault."""
    return [
        str(exc),
        repr(exc),
        repr(exc.args),
        repr(vars(exc)),
        "".join(traceback.format_exception(exc)),
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- replies ---------------------------------------------------------------------------


def test_openai_reply_with_usage_finish_reason_and_logprobs(
    server: FakeModelServer, openai_provider: OpenAIProvider
) -> None:
    server.script(
        OPENAI,
        Reply(
            body=openai_completion(
                "Hello!",
                prompt_tokens=21,
                completion_tokens=3,
                finish_reason="length",
                logprobs=[-0.01, -0.5, -2.25],
            )
        ),
    )
    response = openai_provider.complete(
        ChatRequest(
            model="gpt-4o-mini",
            messages=HELLO,
            temperature=0.2,
            max_tokens=50,
            logprobs=True,
            params={"seed": 7, "top_k": 3},
        )
    )
    assert response == ChatResponse(
        text="Hello!",
        usage=response.usage,
        finish_reason="length",
        model="gpt-4o-mini",
        logprobs=(-0.01, -0.5, -2.25),
    )
    assert (response.usage.input_tokens, response.usage.output_tokens) == (21, 3)
    [sent] = server.requests
    assert sent.body == {
        "model": "gpt-4o-mini",
        "messages": HELLO,
        "temperature": 0.2,
        "max_completion_tokens": 50,
        "logprobs": True,
        "seed": 7,
        "top_k": 3,
    }
    assert sent.headers["authorization"] == f"Bearer {OPENAI_CANARY}"
    _no_canary(repr(response), str(response), repr(openai_provider))


def test_logprobs_are_none_unless_asked(
    server: FakeModelServer, openai_provider: OpenAIProvider
) -> None:
    server.script(OPENAI, Reply(body=openai_completion("Hi", logprobs=[-0.3])))
    response = openai_provider.complete(ChatRequest(model="gpt-4o-mini", messages=HELLO))
    assert response.logprobs is None
    assert "logprobs" not in server.requests[0].body


def test_openai_structured_output_sends_the_schema(
    server: FakeModelServer, openai_provider: OpenAIProvider
) -> None:
    server.script(OPENAI, Reply(body=openai_completion('{"vendor": "ACME", "total": 3}')))
    response = openai_provider.complete(
        ChatRequest(model="gpt-4o-mini", messages=HELLO, schema=SCHEMA, schema_name="Invoice")
    )
    assert response.text == '{"vendor": "ACME", "total": 3}'
    assert server.requests[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Invoice", "schema": SCHEMA},
    }


def test_openai_compatible_server_without_a_key(
    server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script(OPENAI, Reply(body=openai_completion("ok", model="llama3.1")))
    with OpenAIProvider(
        "local",
        kind="openai-compatible",
        base_url=server.openai_base_url,
        api_key_env=None,
        headers={"X-Team": "finance"},
    ) as local:
        assert local.pricing_id is None  # a local model is not priced as OpenAI's
        response = local.complete(ChatRequest(model="llama3.1", messages=HELLO, max_tokens=9))
    assert (response.text, response.model) == ("ok", "llama3.1")
    [sent] = server.requests
    assert sent.headers["authorization"] == "Bearer surestep-no-key"
    assert sent.headers["x-team"] == "finance"
    assert sent.body["max_tokens"] == 9  # what compatible servers know


def test_anthropic_reply_system_prompt_schema_and_defaults(
    server: FakeModelServer, anthropic_provider: AnthropicProvider
) -> None:
    server.script(
        ANTHROPIC,
        Reply(body=anthropic_message('{"vendor": "ACME"}', input_tokens=40, output_tokens=8)),
    )
    messages = [
        {"role": "system", "content": "You extract invoices."},
        {"role": "user", "content": "ACME, 3 USD"},
    ]
    response = anthropic_provider.complete(
        ChatRequest(
            model="claude-3-5-haiku-latest",
            messages=messages,
            schema=SCHEMA,
            temperature=0.0,
            params={"top_k": 5},
        )
    )
    assert (response.text, response.finish_reason) == ('{"vendor": "ACME"}', "end_turn")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (40, 8)
    assert response.logprobs is None
    [sent] = server.requests
    assert sent.path == ANTHROPIC
    assert sent.body["messages"] == [{"role": "user", "content": "ACME, 3 USD"}]
    assert sent.body["max_tokens"] == 1024
    assert sent.body["temperature"] == 0.0
    assert sent.body["top_k"] == 5
    system = sent.body["system"]
    assert system.startswith("You extract invoices.\n\n" + SCHEMA_INSTRUCTIONS)
    assert '"required": ["vendor", "total"]' in system
    key_headers = (sent.headers.get("x-api-key", ""), sent.headers.get("authorization", ""))
    assert ANTHROPIC_CANARY in " ".join(key_headers)
    _no_canary(repr(response), str(response), repr(anthropic_provider))


def test_anthropic_stop_reason_and_max_tokens(
    server: FakeModelServer, anthropic_provider: AnthropicProvider
) -> None:
    server.script(ANTHROPIC, Reply(body=anthropic_message("Hel", stop_reason="max_tokens")))
    response = anthropic_provider.complete(
        ChatRequest(model="claude-3-5-haiku-latest", messages=HELLO, max_tokens=3)
    )
    assert response.finish_reason == "max_tokens"
    assert server.requests[0].body["max_tokens"] == 3
    assert "system" not in server.requests[0].body


def test_one_client_serves_many_threads(
    server: FakeModelServer, openai_provider: OpenAIProvider
) -> None:
    server.script(OPENAI, *[Reply(body=openai_completion(f"r{i}")) for i in range(8)])
    texts: list[str] = []

    def call() -> None:
        texts.append(openai_provider.complete(ChatRequest(model="m", messages=HELLO)).text)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(texts) == [f"r{i}" for i in range(8)]
    assert len(server.requests) == 8


# --- faults ----------------------------------------------------------------------------

STATUS_FAULTS = [
    # status, headers, message, fault, retry_after
    (500, {}, "internal error", ModelServerError, None),
    (503, {}, "service unavailable", ModelServerError, None),
    (429, {"Retry-After": "7"}, "rate limit reached", ModelRateLimitedError, 7.0),
    (429, {"retry-after-ms": "1500"}, "rate limit reached", ModelRateLimitedError, 1.5),
    (400, {}, "messages: field required", ModelRequestError, None),
    (
        401,
        {},
        f"Incorrect API key provided: {OPENAI_CANARY[:8]}***{OPENAI_CANARY[-4:]}",
        ModelRequestError,
        None,
    ),
    (404, {}, "The model `gpt-9` does not exist", ModelRequestError, None),
]


@pytest.mark.parametrize(("status", "headers", "said", "fault", "retry_after"), STATUS_FAULTS)
def test_status_faults(
    server: FakeModelServer,
    each_provider: Any,
    status: int,
    headers: dict[str, str],
    said: str,
    fault: type[ModelError],
    retry_after: float | None,
) -> None:
    provider, path, error_body = each_provider
    server.script(path, Reply(status=status, headers=headers, body=error_body(said)))
    with pytest.raises(fault) as caught:
        provider.complete(ChatRequest(model="gpt-9", messages=HELLO))
    exc = caught.value
    assert type(exc) is fault
    assert (exc.status, exc.retry_after, exc.model) == (status, retry_after, "gpt-9")
    assert f"HTTP {status}" in str(exc)
    assert len(server.requests) == 1  # the SDK's own retries are off, even for 429/5xx
    assert exc.__cause__ is None and exc.__context__ is None
    _no_canary(*_fault_text(exc))


def test_a_provider_quoting_the_whole_key_is_redacted(
    server: FakeModelServer, each_provider: Any
) -> None:
    provider, path, error_body = each_provider
    body = error_body(f"Incorrect API key provided: {OPENAI_CANARY} {ANTHROPIC_CANARY}")
    server.script(path, Reply(status=401, body=body))
    with pytest.raises(ModelRequestError) as caught:
        provider.complete(ChatRequest(model="m", messages=HELLO))
    assert "Incorrect API key provided: [redacted]" in str(caught.value)
    _no_canary(*_fault_text(caught.value))


def test_a_key_of_any_shape_is_redacted(
    server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_key = "gw0CANARY0plain0token0c91"  # not shaped like sk-...: only the value tells
    monkeypatch.setenv("SURESTEP_TEST_GATEWAY_KEY", gateway_key)
    server.script(OPENAI, Reply(status=403, body=openai_error(f"token {gateway_key} revoked")))
    with (
        OpenAIProvider(
            "gateway",
            kind="openai-compatible",
            base_url=server.openai_base_url,
            api_key_env="SURESTEP_TEST_GATEWAY_KEY",
        ) as gateway,
        pytest.raises(ModelRequestError) as caught,
    ):
        gateway.complete(ChatRequest(model="m", messages=HELLO))
    assert server.requests[0].headers["authorization"] == f"Bearer {gateway_key}"
    assert "token [redacted] revoked" in str(caught.value)
    _no_canary(*_fault_text(caught.value))


def test_context_too_long_is_a_rejected_request(
    server: FakeModelServer, each_provider: Any
) -> None:
    provider, path, error_body = each_provider
    said = (
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130001 tokens."
        if path == OPENAI
        else "prompt is too long: 210000 tokens > 200000 maximum"
    )
    server.script(path, Reply(status=400, body=error_body(said, code="context_length_exceeded")))
    with pytest.raises(ModelRequestError) as caught:
        provider.complete(ChatRequest(model="m", messages=HELLO))
    assert caught.value.fault == "rejected"
    assert "context window" in str(caught.value)
    assert len(server.requests) == 1


def test_anthropic_overloaded_529_is_a_server_error(
    server: FakeModelServer, anthropic_provider: AnthropicProvider
) -> None:
    server.script(
        ANTHROPIC, Reply(status=529, body=anthropic_error("Overloaded", kind="overloaded_error"))
    )
    with pytest.raises(ModelServerError) as caught:
        anthropic_provider.complete(ChatRequest(model="claude-3-5-haiku-latest", messages=HELLO))
    assert (caught.value.status, caught.value.fault) == (529, "server_error")
    assert "overloaded" in str(caught.value)
    assert len(server.requests) == 1


def test_timeout(server: FakeModelServer, each_provider: Any) -> None:
    provider, path, _ = each_provider
    reply_body = openai_completion("late") if path == OPENAI else anthropic_message("late")
    server.script(path, Reply(body=reply_body, delay=60))
    with pytest.raises(ModelTimeoutError) as caught:
        provider.complete(ChatRequest(model="m", messages=HELLO, timeout=0.5))
    assert caught.value.fault == "timeout"
    assert "did not answer within 0.5s" in str(caught.value)
    assert len(server.requests) == 1
    _no_canary(*_fault_text(caught.value))


def test_connection_refused(keys: None) -> None:
    port = _free_port()  # nobody listens there now
    providers: list[Provider] = [
        OpenAIProvider("openai", base_url=f"http://127.0.0.1:{port}/v1"),
        AnthropicProvider("anthropic", base_url=f"http://127.0.0.1:{port}"),
    ]
    for provider in providers:
        with provider, pytest.raises(ModelConnectionError) as caught:
            provider.complete(ChatRequest(model="m", messages=HELLO, timeout=5))
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert caught.value.fault == "connection"
        _no_canary(*_fault_text(caught.value))


def test_the_sdks_log_no_key(
    server: FakeModelServer, each_provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    provider, path, error_body = each_provider
    ok = openai_completion("ok") if path == OPENAI else anthropic_message("ok")
    server.script(path, Reply(body=ok), Reply(status=500, body=error_body("boom")))
    with caplog.at_level(logging.DEBUG):
        provider.complete(ChatRequest(model="m", messages=HELLO))
        with pytest.raises(ModelServerError):
            provider.complete(ChatRequest(model="m", messages=HELLO))
    assert caplog.records  # the SDKs did log, at DEBUG
    _no_canary(caplog.text, *(repr(record.__dict__) for record in caplog.records))


# --- configuration ---------------------------------------------------------------------


def test_missing_key_names_the_variable(
    server: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("SURESTEP_TEST_NO_SUCH_KEY", raising=False)
    # Declaring needs no key (a CLI that only reads runs has none); the first call does.
    providers: list[Provider] = [
        OpenAIProvider("openai", base_url=server.openai_base_url),
        AnthropicProvider(
            "anthropic", base_url=server.anthropic_base_url, api_key_env="SURESTEP_TEST_NO_SUCH_KEY"
        ),
    ]
    for provider, variable in zip(
        providers, ["OPENAI_API_KEY", "SURESTEP_TEST_NO_SUCH_KEY"], strict=True
    ):
        with provider, pytest.raises(ConfigurationError) as caught:
            provider.complete(ChatRequest(model="m", messages=HELLO))
        assert variable in str(caught.value)
        assert "api_key_env=None" in str(caught.value)
    assert server.requests == []


@pytest.mark.parametrize(
    ("module", "make", "line"),
    [
        ("openai", lambda: OpenAIProvider("openai"), "pip install 'surestep[llm]'"),
        ("anthropic", lambda: AnthropicProvider("anthropic"), "pip install 'surestep[anthropic]'"),
    ],
)
def test_missing_sdk_gives_the_pip_line(
    monkeypatch: pytest.MonkeyPatch, module: str, make: Any, line: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when it is absent
    with pytest.raises(MissingDependencyError) as caught:
        make()
    assert line in str(caught.value)


def test_bad_declarations() -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        OpenAIProvider("local", kind="openai-compatible")
    with pytest.raises(ConfigurationError, match="openai-compatible"):
        OpenAIProvider("x", kind="vllm")  # type: ignore[arg-type]
    assert OpenAIProvider("openai").pricing_id == "openai"
    assert AnthropicProvider("anthropic").pricing_id == "anthropic"
