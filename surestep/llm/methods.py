"""The App's model methods (``app.llm_step``, ``app.llm_provider``, ``app.rate_limit``,
``app.llm_price``), kept here so the App stays a thin front over its parts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from surestep.llm.kit import LLMKit

if TYPE_CHECKING:
    from surestep.clock import Clock
    from surestep.hooks import Hooks
    from surestep.llm.faults import ModelError
    from surestep.llm.step import LLMStep
    from surestep.llm.types import Provider
    from surestep.registry import Registry
    from surestep.retry import Retry
    from surestep.storage import Store

_LOCK = threading.Lock()


class LLMMethods:
    """Mixed into :class:`surestep.App`."""

    registry: Registry
    clock: Clock
    hooks: Hooks
    _llm: LLMKit | None = None

    @property
    def store(self) -> Store:
        raise NotImplementedError

    @property
    def llm(self) -> LLMKit:
        """The App's providers, prices, rate limits and model-call ledger."""
        if self._llm is None:
            with _LOCK:
                if self._llm is None:
                    self._llm = LLMKit(lambda: self.store, self.clock, self.hooks)
        return self._llm

    def llm_provider(
        self,
        name: str,
        *,
        kind: str = "openai-compatible",
        base_url: str | None = None,
        api_key_env: str | None = None,
        pricing_id: str | None = None,
        provider: Provider | None = None,
    ) -> None:
        """Name a source of models, used as ``"<name>:<model>"``.

        ``kind`` is ``"openai-compatible"`` (vLLM, Ollama, llama.cpp, LM Studio, the
        chaos server: give ``base_url``), ``"openai"`` or ``"anthropic"``; the key is
        read from the environment variable ``api_key_env`` when a call is made, never
        stored. ``openai`` and ``anthropic`` are predefined (``OPENAI_API_KEY``,
        ``ANTHROPIC_API_KEY``). ``provider=`` takes a ready provider (``FakeLLM``).
        """
        self.llm.provider(
            name,
            kind=kind,
            base_url=base_url,
            api_key_env=api_key_env,
            pricing_id=pricing_id,
            provider=provider,
        )

    def rate_limit(self, model: str, *, rpm: int | None = None, tpm: int | None = None) -> None:
        """Cap the requests and tokens per minute of ``model`` across every worker on
        this database (a sliding one-minute window)."""
        self.llm.rate_limit(model, rpm=rpm, tpm=tpm)

    def llm_price(self, model: str, *, input_per_mtok: float, output_per_mtok: float) -> None:
        """Set ``model``'s USD price per million input and output tokens (0 for a
        self-hosted model); it overrides genai-prices."""
        self.llm.price(model, input_per_mtok=input_per_mtok, output_per_mtok=output_per_mtok)

    def llm_step(
        self,
        *,
        name: str,
        models: Sequence[str],
        prompt: Callable[..., Any],
        schema: Any = str,
        timeout: float = 60.0,
        max_repairs: int = 2,
        retry: Retry | None = None,
        confidence: str | Callable[[Any, Any], float] | None = None,
        min_confidence: float | None = None,
        on_low_confidence: str = "review",
        review: dict[str, Any] | None = None,
        on_exhausted: str = "dead_letter",
        fallback_on_transient: bool = False,
        classify: Callable[[ModelError], str | None] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        params: dict[str, Any] | None = None,
        cache_ttl: timedelta | None = None,
    ) -> LLMStep:
        """Declare a step that asks a chain of models for an answer of type ``schema``
        (a pydantic model; ``str`` for free text). See docs/llm.md for every setting."""
        from surestep.llm.declare import declare_llm_step

        return declare_llm_step(
            self.llm,
            self.registry,
            name=name,
            schema=schema,
            models=models,
            prompt=prompt,
            timeout=timeout,
            max_repairs=max_repairs,
            retry=retry,
            confidence=confidence,
            min_confidence=min_confidence,
            on_low_confidence=on_low_confidence,
            review=review,
            on_exhausted=on_exhausted,
            fallback_on_transient=fallback_on_transient,
            classify=classify,
            temperature=temperature,
            max_tokens=max_tokens,
            params=params,
            cache_ttl=cache_ttl,
        )
