"""The LLM layer's pure parts: parsing and repair, confidence and its routing."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from pydantic import BaseModel, TypeAdapter

from surestep.errors import ConfigurationError
from surestep.llm.confidence import check, measure, route
from surestep.llm.structured import Invalid, digest, parse, repair
from surestep.llm.types import ChatResponse, Usage


class Invoice(BaseModel):
    vendor: str
    total: Decimal


ADAPTER: TypeAdapter[Invoice] = TypeAdapter(Invoice)


def test_parse_accepts_fenced_json_and_names_every_problem() -> None:
    assert parse('```json\n{"vendor": "A", "total": "1.5"}\n```', ADAPTER).total == Decimal("1.5")
    with pytest.raises(Invalid) as caught:
        parse('{"total": "x"}', ADAPTER)
    assert set(caught.value.errors) == {
        "vendor: Field required",
        "total: Input should be a valid decimal",
    }
    with pytest.raises(Invalid, match="not JSON"):
        parse("Sure! Here it is: {", ADAPTER)


def test_repair_quotes_the_reply_and_the_errors() -> None:
    asked = [{"role": "user", "content": "extract"}]
    again = repair(asked, '{"total": 1}', Invalid(("vendor: Field required",)))
    assert again[:1] == asked and again[1] == {"role": "assistant", "content": '{"total": 1}'}
    assert "- vendor: Field required" in again[2]["content"]
    assert digest(asked) == digest([{"content": "extract", "role": "user"}])
    assert digest(asked) != digest(again)


def response(logprobs: tuple[float, ...] | None = None) -> ChatResponse:
    return ChatResponse("{}", Usage(1, 1), logprobs=logprobs)


def test_confidence_sources() -> None:
    assert measure("confidence", {"confidence": 0.7}, response()) == 0.7
    assert measure("confidence", {"confidence": 7}, response()) == 1.0  # clamped
    assert measure("confidence", {}, response()) is None
    mean = measure("logprobs", None, response((math.log(0.9), math.log(0.5))))
    assert mean == pytest.approx(math.sqrt(0.45))
    assert measure("logprobs:min", None, response((math.log(0.9), math.log(0.5)))) == 0.5
    assert measure("logprobs", None, response(None)) is None
    assert measure(lambda out, resp: 0.25, None, response()) == 0.25
    with pytest.raises(ValueError, match="not a number"):
        measure("confidence", {"confidence": "high"}, response())


def test_routing_below_the_threshold() -> None:
    assert route(0.9, 0.8, "review") == "accept"
    assert route(0.5, 0.8, "review") == "review"
    assert route(0.5, 0.8, "fallback") == "fallback"
    assert route(0.5, 0.8, "accept") == "accept"
    assert route(None, 0.8, "review") == "review"  # unmeasured counts as unsure
    assert route(None, None, "review") == "accept"


@pytest.mark.parametrize(
    ("source", "minimum", "on_low", "message"),
    [
        (None, 0.8, "review", "needs confidence="),
        ("confidence", 1.5, "review", "from 0 to 1"),
        ("confidence", 0.5, "ask", "on_low_confidence='ask'"),
    ],
)
def test_bad_confidence_settings(
    source: str | None, minimum: float, on_low: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check(source, minimum, on_low)
