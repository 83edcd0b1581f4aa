from __future__ import annotations

import random

import pytest

from surestep import ConfigurationError, Retry
from surestep.retry import Escalate, GiveUp, RetryAfter


def test_exponential_backoff_without_jitter_is_capped() -> None:
    policy = Retry(max_attempts=10, initial_delay=1.0, backoff=2.0, max_delay=10.0, jitter=False)
    delays = [policy.decide(n, ConnectionError()) for n in range(1, 7)]
    assert delays == [
        RetryAfter(1.0),
        RetryAfter(2.0),
        RetryAfter(4.0),
        RetryAfter(8.0),
        RetryAfter(10.0),
        RetryAfter(10.0),
    ]


def test_jitter_stays_between_half_and_the_full_delay() -> None:
    policy = Retry(max_attempts=50, initial_delay=1.0, backoff=2.0, max_delay=60.0)
    rng = random.Random(7)
    for attempt in range(1, 10):
        base = min(60.0, 2.0 ** (attempt - 1))
        samples = [policy.delay_for(attempt, rng) for _ in range(200)]
        assert all(base / 2 <= s <= base for s in samples)
        assert max(samples) - min(samples) > base / 4  # it really spreads


def test_exhaustion_escalates_on_the_last_attempt() -> None:
    policy = Retry(max_attempts=3, jitter=False)
    assert isinstance(policy.decide(2, TimeoutError()), RetryAfter)
    decision = policy.decide(3, TimeoutError())
    assert decision == Escalate("3 of 3 attempts failed")


def test_give_up_on_wins_over_retry_on() -> None:
    policy = Retry(retry_on=(Exception,), give_up_on=(ValueError,))
    assert policy.decide(1, ValueError("bad input")) == GiveUp("ValueError is in give_up_on")


def test_errors_outside_retry_on_give_up_at_once() -> None:
    policy = Retry(retry_on=(TimeoutError, ConnectionError))
    assert isinstance(policy.decide(1, ConnectionError()), RetryAfter)
    assert policy.decide(1, KeyError("x")) == GiveUp("KeyError is not in retry_on")


def test_single_attempt_policy_escalates_first_failure() -> None:
    assert isinstance(Retry(max_attempts=1).decide(1, OSError()), Escalate)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_delay": -1},
        {"backoff": 0.5},
        {"initial_delay": 600, "max_delay": 60},
        {"retry_on": ValueError},
        {"give_up_on": ("not a type",)},
    ],
)
def test_bad_policies_are_refused_with_a_clear_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Retry(**kwargs)  # type: ignore[arg-type]


class _Permanent(Exception):
    permanent = True


class _SlowDown(Exception):
    def __init__(self, after: float) -> None:
        super().__init__("slow down")
        self.retry_after = after


def test_a_permanent_error_escalates_at_once() -> None:
    decision = Retry(max_attempts=5).decide(1, _Permanent())
    assert isinstance(decision, Escalate) and "cannot succeed" in decision.reason


def test_retry_after_is_a_floor_not_a_ceiling() -> None:
    policy = Retry(max_attempts=5, initial_delay=10, jitter=False)
    assert policy.decide(1, _SlowDown(45)) == RetryAfter(45.0)
    assert policy.decide(1, _SlowDown(2)) == RetryAfter(10.0)
    assert policy.decide(1, _SlowDown(float("nan"))) == RetryAfter(10.0)
    assert isinstance(policy.decide(5, _SlowDown(45)), Escalate)
