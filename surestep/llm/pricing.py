"""PLACEHOLDER until the providers branch lands: costs every call 0."""

from __future__ import annotations

from dataclasses import dataclass

from surestep.llm.types import Usage


@dataclass(frozen=True)
class PriceQuote:
    usd: float
    priced: bool
    version: str


class PriceBook:
    def set_price(self, model_ref: str, *, input_per_mtok: float, output_per_mtok: float) -> None:
        self._prices = {model_ref: (input_per_mtok, output_per_mtok)}

    def cost(self, provider: str, pricing_id: str | None, model: str, usage: Usage) -> PriceQuote:
        found = getattr(self, "_prices", {}).get(f"{provider}:{model}")
        if found is None:
            return PriceQuote(0.0, False, "none")
        return PriceQuote(
            (usage.input_tokens * found[0] + usage.output_tokens * found[1]) / 1e6, True, "override"
        )
