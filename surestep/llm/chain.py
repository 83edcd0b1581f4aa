"""The call loop of one LLM step attempt: models in order, each with its repairs.

For each model of the chain: call it; a reply that fails the schema is answered with a
repair request, up to ``max_repairs`` times; a model that refuses the request, whose
repairs run out, or whose answer is not confident enough (``on_low_confidence=
"fallback"``) hands over to the next model. A transient fault (timeout, connection, 5xx,
429) ends the attempt at once, so the step's durable retry policy waits it out (unless
``fallback_on_transient``). Every call is recorded in the ledger as it ends, with what
it cost, whether or not its reply is used.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

import surestep.llm.confidence as conf
from surestep.errors import CorruptRecordError
from surestep.hooks import Hooks
from surestep.llm.cache import ResponseCache, cache_key
from surestep.llm.faults import (
    TRANSIENT,
    BudgetExceededError,
    ModelChainError,
    ModelError,
    ModelRateLimitedError,
    ModelServerError,
    reclassified,
)
from surestep.llm.kit import LLMKit
from surestep.llm.ledger import ModelCall
from surestep.llm.limits import Admitted, RateLedger
from surestep.llm.structured import Invalid, digest, parse, repair
from surestep.llm.types import ChatRequest, ChatResponse, Message, Provider, Usage

#: Longest wait for a shared rate limit spent sleeping in the attempt; a longer one ends
#: the attempt with a durable backoff, holding no worker slot.
MAX_LOCAL_WAIT = 2.0
#: Output tokens assumed for a call without ``max_tokens``, to estimate its cost.
DEFAULT_OUTPUT_ESTIMATE = 512


@dataclass(frozen=True)
class Plan:
    """An LLM step's settings, as the call loop needs them."""

    step: str
    models: tuple[str, ...]
    adapter: TypeAdapter[Any] | None  # None: a free-text reply
    schema: dict[str, Any] | None
    timeout: float
    max_repairs: int = 2
    confidence: conf.ConfidenceSource = None
    min_confidence: float | None = None
    on_low: str = "review"
    fallback_on_transient: bool = False
    classify: Callable[[ModelError], str | None] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    cache_ttl: float | None = None

    @property
    def schema_hash(self) -> str | None:
        return None if self.schema is None else digest(self.schema)


@dataclass(frozen=True)
class Site:
    """Where the calls are made: a step attempt of a run (empty outside any run)."""

    run_id: str = ""
    position: int = -1
    attempt: int = 0
    workflow: str = ""
    step: str = ""


@dataclass(frozen=True)
class Answer:
    """The attempt's result: the output (in JSON form), whose it is, and its route."""

    output: Any
    model: str
    confidence: float | None
    prompt_hash: str
    route: str  # "accept" or "review"


@dataclass
class _Attempt:
    kit: LLMKit
    plan: Plan
    site: Site
    seq: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    retry_after: float | None = None  # the longest any model asked for
    doubtful: Answer | None = None  # a low-confidence answer, kept as the last resort


def run_chain(kit: LLMKit, plan: Plan, site: Site, messages: list[Message]) -> Answer:
    """Walk the chain for one step attempt; return the answer or raise why there is none."""
    attempt = _Attempt(kit, plan, site)
    for ref in plan.models:
        answer = _try_model(attempt, ref, messages)
        if answer is not None:
            return answer
    if attempt.doubtful is not None:  # every model unsure: a person decides
        return attempt.doubtful
    error = ModelChainError(plan.step, attempt.failures)
    error.retry_after = attempt.retry_after
    raise error


def _try_model(attempt: _Attempt, ref: str, messages: list[Message]) -> Answer | None:
    """One model with its repairs: its answer, or None to go on to the next model."""
    plan = attempt.plan
    provider, model = attempt.kit.resolve(ref)
    first_key: str | None = None
    for _ in range(plan.max_repairs + 1):
        try:
            response, cached, timing, key = _call(attempt, ref, provider, model, messages)
        except ModelError as exc:
            error = _classified(plan, exc)
            attempt.failures.append((ref, error.fault, str(error)))
            if error.fault in TRANSIENT and error.retry_after is not None:
                attempt.retry_after = max(attempt.retry_after or 0.0, error.retry_after)
            if error.fault in TRANSIENT and not plan.fallback_on_transient:
                raise error from exc
            return None
        # The answer is cached under the model's first request, which is what an
        # identical request will ask again.
        first_key = key if first_key is None else first_key
        record = _Record(attempt, ref, messages, response, cached, timing, first_key)
        try:
            value = _value(plan, response.text)
        except Invalid as problem:
            record.write("invalid", error=str(problem))
            messages = repair(messages, response.text, problem)
            continue
        return _judge(attempt, record, value, response, ref == plan.models[-1])
    attempt.failures.append((ref, "invalid", f"still invalid after {plan.max_repairs} repairs"))
    return None


def _judge(
    attempt: _Attempt, record: _Record, value: Any, response: ChatResponse, last: bool
) -> Answer | None:
    plan = attempt.plan
    try:
        score = conf.measure(plan.confidence, value, response)
    except ValueError as exc:
        record.write("invalid", error=f"confidence: {exc}")
        attempt.failures.append((record.ref, "invalid", f"confidence: {exc}"))
        return None
    route = conf.route(score, plan.min_confidence, plan.on_low)
    output = value if plan.adapter is None else plan.adapter.dump_python(value, mode="json")
    answer = Answer(output, record.ref, score, record.prompt_hash, route)
    if route == "fallback":
        record.write("low_confidence", confidence=score)
        if attempt.doubtful is None or (score or 0) > (attempt.doubtful.confidence or 0):
            attempt.doubtful = Answer(output, record.ref, score, record.prompt_hash, "review")
        return None
    record.write("ok" if route == "accept" else "review", confidence=score, chosen=True)
    if route == "accept" and record.cache_key is not None and not record.cached:
        # Only an answer that was used is worth giving again.
        kit = attempt.kit
        ttl = plan.cache_ttl or 0.0
        _cache(kit).put(record.cache_key, json.dumps(response.text), now=kit.clock.now(), ttl=ttl)
    return answer


def _value(plan: Plan, text: str) -> Any:
    return text if plan.adapter is None else parse(text, plan.adapter)


def _classified(plan: Plan, error: ModelError) -> ModelError:
    if plan.classify is None:
        return error
    fault = plan.classify(error)
    return error if fault is None else reclassified(error, fault)


# -- one call ----------------------------------------------------------------------------


def _call(
    attempt: _Attempt, ref: str, provider: Provider, model: str, messages: list[Message]
) -> tuple[ChatResponse, bool, tuple[float, float], str | None]:
    """Make one call (or answer it from the cache): the response, whether it was cached,
    when it started and how long it took, and its cache key. A faulted call is recorded
    here."""
    kit, plan = attempt.kit, attempt.plan
    request = ChatRequest(
        model=model,
        messages=messages,
        schema=plan.schema,
        schema_name=_schema_name(plan.step),
        timeout=plan.timeout,
        temperature=plan.temperature,
        max_tokens=plan.max_tokens,
        logprobs=conf.wants_logprobs(plan.confidence),
        params=dict(plan.params),
    )
    key = _cache_key(ref, request) if plan.cache_ttl else None
    cached = None if key is None else _cache(kit).get(key, kit.clock.now())
    started = kit.clock.now()
    if cached is not None:
        text = json.loads(cached)
        return ChatResponse(text, Usage(), "cached", model), True, (started, 0.0), key
    _check_budget(attempt, ref, provider, request)
    reservation = _reserve(attempt, ref, request)
    began = time.monotonic()
    try:
        response = _checked(provider.complete(request), ref)
    except ModelError as exc:
        timing = (started, time.monotonic() - began)
        _Record(attempt, ref, messages, None, False, timing, key).write(exc.fault, error=str(exc))
        raise
    latency = time.monotonic() - began
    if reservation is not None:
        _limits(kit).reconcile(reservation, response.usage.total)
    return response, False, (started, latency), key


def _checked(response: ChatResponse, ref: str) -> ChatResponse:
    """A provider's reply as the rest of the loop may trust it: text that is a string
    (else a server error, recorded and retried like one); token counts that are whole
    numbers >= 0 (an unreadable count is taken as 0 rather than priced); a finish reason
    that is text; log-probabilities that are numbers (else none)."""
    text = getattr(response, "text", None)
    if not isinstance(text, str):
        raise ModelServerError(
            f"{ref} replied with {type(text).__name__} where text was expected; the reply "
            f"cannot be used",
            model=ref,
        )
    usage = getattr(response, "usage", None)
    tokens = [_count(getattr(usage, name, 0)) for name in ("input_tokens", "output_tokens")]
    finish = getattr(response, "finish_reason", None)
    logprobs = getattr(response, "logprobs", None)
    if not (
        isinstance(logprobs, tuple | list)
        and all(isinstance(p, int | float) and math.isfinite(p) for p in logprobs)
    ):
        logprobs = None
    return ChatResponse(
        text,
        Usage(*tokens),
        None if finish is None else str(finish),
        str(getattr(response, "model", "") or ""),
        None if logprobs is None else tuple(float(p) for p in logprobs),
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _check_budget(attempt: _Attempt, ref: str, provider: Provider, request: ChatRequest) -> None:
    site, kit = attempt.site, attempt.kit
    if not site.run_id:
        return
    try:
        budget, spent = kit.ledger.budget(site.run_id)
    except CorruptRecordError as exc:  # unreadable is not unlimited: make no call
        raise BudgetExceededError(
            f"run {site.run_id!r}: its budget cannot be checked, so the call to {ref} was "
            f"not made: {exc}"
        ) from None
    if budget is None:
        return
    usage = _estimate(request)
    estimate = kit.prices.cost(provider.name, provider.pricing_id, request.model, usage)
    if spent + estimate.usd > budget:
        raise BudgetExceededError(
            f"run {site.run_id!r}: a call to {ref} (about ${estimate.usd:.4f}) would take the "
            f"run past its budget of ${budget:.4f} (${spent:.4f} spent); the call was not "
            f"made. Raise it with `surestep budget {site.run_id} --usd N` and redrive the run"
        )


def _estimate(request: ChatRequest) -> Usage:
    chars = len(json.dumps(request.messages)) + len(json.dumps(request.schema or {}))
    return Usage(chars // 4 + 1, request.max_tokens or DEFAULT_OUTPUT_ESTIMATE)


def _reserve(attempt: _Attempt, ref: str, request: ChatRequest) -> str | None:
    """Take a place under the model's shared rate limit; None when it has none."""
    kit = attempt.kit
    limit = kit.limits.get(ref)
    if limit is None:
        return None
    tokens = _estimate(request).total
    waited = 0.0
    while True:
        verdict = _limits(kit).reserve(
            ref, rpm=limit.rpm, tpm=limit.tpm, tokens=tokens, now=kit.clock.now()
        )
        if isinstance(verdict, Admitted):
            return verdict.reservation_id
        wait = float(verdict.seconds)
        if waited + wait > MAX_LOCAL_WAIT:
            raise ModelRateLimitedError(
                f"{ref} is at its shared rate limit (rpm={limit.rpm}, tpm={limit.tpm}); "
                f"the next place frees in {wait:.1f}s",
                model=ref,
                retry_after=wait,
            )
        time.sleep(wait)
        waited += wait


def _limits(kit: LLMKit) -> RateLedger:

    return RateLedger(kit.store)


def _cache(kit: LLMKit) -> ResponseCache:

    return ResponseCache(kit.store)


def _cache_key(ref: str, request: ChatRequest) -> str:
    params = {
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "logprobs": request.logprobs,
        **request.params,
    }
    schema_hash = None if request.schema is None else digest(request.schema)
    key: str = cache_key(ref, digest(request.messages), schema_hash, params)
    return key


def _schema_name(step: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in step)
    return cleaned[:64] or "output"


class _Record:
    """A call that ended, to be written to the ledger once its outcome is known."""

    def __init__(
        self,
        attempt: _Attempt,
        ref: str,
        messages: list[Message],
        response: ChatResponse | None,
        cached: bool,
        timing: tuple[float, float],
        cache_key: str | None,
    ) -> None:
        self.attempt, self.ref, self.response = attempt, ref, response
        self.cached, self.cache_key = cached, cache_key
        self.started, self.latency = timing
        self.prompt_hash = digest(messages)

    def write(
        self,
        outcome: str,
        *,
        error: str | None = None,
        confidence: float | None = None,
        chosen: bool = False,
    ) -> None:
        attempt, response = self.attempt, self.response
        kit, site = attempt.kit, attempt.site
        provider_name, model = self.ref.split(":", 1)
        usage = response.usage if response is not None else Usage()
        provider, _ = kit.resolve(self.ref)
        quote = kit.prices.cost(provider_name, provider.pricing_id, model, usage)
        attempt.seq += 1
        call = ModelCall(
            run_id=site.run_id,
            position=site.position,
            attempt=site.attempt,
            seq=attempt.seq,
            workflow=site.workflow,
            step=site.step or attempt.plan.step,
            provider=provider_name,
            model=model,
            prompt_hash=self.prompt_hash,
            schema_hash=attempt.plan.schema_hash,
            outcome=outcome,
            error=None if error is None else error[:2000],
            finish_reason=None if response is None else response.finish_reason,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=0.0 if self.cached else quote.usd,
            priced=quote.priced,
            price_version=quote.version,
            latency=self.latency,
            confidence=confidence,
            chosen=chosen,
            cached=self.cached,
            started_at=self.started,
        )
        if site.run_id:
            kit.ledger.record(call)
        if kit.hooks.on_model_call:
            Hooks.emit(kit.hooks.on_model_call, call)
