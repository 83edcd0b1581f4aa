"""The drift statistics and verdict: pure functions, no database."""

from __future__ import annotations

import math
import random

import pytest

from surestep.observe.drift import DriftSettings, judge, ks, psi, shares


def sample(seed: int, mean: float, spread: float = 0.05, n: int = 1000) -> list[float]:
    rng = random.Random(seed)
    return [min(1.0, max(0.0, rng.gauss(mean, spread))) for _ in range(n)]


def test_identical_samples_have_no_drift() -> None:
    values = sample(1, 0.85)
    assert psi(values, values) == 0.0
    assert ks(values, values) == 0.0


def test_two_samples_of_one_distribution_stay_under_the_threshold() -> None:
    reference, recent = sample(1, 0.85), sample(2, 0.85)
    assert psi(reference, recent) < 0.02
    assert ks(reference, recent) < 0.1


def test_a_shifted_distribution_has_a_large_psi_and_ks() -> None:
    reference, recent = sample(1, 0.85), sample(2, 0.45)
    assert psi(reference, recent) > 5  # every answer moved buckets
    assert ks(reference, recent) == 1.0  # no overlap at all


def test_psi_by_hand() -> None:
    # Half in bucket 0.8-0.9 and half in 0.9-1.0, against all in 0.9-1.0: the emptied
    # bucket's share is floored at epsilon.
    reference, recent = [0.95] * 10, [0.85] * 5 + [0.95] * 5
    expected = (0.5 - 1e-4) * math.log(0.5 / 1e-4) + (0.5 - 1.0) * math.log(0.5 / 1.0)
    assert psi(reference, recent) == pytest.approx(expected)


def test_ks_by_hand() -> None:
    # F_ref jumps to 1 at 0.5; F_recent is 0.5 there: the largest gap is 0.5.
    assert ks([0.5, 0.5], [0.2, 0.9]) == 0.5
    assert ks([0.1, 0.2, 0.3], [0.7, 0.8]) == 1.0


def test_bucket_edges_and_values_outside_zero_one() -> None:
    assert shares([0.0, 0.1, 0.999, 1.0, -0.5, 1.5]) == pytest.approx(
        [2 / 6, 1 / 6, 0, 0, 0, 0, 0, 0, 0, 3 / 6]
    )
    assert shares([]) == [0.0] * 10


def test_empty_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        psi([], [0.5])
    with pytest.raises(ValueError, match="at least one sample"):
        ks([0.5], [])


def test_the_verdict() -> None:
    stable = judge("s", "p:m", sample(1, 0.85), sample(2, 0.85))
    assert stable.drifted is False and stable.psi is not None and stable.psi < 0.2
    assert (stable.recent_n, stable.reference_n) == (1000, 1000)
    shifted = judge("s", "p:m", sample(1, 0.85), sample(2, 0.6))
    assert shifted.drifted is True and shifted.ks is not None and shifted.ks > 0.5


def test_too_few_samples_give_no_verdict() -> None:
    report = judge("s", "p:m", sample(1, 0.85, n=30), sample(2, 0.2, n=29))
    assert (report.drifted, report.psi, report.ks) == (None, None, None)
    assert (report.recent_n, report.reference_n) == (29, 30)
    # The minimum is a setting.
    assert judge("s", "p:m", [0.9] * 5, [0.1] * 5, DriftSettings(min_samples=5)).drifted


def test_the_threshold_is_inclusive_and_a_setting() -> None:
    reference, recent = [0.95] * 50, [0.85] * 5 + [0.95] * 45
    index = psi(reference, recent)
    assert judge("s", "p:m", reference, recent, DriftSettings(threshold=index)).drifted
    assert not judge("s", "p:m", reference, recent, DriftSettings(threshold=index + 1e-9)).drifted


def test_ks_equals_its_definition_with_ties() -> None:
    def by_definition(a: list[float], b: list[float]) -> float:
        def cdf(xs: list[float], x: float) -> float:
            return sum(v <= x for v in xs) / len(xs)

        return max(abs(cdf(a, x) - cdf(b, x)) for x in (*a, *b))

    rng = random.Random(3)
    for _ in range(200):
        a = [round(rng.random(), rng.choice([1, 2])) for _ in range(rng.randint(1, 30))]
        b = [round(rng.random() ** 2, 1) for _ in range(rng.randint(1, 30))]
        assert ks(a, b) == pytest.approx(by_definition(a, b))
