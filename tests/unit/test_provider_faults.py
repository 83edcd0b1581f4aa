"""The pure half of the provider adapters: Retry-After, redaction, status to fault."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from surestep.llm.faults import ModelRateLimitedError, ModelRequestError, ModelServerError
from surestep.llm.providers.shared import (
    MESSAGE_LIMIT,
    provider_message,
    redact,
    retry_after_seconds,
    status_fault,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": formatdate(NOW - 30, usegmt=True)}, 0.0),  # already past
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == seconds


def test_redact_removes_the_key_and_key_shaped_words_and_shortens() -> None:
    assert redact("bad key plainsecret99 given", "plainsecret99") == "bad key [redacted] given"
    assert redact("Incorrect API key provided: sk-ab***********yz.", None) == (
        "Incorrect API key provided: [redacted]"
    )
    assert redact("key sk-ant-api03-abcdefgh", None) == "key [redacted]"
    long = redact("word " * 200, None)
    assert len(long) == MESSAGE_LIMIT and long.endswith("...")


def test_provider_message_shapes() -> None:
    assert provider_message({"error": {"message": "a"}}) == "a"
    assert provider_message({"message": "b", "type": "x"}) == "b"
    assert provider_message({"error": "c"}) == "c"
    assert provider_message(b"d") == "d"
    assert provider_message(None) == ""


def test_status_fault_classes_and_messages() -> None:
    def fault(status: int, said: str = "", headers: dict[str, str] | None = None) -> object:
        return status_fault(
            provider="openai",
            model="gpt-4o-mini",
            status=status,
            headers=headers or {},
            body={"error": {"message": said}},
            secret=None,
        )

    limited = fault(429, "slow down", {"retry-after": "3"})
    assert isinstance(limited, ModelRateLimitedError) and limited.retry_after == 3.0
    assert str(limited) == (
        "openai is rate limiting this key (HTTP 429, model 'gpt-4o-mini'): slow down"
    )
    overloaded = fault(529)
    assert isinstance(overloaded, ModelServerError)
    assert str(overloaded) == "openai is overloaded (HTTP 529, model 'gpt-4o-mini')"
    too_long = fault(400, "maximum context length is 8192 tokens")
    assert isinstance(too_long, ModelRequestError)
    assert "context window" in str(too_long)
    assert isinstance(fault(408), ModelServerError)
    assert isinstance(fault(422), ModelRequestError)
