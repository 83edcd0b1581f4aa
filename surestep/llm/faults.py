"""What can go wrong in a model call, each with its own type and default class.

A fault is *transient* (timeouts, connection errors, 5xx, 429: the same call may work
later, so the step is retried with a durable backoff, after ``Retry-After`` for a 429),
*rejected* (other 4xx, a context too long: this model will not take this request, so the
next model of the chain is tried), or *invalid* (a reply that fails the schema after
every repair: also the next model). Users reclassify with ``classify=`` on the step.
"""

from __future__ import annotations

import math
from typing import Literal

from surestep.errors import SurestepError

Fault = Literal["timeout", "connection", "server_error", "rate_limited", "rejected", "invalid"]

#: Faults that a later attempt of the same call may not meet.
TRANSIENT: frozenset[str] = frozenset({"timeout", "connection", "server_error", "rate_limited"})


class ModelError(SurestepError):
    """A model call failed. ``fault`` says how; ``status`` is the HTTP status, if any;
    ``retry_after`` is the seconds the provider asked to wait (429), if it said."""

    code = "model_error"
    fault: Fault = "rejected"

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status = status
        self.retry_after = _sane_wait(retry_after)


#: The longest Retry-After honoured: a server's "retry in 1e300 seconds" (a bug, a hostile
#: gateway) would otherwise park the run for ever and past what a date can show.
MAX_RETRY_AFTER = 86_400.0


def _sane_wait(seconds: float | None) -> float | None:
    """A Retry-After as a wait the run can take: None when it is not a number >= 0,
    capped at :data:`MAX_RETRY_AFTER`."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    if not math.isfinite(seconds) and seconds != math.inf:
        return None
    return None if seconds < 0 else min(float(seconds), MAX_RETRY_AFTER)


class ModelTimeoutError(ModelError):
    code = "model_timeout"
    fault: Fault = "timeout"


class ModelConnectionError(ModelError):
    code = "model_connection"
    fault: Fault = "connection"


class ModelServerError(ModelError):
    code = "model_server_error"
    fault: Fault = "server_error"


class ModelRateLimitedError(ModelError):
    code = "model_rate_limited"
    fault: Fault = "rate_limited"


class ModelRequestError(ModelError):
    """The provider refused the request (400, 401, 403, 404, 422, context too long)."""

    code = "model_request_rejected"
    fault: Fault = "rejected"


class ModelOutputError(ModelError):
    """The reply did not satisfy the schema, after every repair."""

    code = "model_output_invalid"
    fault: Fault = "invalid"


def fault_for_status(status: int) -> type[ModelError]:
    """The fault type of an HTTP error status."""
    if status == 429:
        return ModelRateLimitedError
    if status >= 500 or status in (408, 409):
        return ModelServerError
    return ModelRequestError


class BudgetExceededError(SurestepError):
    """A model call would take the run past its budget, so it was not made. Retrying
    cannot help: the step goes to its ``on_exhausted`` route; raise the budget
    (``surestep budget RUN --usd N``) and redrive the run to go on."""

    code = "budget_exceeded"
    permanent = True


class ModelChainError(SurestepError):
    """Every model of an LLM step's chain failed in one attempt. It is retried (with the
    longest ``Retry-After`` any model asked for) when at least one failure was transient;
    otherwise it is permanent and goes to the step's ``on_exhausted`` route at once."""

    code = "model_chain_exhausted"

    def __init__(self, step: str, failures: list[tuple[str, str, str]]) -> None:
        listed = "; ".join(f"{model}: {fault} ({message})" for model, fault, message in failures)
        super().__init__(f"LLM step {step!r}: every model failed: {listed}")
        self.failures = failures
        self.permanent = not any(fault in TRANSIENT for _, fault, _ in failures)
        self.retry_after: float | None = None


def reclassified(error: ModelError, fault: str) -> ModelError:
    """``error`` as the fault a user's ``classify=`` says it is."""
    kinds: dict[str, type[ModelError]] = {
        cls.fault: cls
        for cls in (
            ModelTimeoutError,
            ModelConnectionError,
            ModelServerError,
            ModelRateLimitedError,
            ModelRequestError,
            ModelOutputError,
        )
    }
    if fault not in kinds:
        raise ValueError(f"classify= returned {fault!r}; use one of {', '.join(sorted(kinds))}")
    if fault == error.fault:
        return error
    again = kinds[fault](
        str(error), model=error.model, status=error.status, retry_after=error.retry_after
    )
    again.__cause__ = error
    return again
