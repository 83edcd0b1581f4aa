"""What a model call costs, in US dollars.

Prices come from the ``genai-prices`` package, pinned by the ``llm`` extra and read from
the data bundled with it: surestep never calls its ``UpdatePrices`` (the one part of it
that fetches), so a price never changes under a running workflow, and each quote says
which data priced it. Users add or override prices per ``"<provider>:<model>"`` (0 for
a model they host themselves). Without genai-prices, or for a model it does not know, a
call costs 0 and the quote says it was not priced.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType

from surestep.errors import ConfigurationError
from surestep.llm.types import Message, Usage

#: Output tokens assumed by :meth:`PriceBook.estimate` when the call sets no max_tokens.
DEFAULT_ESTIMATED_OUTPUT_TOKENS = 1024

#: Characters per token in estimates: the usual rule of thumb for English text.
CHARS_PER_TOKEN = 4

OVERRIDE = "override"
UNPRICED = "unpriced"

_PER_MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class PriceQuote:
    """The cost of one call. ``priced`` is false when no price was known (``usd`` is 0
    then); ``version`` names the price data used: ``"genai-prices 0.2.3"``,
    ``"override"``, or ``"unpriced"`` when no price list was consulted."""

    usd: float
    priced: bool
    version: str


@dataclass(frozen=True)
class _Price:
    input_per_mtok: Decimal
    output_per_mtok: Decimal


class PriceBook:
    """Prices for the models an App calls.

    Example::

        book = PriceBook()
        book.set_price("local:llama3.1", input_per_mtok=0, output_per_mtok=0)
        book.cost("openai", "openai", "gpt-4o-mini", Usage(1200, 300)).usd
    """

    def __init__(self) -> None:
        self._overrides: dict[str, _Price] = {}
        self._lock = threading.Lock()
        self._module: ModuleType | None = None
        self._module_loaded = False

    def set_price(self, model_ref: str, *, input_per_mtok: float, output_per_mtok: float) -> None:
        """Price ``"<provider>:<model>"`` at these USD per million tokens, whatever
        genai-prices says."""
        provider, _, model = model_ref.partition(":")
        if not provider or not model:
            raise ConfigurationError(
                f"set_price({model_ref!r}): name the model as '<provider>:<model>', "
                f"e.g. 'local:llama3.1', the way a step's models= names it."
            )
        for label, value in (
            ("input_per_mtok", input_per_mtok),
            ("output_per_mtok", output_per_mtok),
        ):
            if not math.isfinite(value) or value < 0:
                raise ConfigurationError(
                    f"set_price({model_ref!r}): {label} must be a finite number of USD "
                    f"per million tokens, 0 or more; got {value!r}."
                )
        price = _Price(Decimal(str(input_per_mtok)), Decimal(str(output_per_mtok)))
        with self._lock:
            self._overrides[model_ref] = price

    def cost(
        self, provider_name: str, pricing_id: str | None, model: str, usage: Usage
    ) -> PriceQuote:
        """The cost of a call made with ``usage``: the override for
        ``provider_name:model`` if there is one, else genai-prices under ``pricing_id``
        (the provider's id there; None: no list to look in)."""
        override = self._overrides.get(f"{provider_name}:{model}")
        if override is not None:
            usd = (
                override.input_per_mtok * usage.input_tokens
                + override.output_per_mtok * usage.output_tokens
            ) / _PER_MTOK
            return PriceQuote(usd=float(usd), priced=True, version=OVERRIDE)
        prices = self._genai_prices() if pricing_id is not None else None
        if prices is None or pricing_id is None:
            return PriceQuote(usd=0.0, priced=False, version=UNPRICED)
        version = f"genai-prices {prices.__version__}"
        try:
            calculation = prices.calc_price(
                prices.Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
                model_ref=model,
                provider_id=pricing_id,
            )
        except LookupError:  # a provider or model the bundled data does not know
            return PriceQuote(usd=0.0, priced=False, version=version)
        return PriceQuote(usd=float(calculation.total_price), priced=True, version=version)

    def estimate(
        self,
        provider_name: str,
        pricing_id: str | None,
        model: str,
        messages: Sequence[Message],
        max_tokens: int | None = None,
    ) -> PriceQuote:
        """The most a call not made yet should cost, for budgets: input tokens from the
        messages' characters, output tokens ``max_tokens`` (or
        :data:`DEFAULT_ESTIMATED_OUTPUT_TOKENS`)."""
        usage = Usage(
            input_tokens=estimate_input_tokens(messages),
            output_tokens=max_tokens if max_tokens is not None else DEFAULT_ESTIMATED_OUTPUT_TOKENS,
        )
        return self.cost(provider_name, pricing_id, model, usage)

    def _genai_prices(self) -> ModuleType | None:
        # Imported on first use: its bundled price table is a large module, and an App
        # that never prices a call should not pay for loading it.
        if not self._module_loaded:
            with self._lock:
                if not self._module_loaded:
                    try:
                        import genai_prices
                    except ImportError:
                        self._module = None
                    else:
                        self._module = genai_prices
                    self._module_loaded = True
        return self._module


def estimate_input_tokens(messages: Sequence[Message]) -> int:
    """Tokens in ``messages``, estimated as characters / :data:`CHARS_PER_TOKEN`."""
    chars = sum(len(_content_text(message.get("content"))) for message in messages)
    return math.ceil(chars / CHARS_PER_TOKEN)


def _content_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else json.dumps(part, default=str)
            for part in content
        )
    return json.dumps(content, default=str)
