"""What a model call is, whatever the provider: a request, a response, its usage.

Provider adapters (``surestep.llm.providers``) turn a :class:`ChatRequest` into their
SDK's call and the SDK's reply (or exception) into a :class:`ChatResponse` (or one of
the faults of :mod:`surestep.llm.faults`). Everything above them -- repair, fallback,
confidence, pricing, budgets, the call ledger -- sees only these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

#: One chat message, in the OpenAI shape: ``{"role": "user", "content": "..."}``.
Message = dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    """One call to one model.

    ``schema`` is the JSON Schema the reply must satisfy (None: free text), named
    ``schema_name`` where the provider wants a name. ``timeout`` is the whole call's
    limit in seconds; adapters give it to their SDK, whose own retries are off.
    """

    model: str  # the provider's own model name ("gpt-4o-mini"), without "provider:"
    messages: list[Message]
    schema: dict[str, Any] | None = None
    schema_name: str = "output"
    timeout: float = 60.0
    temperature: float | None = None
    max_tokens: int | None = None
    logprobs: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # passed to the SDK as is


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ChatResponse:
    """A model's reply. ``logprobs`` holds one log-probability per output token when the
    request asked for them and the provider returned them."""

    text: str
    usage: Usage
    finish_reason: str | None = None
    model: str = ""  # as the provider reports it
    logprobs: tuple[float, ...] | None = None


class Provider(Protocol):
    """A named source of models (``app.llm_provider``), adapted to one SDK."""

    name: str  # the prefix in "name:model"
    kind: str  # "openai", "openai-compatible", "anthropic", "fake"
    #: The provider id prices are looked up under in genai-prices (None: no price
    #: list, every call costs 0 unless the App sets a price).
    pricing_id: str | None

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Make the call once (no retries); raise a fault of :mod:`surestep.llm.faults`."""
        ...
