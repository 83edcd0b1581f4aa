"""The chaos model server through the real ``openai`` SDK over real HTTP on 127.0.0.1:
clean answers satisfy the schema, each fault kind reaches the SDK as itself, the same
seed replays the same faults, and ``surestep chaos-llm`` runs as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import pytest
from openai import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    OpenAI,
    RateLimitError,
)
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from typer.testing import CliRunner

import surestep
from surestep import serialization
from surestep.cli import app as cli
from surestep.errors import ConfigurationError
from surestep.llm.chaos import ChaosConfig, ChaosServer


class Currency(StrEnum):
    EUR = "EUR"
    USD = "USD"


class Line(BaseModel):
    sku: str
    quantity: int = Field(ge=1, le=50)
    price: Decimal | None = None


class Vendor(BaseModel):
    name: str
    country: Literal["DE", "FR", "US"]


class Invoice(BaseModel):
    vendor: Vendor
    total: Decimal
    currency: Currency
    paid: bool
    discount: float = Field(ge=0, le=0.3)
    lines: list[Line]
    note: str | None = None
    confidence: float


SCHEMA = Invoice.model_json_schema()
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "Invoice", "schema": SCHEMA}}


def ask(client: OpenAI, text: str, **kwargs: Any) -> Any:
    """One chat completion asking for an Invoice, unless kwargs say otherwise."""
    kwargs.setdefault("response_format", JSON_SCHEMA)
    return client.chat.completions.create(
        model="chaos-small", messages=[{"role": "user", "content": text}], **kwargs
    )


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start chaos servers for one test (closed at its end) and SDK clients of them."""
    opened: list[Any] = []

    def start(**rates: Any) -> tuple[ChaosServer, OpenAI]:
        server = ChaosServer(ChaosConfig(**rates), port=0).start()
        client = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=30)
        opened.extend([client, server])
        return server, client

    yield start
    for thing in reversed(opened):
        thing.close()


def test_clean_answers_satisfy_the_pydantic_schema(serve: Any) -> None:
    server, client = serve(seed=1)
    for n in range(25):
        reply = ask(client, f"Extract the invoice of Globex GmbH, number {n}", logprobs=True)
        invoice = Invoice.model_validate_json(reply.choices[0].message.content)
        assert 0.85 <= invoice.confidence <= 0.99
        assert reply.choices[0].finish_reason == "stop"
        assert reply.model == "chaos-small"
        usage = reply.usage
        assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        tokens = reply.choices[0].logprobs.content
        assert "".join(t.token for t in tokens).strip() == reply.choices[0].message.content
        assert all(-0.1 < t.logprob < 0 and t.top_logprobs == [] for t in tokens)
        assert tokens[0].bytes == list(tokens[0].token.encode())
    assert server.stats()["clean"] == 25


class Node(BaseModel):
    """A recursive schema: the answer must still end."""

    label: str
    children: list[Node] = []
    parent: Node | None = None


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(gt=0, lt=10)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Odd(BaseModel):
    when: datetime
    day: date
    id: uuid.UUID
    code: str = Field(min_length=12, max_length=20)
    counts: dict[str, int]
    pair: tuple[int, str]
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    price: Decimal = Field(max_digits=6, decimal_places=2)
    tags: set[str] = Field(min_length=2)
    ratio: float = Field(gt=0, lt=1)
    confidence: int = Field(ge=0, le=100)  # a percent


@pytest.mark.parametrize(
    ("model", "strict"), [(Node, False), (Odd, False), (Invoice, True), (Odd, True)]
)
def test_clean_answers_satisfy_harder_schemas(
    serve: Any, model: type[BaseModel], strict: bool
) -> None:
    _, client = serve(seed=4)
    # The strict schema is the one LLM steps send: a Decimal's string form has a pattern.
    json_schema = (
        serialization.json_schema(TypeAdapter(model)) if strict else model.model_json_schema()
    )
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": json_schema}}
    for n in range(30):
        reply = ask(client, f"Describe thing {n}", response_format=schema)
        value = model.model_validate_json(reply.choices[0].message.content)
        if isinstance(value, Odd):
            assert 85 <= value.confidence <= 99


def test_strings_come_from_the_prompt_and_plain_text_is_a_summary(serve: Any) -> None:
    _, client = serve(seed=1)
    reply = ask(client, "Extract Zanzibar Quokka", response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    invoice = Invoice.model_validate_json(
        ask(client, "Extract Zanzibar Quokka").choices[0].message.content
    )
    assert set(invoice.vendor.name.split()) <= {"Extract", "Zanzibar", "Quokka"}
    text = ask(client, "Summarize the Zanzibar report", response_format=None)
    content = text.choices[0].message.content
    assert content.startswith("Summary:") and "Zanzibar" in content
    again = ask(client, "Summarize the Zanzibar report", response_format=None)
    assert again.choices[0].message.content == content
    short = ask(client, "Summarize the Zanzibar report", response_format=None, max_tokens=3)
    assert short.choices[0].finish_reason == "length"
    assert short.usage.completion_tokens == 3


def test_a_timeout_holds_the_request_past_the_clients_timeout(serve: Any) -> None:
    server, client = serve(timeout_rate=1.0, timeout_seconds=60)
    with pytest.raises(APITimeoutError):
        ask(client.with_options(timeout=0.3), "Extract the invoice")
    assert server.stats()["faults"]["timeout"] == 1


def test_closing_the_server_ends_a_held_request(serve: Any) -> None:
    server, client = serve(timeout_rate=1.0, timeout_seconds=100)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            ask(client.with_options(timeout=90), "Extract the invoice")
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while server.stats()["faults"]["timeout"] == 0 and caller.is_alive():
        caller.join(0.01)
    server.close()
    caller.join(60)
    assert not caller.is_alive(), "the held request outlived the server"
    # The connection closed without an answer, long before either timeout.
    assert len(outcome) == 1 and type(outcome[0]) is APIConnectionError


def test_an_error_is_a_5xx_in_openais_shape(serve: Any) -> None:
    server, client = serve(seed=3, error_rate=1.0)
    statuses = set()
    for n in range(12):
        with pytest.raises(InternalServerError) as caught:
            ask(client, f"Extract invoice {n}")
        statuses.add(caught.value.status_code)
        assert caught.value.body["type"] == "server_error"  # type: ignore[index]
    assert statuses <= {500, 502, 503} and len(statuses) > 1
    assert server.stats()["faults"]["error"] == 12


def test_a_rate_limit_is_a_429_with_retry_after(serve: Any) -> None:
    _, client = serve(rate_limit_rate=1.0, retry_after=2)
    with pytest.raises(RateLimitError) as caught:
        ask(client, "Extract the invoice")
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.body["type"] == "rate_limit_exceeded"  # type: ignore[index]


def test_bad_json_does_not_parse(serve: Any) -> None:
    server, client = serve(seed=5, bad_json_rate=1.0)
    finishes = set()
    for n in range(20):
        reply = ask(client, f"Extract invoice {n}")
        with pytest.raises(ValueError):
            json.loads(reply.choices[0].message.content)
        with pytest.raises(ValidationError):
            Invoice.model_validate_json(reply.choices[0].message.content)
        finishes.add(reply.choices[0].finish_reason)
    assert finishes == {"stop", "length"}  # prose or a trailing comma; a cut-off reply
    assert server.stats()["faults"]["bad_json"] == 20


def test_schema_drift_is_json_that_fails_validation(serve: Any) -> None:
    server, client = serve(seed=5, schema_drift_rate=1.0)
    missing = wrong_type = 0
    for n in range(20):
        content = ask(client, f"Extract invoice {n}").choices[0].message.content
        data = json.loads(content)
        with pytest.raises(ValidationError) as caught:
            Invoice.model_validate(data)
        kinds = {error["type"] for error in caught.value.errors()}
        missing += "missing" in kinds
        wrong_type += bool(kinds - {"missing"})
    assert missing and wrong_type
    assert server.stats()["faults"]["schema_drift"] == 20


def test_low_confidence_is_a_valid_answer_that_is_unsure(serve: Any) -> None:
    server, client = serve(seed=5, low_confidence_rate=1.0)
    for n in range(10):
        reply = ask(client, f"Extract invoice {n}", logprobs=True)
        invoice = Invoice.model_validate_json(reply.choices[0].message.content)
        assert 0.2 <= invoice.confidence <= 0.6
        assert all(t.logprob < -0.5 for t in reply.choices[0].logprobs.content)
    # Free text without logprobs cannot look unsure: it is answered clean.
    ask(client, "Summarize it", response_format=None)
    stats = server.stats()
    assert stats["faults"]["low_confidence"] == 10 and stats["clean"] == 1


def outcomes(client: OpenAI, prompts: list[str]) -> list[str]:
    """What each request got: its content, or the SDK exception and status."""
    seen = []
    for prompt in prompts:
        try:
            reply = ask(client, prompt, logprobs=True)
        except (InternalServerError, RateLimitError) as exc:
            seen.append(f"{type(exc).__name__} {getattr(exc, 'status_code', '')}")
        else:
            logprobs = [t.logprob for t in reply.choices[0].logprobs.content]
            seen.append(f"{reply.choices[0].message.content} {logprobs}")
    return seen


# A timeout is held only briefly and then answered 504, so what the client sees does
# not depend on how fast a loaded machine answers the other requests.
MIXED = {
    "timeout_rate": 0.05,
    "timeout_seconds": 0.2,
    "error_rate": 0.1,
    "rate_limit_rate": 0.1,
    "bad_json_rate": 0.1,
    "schema_drift_rate": 0.1,
    "low_confidence_rate": 0.1,
}
PROMPTS = [f"Extract invoice {n % 7}" for n in range(40)]  # repeats, as retries are


def test_the_same_seed_replays_the_same_answers_and_faults(serve: Any) -> None:
    first, first_client = serve(seed=7, **MIXED)
    second, second_client = serve(seed=7, **MIXED)
    _, other_client = serve(seed=8, **MIXED)
    replay = outcomes(first_client, PROMPTS)
    assert outcomes(second_client, PROMPTS) == replay
    assert outcomes(other_client, PROMPTS) != replay
    assert first.stats() == second.stats()
    assert first.stats()["faults_total"] > 0
    # After a reset the server is as good as new: the same sequence replays again.
    first.reset()
    assert outcomes(first_client, PROMPTS) == replay


def test_a_retried_request_eventually_succeeds(serve: Any) -> None:
    _, client = serve(seed=11, error_rate=0.5)
    tries = 0
    while True:
        tries += 1
        try:
            reply = ask(client, "Extract the invoice of Initech")
            break
        except InternalServerError:
            assert tries < 30, "the same request failed 30 times at a rate of 0.5"
    Invoice.model_validate_json(reply.choices[0].message.content)


def test_stats_count_what_the_clients_saw(serve: Any) -> None:
    # High rates of the faults the client sees as exceptions, so each one happens.
    rates = {"timeout_rate": 0.2, "error_rate": 0.2, "rate_limit_rate": 0.2}
    server, client = serve(seed=2, **(MIXED | rates))
    seen = outcomes(client, PROMPTS)
    stats = server.stats()
    assert stats["requests"] == len(PROMPTS)
    assert stats["faults_total"] + stats["clean"] == len(PROMPTS)
    assert stats["faults"]["timeout"] == seen.count("InternalServerError 504") > 0
    assert stats["faults"]["rate_limit"] == seen.count("RateLimitError 429") > 0
    errors = [s for s in seen if s.startswith("InternalServerError 50") and s[-1] != "4"]
    assert stats["faults"]["error"] == len(errors) > 0
    root = server.url.removesuffix("/v1")
    with httpx.Client() as http:
        assert http.get(f"{root}/chaos/stats").json() == stats
        reset = http.post(f"{root}/chaos/reset").json()
    assert reset["requests"] == 0 and reset["faults_total"] == 0
    assert server.stats()["faults"] == dict.fromkeys(stats["faults"], 0)


def test_concurrent_clients_are_all_answered_and_counted(serve: Any) -> None:
    server, client = serve(seed=9, error_rate=0.2, bad_json_rate=0.2)

    def call(n: int) -> str:
        try:
            return str(ask(client, f"Extract invoice {n}").choices[0].finish_reason)
        except InternalServerError:
            return "error"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(80)))
    stats = server.stats()
    assert stats["requests"] == 80 and stats["faults"]["error"] == results.count("error")
    assert stats["faults"]["bad_json"] + stats["clean"] + results.count("error") == 80


def test_bad_requests_get_openai_style_errors(serve: Any) -> None:
    server, client = serve()
    assert [m.id for m in client.models.list()] == ["chaos"]
    root = server.url.removesuffix("/v1")
    with httpx.Client() as http:
        broken = http.post(f"{server.url}/chat/completions", content=b"{not json")
        assert broken.status_code == 400
        assert "not JSON" in broken.json()["error"]["message"]
        empty = http.post(f"{server.url}/chat/completions", json={"model": "m"})
        assert empty.status_code == 400 and "messages" in empty.json()["error"]["message"]
        endless = {
            "$defs": {"L": {"properties": {"next": {"$ref": "#/$defs/L"}}, "required": ["next"]}}
        }
        endless |= {"$ref": "#/$defs/L"}
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for schema, problem in [(endless, "endless"), ({"$ref": "#/$defs/Gone"}, "Gone")]:
            fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
            refused = http.post(
                f"{server.url}/chat/completions", json=body | {"response_format": fmt}
            )
            assert refused.status_code == 400 and problem in refused.json()["error"]["message"]
        nowhere = http.get(f"{root}/v2/engines")
        assert nowhere.status_code == 404
        assert nowhere.json()["error"]["type"] == "not_found"
    assert server.stats()["bad_requests"] == 4 and server.stats()["requests"] == 0


def test_rates_outside_0_to_1_or_summing_over_1_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="error_rate"):
        ChaosConfig(error_rate=1.5)
    with pytest.raises(ConfigurationError, match=r"sum to 1\.2"):
        ChaosConfig(error_rate=0.6, timeout_rate=0.6)
    runner = CliRunner(env={"COLUMNS": "200"})  # wide, so the message is not folded
    over = runner.invoke(cli, ["chaos-llm", "--error-rate", "1.5"])
    assert over.exit_code == 2 and "'--error-rate'" in over.output
    assert "less than or equal to 1" in over.output
    summed = runner.invoke(cli, ["chaos-llm", "--error-rate", "0.6", "--bad-json-rate", "0.6"])
    assert summed.exit_code == 2 and "sum to 1.2" in summed.output


def test_the_command_serves_prints_faults_and_a_summary(tmp_path: Path) -> None:
    root = Path(surestep.__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    argv = [sys.executable, "-m", "surestep.cli", "chaos-llm", "--port", "0"]
    argv += ["--seed", "7", "--error-rate", "1.0", "--latency-ms", "1"]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=root
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("surestep chaos-llm on http://127.0.0.1:"), first
        url = first.split(" on ", 1)[1].split()[0]
        assert url.endswith("/v1")
        with (
            OpenAI(base_url=url, api_key="unused", max_retries=0) as client,
            pytest.raises(InternalServerError),
        ):
            ask(client, "Extract the invoice")
        assert process.stdout.readline().startswith("chaos: error")
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "chaos summary: 1 requests, 0 clean, 1 faults injected (error 1)" in rest
