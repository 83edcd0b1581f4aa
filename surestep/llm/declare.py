"""Declaring an LLM step: settings checked where they are written, the step registered.

``app.llm_step(...)`` lands here. Every setting that cannot work (an unknown provider,
a schema with no JSON Schema, a threshold with no confidence source, review settings
``request_review`` would refuse) is a ``ConfigurationError`` at declaration, not at the
first run; a missing SDK names the ``pip install`` line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, get_type_hints

from pydantic import TypeAdapter

import surestep.llm.confidence as conf
from surestep.errors import ConfigurationError
from surestep.llm.chain import Plan
from surestep.llm.faults import ModelError
from surestep.llm.kit import LLMKit
from surestep.llm.step import LLMStep, ModelAnswer
from surestep.registry import Registry
from surestep.retry import Retry
from surestep.review.request import review_spec
from surestep.serialization import json_schema

ON_EXHAUSTED = ("review", "dead_letter", "fail")
#: Retries of an LLM step declared without ``retry=``: model outages often outlast a
#: plain step's default.
LLM_RETRY = Retry(max_attempts=5, initial_delay=2.0, max_delay=120.0)


def declare_llm_step(
    kit: LLMKit,
    registry: Registry,
    *,
    name: str,
    schema: Any,
    models: Sequence[str],
    prompt: Callable[..., Any],
    timeout: float = 60.0,
    max_repairs: int = 2,
    retry: Retry | None = None,
    confidence: conf.ConfidenceSource = None,
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
    check_settings(name, models, timeout, max_repairs, on_exhausted, review, cache_ttl)
    _check_prompt_and_confidence(name, prompt, confidence, min_confidence, on_low_confidence)
    for model in models:
        kit.resolve(model)  # an unknown provider or a missing SDK fails here
    adapter, json_form = schema_parts(schema, name)
    plan = Plan(
        step=name,
        models=tuple(models),
        adapter=adapter,
        schema=json_form,
        timeout=float(timeout),
        max_repairs=max_repairs,
        confidence=confidence,
        min_confidence=min_confidence,
        on_low=on_low_confidence,
        fallback_on_transient=fallback_on_transient,
        classify=classify,
        temperature=temperature,
        max_tokens=max_tokens,
        params=dict(params or {}),
        cache_ttl=None if cache_ttl is None else cache_ttl.total_seconds(),
    )
    holder: list[LLMStep] = []
    fn = step_function(lambda *a, **k: holder[0].attempt(*a, **k), prompt, name)
    # Each call has its own timeout; the attempt's bounds the whole chain with repairs.
    calls = len(plan.models) * (plan.max_repairs + 1)
    step = registry.add_step(
        fn,
        name,
        retry or LLM_RETRY,
        plan.timeout * calls + 5.0,
        "dead_letter" if on_exhausted == "dead_letter" else "fail",
    )
    llm = LLMStep(kit, step, plan, prompt, dict(review or {}), on_exhausted, schema)
    holder.append(llm)
    return llm


def _check_prompt_and_confidence(
    name: str,
    prompt: Callable[..., Any],
    confidence: conf.ConfidenceSource,
    min_confidence: float | None,
    on_low: str,
) -> None:
    if not callable(prompt):
        raise ConfigurationError(f"llm_step {name!r}: prompt= takes a function of the inputs")
    try:
        conf.check(confidence, min_confidence, on_low)
    except ConfigurationError as exc:
        raise ConfigurationError(f"llm_step {name!r}: {exc}") from None


def step_function(
    attempt: Callable[..., ModelAnswer], prompt: Callable[..., Any], name: str
) -> Callable[..., ModelAnswer]:
    """The function registered as the step: the prompt's parameters, a ModelAnswer back,
    so the engine checks and stores the arguments as the prompt declares them."""

    def run_attempt(*args: Any, **kwargs: Any) -> ModelAnswer:
        return attempt(*args, **kwargs)

    try:
        hints = get_type_hints(prompt)
    except Exception:
        hints = {}
    signature = inspect.signature(prompt)
    run_attempt.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=ModelAnswer
    )
    run_attempt.__annotations__ = {**hints, "return": ModelAnswer}
    run_attempt.__name__ = run_attempt.__qualname__ = f"llm_step_{name}"
    return run_attempt


def check_settings(
    name: str,
    models: Sequence[str],
    timeout: float,
    max_repairs: int,
    on_exhausted: str,
    review: dict[str, Any] | None,
    cache_ttl: timedelta | None,
) -> None:
    """Refuse what cannot work where the step is declared, naming the setting."""
    where = f"llm_step {name!r}"
    if isinstance(models, str) or not models:
        raise ConfigurationError(f"{where}: models= takes a non-empty list of 'provider:model'")
    if not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigurationError(f"{where}: timeout must be > 0 seconds, got {timeout!r}")
    if not isinstance(max_repairs, int) or max_repairs < 0:
        raise ConfigurationError(f"{where}: max_repairs must be an int >= 0")
    if on_exhausted not in ON_EXHAUSTED:
        raise ConfigurationError(
            f"{where}: on_exhausted={on_exhausted!r}; use one of {', '.join(ON_EXHAUSTED)}"
        )
    if review is not None and not isinstance(review, dict):
        raise ConfigurationError(f"{where}: review= takes a dict of request_review settings")
    try:
        review_spec(None, name, review or {})
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: review=: {exc}") from None
    if cache_ttl is not None and (
        not isinstance(cache_ttl, timedelta) or cache_ttl.total_seconds() <= 0
    ):
        raise ConfigurationError(f"{where}: cache_ttl must be a positive timedelta")


def schema_parts(schema: Any, name: str) -> tuple[TypeAdapter[Any] | None, dict[str, Any] | None]:
    """The adapter and JSON Schema of ``schema`` (None, None for free text: ``str``)."""
    if schema is None or schema is str:
        return None, None
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(schema)
        return adapter, json_schema(adapter)
    except Exception as exc:
        raise ConfigurationError(
            f"llm_step {name!r}: schema={schema!r} has no JSON Schema ({exc}); use a "
            f"pydantic model, or str for free text"
        ) from None
