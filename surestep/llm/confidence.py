"""How sure a model is of an answer, and what happens when it is not sure enough.

Pure functions. Confidence comes from a field of the answer (``confidence="confidence"``),
from the reply's token log-probabilities (``"logprobs"``: the mean token probability;
``"logprobs:min"``: the least likely token's), or from a function of the answer and the
response. Below ``min_confidence`` the answer goes to review, to the next model, or is
accepted, as the step says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from surestep.errors import ConfigurationError
from surestep.llm.types import ChatResponse

ConfidenceSource = str | Callable[[Any, ChatResponse], float] | None
OnLow = Literal["review", "fallback", "accept"]
ON_LOW: tuple[str, ...] = ("review", "fallback", "accept")
Route = Literal["accept", "review", "fallback"]


def check(source: ConfidenceSource, min_confidence: float | None, on_low: str) -> None:
    """Refuse settings that cannot work, where the step is declared."""
    if on_low not in ON_LOW:
        raise ConfigurationError(f"on_low_confidence={on_low!r}; use one of {', '.join(ON_LOW)}")
    if min_confidence is not None:
        if not (isinstance(min_confidence, int | float) and 0 <= min_confidence <= 1):
            raise ConfigurationError(
                f"min_confidence must be a number from 0 to 1, got {min_confidence!r}"
            )
        if source is None:
            raise ConfigurationError(
                "min_confidence needs confidence=: a field of the schema, 'logprobs', or "
                "a function (output, response) -> float"
            )
    if isinstance(source, str) and not source:
        raise ConfigurationError("confidence= names a field of the schema; got ''")


def wants_logprobs(source: ConfidenceSource) -> bool:
    return isinstance(source, str) and source in ("logprobs", "logprobs:min")


def measure(source: ConfidenceSource, output: Any, response: ChatResponse) -> float | None:
    """The answer's confidence from 0 to 1, or None when the source gives none."""
    if source is None:
        return None
    if callable(source):
        try:
            given = source(output, response)
        except Exception as exc:  # the user's function: the call it judges is still paid
            raise ValueError(f"the confidence function raised {type(exc).__name__}: {exc}") from exc
        return _unit(given, "the confidence function's result")
    if wants_logprobs(source):
        if not response.logprobs:
            return None
        values = response.logprobs
        if source == "logprobs:min":
            return _unit(math.exp(min(values)), "a token probability")
        return _unit(math.exp(sum(values) / len(values)), "the mean token probability")
    value = output.get(source) if isinstance(output, dict) else getattr(output, source, None)
    return None if value is None else _unit(value, f"the answer's {source!r} field")


def _unit(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} is not finite: {value!r}")
    return min(1.0, max(0.0, number))


def route(confidence: float | None, min_confidence: float | None, on_low: str) -> Route:
    """What becomes of an answer: accepted, sent to review, or passed to the next model.
    With a threshold set, an answer whose confidence cannot be measured (a provider that
    returned no logprobs) counts as below it: unsure is not sure."""
    if min_confidence is None or (confidence is not None and confidence >= min_confidence):
        return "accept"
    if on_low == "review":
        return "review"
    return "fallback" if on_low == "fallback" else "accept"
