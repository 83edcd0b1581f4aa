"""An App's model configuration: its providers, prices, rate limits and call ledger.

Made once per App (``app.llm``) and shared by its LLM steps. Providers are named once
(``app.llm_provider``); ``openai`` and ``anthropic`` are predefined and read their
standard environment variables. A model is named ``"<provider>:<model>"``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from surestep.errors import ConfigurationError
from surestep.llm.ledger import CallLedger
from surestep.llm.pricing import PriceBook
from surestep.llm.types import Provider
from surestep.names import check_name

if TYPE_CHECKING:
    from surestep.clock import Clock
    from surestep.hooks import Hooks
    from surestep.storage import Store

KINDS = ("openai", "openai-compatible", "anthropic")

#: Every kit made in this process, for ``surestep.llm.complete`` to find its providers.
_KITS: weakref.WeakSet[LLMKit] = weakref.WeakSet()


@dataclass(frozen=True)
class RateLimit:
    """Requests and tokens per minute one model may take, shared by every worker."""

    rpm: int | None
    tpm: int | None


class LLMKit:
    """The model side of one App."""

    def __init__(self, store: Callable[[], Store], clock: Clock, hooks: Hooks) -> None:
        self._store = store
        self.clock = clock
        self.hooks = hooks
        self.prices = PriceBook()
        self.limits: dict[str, RateLimit] = {}
        self._providers: dict[str, Provider] = {}
        self._factories: dict[str, Callable[[], Provider]] = {
            "openai": lambda: _openai("openai", "openai", None, "OPENAI_API_KEY", "openai"),
            "anthropic": lambda: _anthropic("anthropic", None, "ANTHROPIC_API_KEY"),
        }
        self._lock = threading.Lock()
        _KITS.add(self)

    @property
    def store(self) -> Store:
        return self._store()

    @property
    def ledger(self) -> CallLedger:
        return CallLedger(self.store)

    # -- declaring ---------------------------------------------------------------------

    def provider(
        self,
        name: str,
        *,
        kind: str = "openai-compatible",
        base_url: str | None = None,
        api_key_env: str | None = None,
        pricing_id: str | None = None,
        provider: Provider | None = None,
    ) -> None:
        """Name a source of models. ``provider=`` takes a ready object (``FakeLLM``)."""
        check_name("provider name", name)
        if ":" in name:
            raise ConfigurationError(f"provider name {name!r} may not contain ':'")
        if provider is None and kind not in KINDS:
            raise ConfigurationError(f"provider kind={kind!r}; use one of {', '.join(KINDS)}")
        if provider is None and kind == "openai-compatible" and not base_url:
            raise ConfigurationError(
                f"provider {name!r}: an openai-compatible server needs base_url= "
                f"(e.g. 'http://127.0.0.1:8000/v1')"
            )
        with self._lock:
            if name in self._providers:
                raise ConfigurationError(f"provider {name!r} is already declared")
            if provider is not None:
                self._providers[name] = provider
            elif kind == "anthropic":
                self._providers[name] = _anthropic(
                    name, base_url, api_key_env or "ANTHROPIC_API_KEY"
                )
            else:
                key_env = api_key_env or ("OPENAI_API_KEY" if kind == "openai" else None)
                self._providers[name] = _openai(name, kind, base_url, key_env, pricing_id)

    def rate_limit(self, model: str, *, rpm: int | None = None, tpm: int | None = None) -> None:
        """Cap calls to ``model`` ("provider:model") across every worker process."""
        self.resolve(model)
        for label, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"rate_limit {model!r}: {label} must be an int >= 1")
        if rpm is None and tpm is None:
            raise ConfigurationError(f"rate_limit {model!r}: give rpm= and/or tpm=")
        self.limits[model] = RateLimit(rpm, tpm)

    def price(self, model: str, *, input_per_mtok: float, output_per_mtok: float) -> None:
        """Set the USD price per million tokens of ``model`` (0 for self-hosted ones)."""
        for value in (input_per_mtok, output_per_mtok):
            if not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"price of {model!r}: prices are numbers >= 0")
        self.prices.set_price(
            model, input_per_mtok=float(input_per_mtok), output_per_mtok=float(output_per_mtok)
        )

    def close(self) -> None:
        """Close the providers' HTTP clients."""
        with self._lock:
            providers = list(self._providers.values())
        for provider in providers:
            closing = getattr(provider, "close", None)
            if callable(closing):
                closing()

    # -- using -------------------------------------------------------------------------

    def resolve(self, model: str) -> tuple[Provider, str]:
        """The provider and the provider's model name of ``"provider:model"``."""
        if not isinstance(model, str) or ":" not in model:
            raise ConfigurationError(
                f"model {model!r}: name a model as '<provider>:<model>', e.g. 'openai:gpt-4o-mini'"
            )
        name, model_name = model.split(":", 1)
        if not model_name:
            raise ConfigurationError(f"model {model!r}: the model name after ':' is empty")
        with self._lock:
            found = self._providers.get(name)
            if found is None and name in self._factories:
                found = self._providers[name] = self._factories[name]()
        if found is None:
            known = ", ".join(sorted({*self._providers, *self._factories}))
            raise ConfigurationError(
                f"model {model!r}: no provider named {name!r} (known: {known}); declare it "
                f"with app.llm_provider({name!r}, base_url=...) before the step"
            )
        return found, model_name


def find_kit(model: str) -> LLMKit:
    """The kit that knows ``model``'s provider, for calls made outside an LLM step."""
    name = model.split(":", 1)[0]
    kits = [kit for kit in list(_KITS) if name in kit._providers]
    if not kits and name in ("openai", "anthropic"):
        # Predefined in every App: only a lone App is sure to be the right one. Any App
        # would do the call, but its ledger and budgets are in that App's database.
        kits = list(_KITS)
    if len(kits) == 1:
        return kits[0]
    if not kits:
        raise ConfigurationError(
            f"no App declares the provider {name!r} of {model!r}: declare it with "
            f"app.llm_provider({name!r}, ...), and pass app= to surestep.llm.complete"
        )
    raise ConfigurationError(
        f"cannot tell which App's provider {name!r} to use ({len(kits)} Apps have it); "
        f"pass app= to surestep.llm.complete"
    )


def _openai(
    name: str, kind: str, base_url: str | None, api_key_env: str | None, pricing_id: str | None
) -> Provider:
    from surestep.llm.providers.openai_sdk import OpenAIProvider

    chosen: dict[str, Any] = {} if pricing_id is None else {"pricing_id": pricing_id}
    return OpenAIProvider(
        name,
        kind="openai" if kind == "openai" else "openai-compatible",
        base_url=base_url,
        api_key_env=api_key_env,
        **chosen,
    )


def _anthropic(name: str, base_url: str | None, api_key_env: str) -> Provider:
    from surestep.llm.providers.anthropic_sdk import AnthropicProvider

    return AnthropicProvider(name, base_url=base_url, api_key_env=api_key_env)
