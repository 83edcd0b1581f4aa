"""The retry policy: a pure function from (attempt, error) to a decision.

No I/O happens here; the runtime records the decision and acts on it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from surestep.errors import ConfigurationError


@dataclass(frozen=True)
class RetryAfter:
    """Try again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    """The error is not worth retrying: the step fails and its error reaches the workflow."""

    reason: str


@dataclass(frozen=True)
class Escalate:
    """Retries are exhausted: apply the step's ``on_exhausted`` route."""

    reason: str


Decision = RetryAfter | GiveUp | Escalate


@dataclass(frozen=True)
class Retry:
    """How a step is retried.

    ``attempt`` counts from 1. The delay before attempt ``n + 1`` is
    ``min(max_delay, initial_delay * backoff ** (n - 1))``; with ``jitter`` it is drawn
    uniformly from ``[delay / 2, delay]`` ("equal jitter"), which spreads retries of many
    runs failing together while keeping a floor under each wait.

    An error of a type in ``give_up_on`` is never retried; an error of a type not in
    ``retry_on`` is not retried either. Both give up at once. When ``max_attempts``
    attempts have failed, the decision is to escalate (dead letter, or later review).

    An error may say more about itself: one with ``permanent = True`` (a budget spent, a
    request every model refused) escalates at once, since repeating it cannot help; one
    with ``retry_after`` seconds (a provider's 429 ``Retry-After``) is not retried sooner.

    >>> Retry(max_attempts=3, initial_delay=1, jitter=False).decide(1, TimeoutError())
    RetryAfter(delay=1.0)
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"Retry(max_attempts={self.max_attempts}): must be >= 1")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("Retry delays must be >= 0 seconds")
        if self.initial_delay > self.max_delay:
            raise ConfigurationError(
                f"Retry(initial_delay={self.initial_delay}) exceeds max_delay={self.max_delay}; "
                f"raise max_delay too, or every wait would be capped at {self.max_delay}s"
            )
        if self.backoff < 1:
            raise ConfigurationError(f"Retry(backoff={self.backoff}): must be >= 1")
        for name in ("retry_on", "give_up_on"):
            types = getattr(self, name)
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise ConfigurationError(
                    f"Retry({name}=...) must be a tuple of exception classes, got {types!r}"
                )

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        if not self.jitter:
            return float(base)
        draw = (rng or random).random()
        return base / 2 + draw * base / 2

    def decide(
        self, attempt: int, error: BaseException, rng: random.Random | None = None
    ) -> Decision:
        """Decide what happens after attempt number ``attempt`` failed with ``error``."""
        kind = type(error).__name__
        if isinstance(error, self.give_up_on):
            return GiveUp(f"{kind} is in give_up_on")
        if not isinstance(error, self.retry_on):
            return GiveUp(f"{kind} is not in retry_on")
        if getattr(error, "permanent", False) is True:
            return Escalate(f"{kind} cannot succeed by retrying")
        if attempt >= self.max_attempts:
            return Escalate(f"{attempt} of {self.max_attempts} attempts failed")
        delay = self.delay_for(attempt, rng)
        after = getattr(error, "retry_after", None)
        if isinstance(after, int | float) and math.isfinite(after) and after > delay:
            delay = float(after)
        return RetryAfter(delay)


#: The policy of a step declared without ``retry=``.
DEFAULT_RETRY = Retry()
