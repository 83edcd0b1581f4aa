"""Confidence drift: has a step's model grown more (or less) sure of its answers?

Pure functions over two samples of confidences in [0, 1]: those of a reference window
(by default the 7 days before the last hour) and those of a recent window (the last
hour). Reading the samples and acting on the verdict live elsewhere
(:mod:`surestep.observe.quality`, :class:`surestep.observe.drift_watch.DriftWatch`).

- :func:`psi`, the population stability index over 10 fixed buckets of [0, 1]:
  ``sum((recent - reference) * ln(recent / reference))`` over the buckets' shares, each
  share floored at a small epsilon so that an empty bucket does not divide by zero;
- :func:`ks`, the two-sample Kolmogorov-Smirnov statistic: the largest gap between the
  two empirical distribution functions (0 the same, 1 disjoint);
- :func:`judge`, the verdict: drifted when the PSI reaches the threshold (0.2), and no
  verdict at all below 30 samples on either side.

>>> round(psi([0.9] * 50, [0.9] * 50), 6)
0.0
>>> judge("extract", "openai:gpt-4o", [0.9] * 50, [0.5] * 50).drifted
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The buckets of the PSI: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
BUCKETS = 10
#: The floor of a bucket's share: an empty bucket on one side would make the PSI
#: infinite; 1e-4 keeps it finite while an emptied bucket still weighs heavily.
EPSILON = 1e-4
#: The usual rule of thumb reads a PSI below 0.1 as stable, 0.1-0.25 as a moderate shift
#: worth watching and above 0.25 as a significant one. 0.2 flags a shift before it is
#: significant, without firing on the week-to-week noise below 0.1.
PSI_THRESHOLD = 0.2
#: Below this many samples on either side there is no verdict: with 10 buckets, a PSI
#: of a handful of answers swings past any threshold by chance.
MIN_SAMPLES = 30


@dataclass(frozen=True)
class DriftSettings:
    """The windows, cap and thresholds of a drift check (seconds, samples, PSI)."""

    recent: float = 3600.0
    reference: float = 7 * 86400.0  # the span before the recent window
    threshold: float = PSI_THRESHOLD
    min_samples: int = MIN_SAMPLES
    #: The most recent samples read per side and (step, model): a check costs at most
    #: this many index entries per side, however busy the step.
    limit: int = 5000


@dataclass(frozen=True)
class DriftReport:
    """The drift verdict of one (step, model).

    ``drifted`` is None, and ``psi`` and ``ks`` too, when either side has fewer than
    the minimum samples: too few answers to tell a shift from chance.
    """

    step: str
    model: str  # provider:model
    psi: float | None
    ks: float | None
    recent_n: int
    reference_n: int
    drifted: bool | None


def shares(samples: Sequence[float], buckets: int = BUCKETS) -> list[float]:
    """The share of ``samples`` in each of ``buckets`` equal buckets of [0, 1]; values
    outside [0, 1] count in the first or last bucket."""
    counts = [0] * buckets
    for value in samples:
        counts[min(buckets - 1, max(0, int(value * buckets)))] += 1
    total = len(samples)
    return [n / total if total else 0.0 for n in counts]


def psi(
    reference: Sequence[float],
    recent: Sequence[float],
    buckets: int = BUCKETS,
    epsilon: float = EPSILON,
) -> float:
    """The population stability index of ``recent`` against ``reference`` (0: the same
    distribution; larger, a larger shift)."""
    if not reference or not recent:
        raise ValueError("psi needs at least one sample on each side")
    total = 0.0
    for expected, actual in zip(shares(reference, buckets), shares(recent, buckets), strict=True):
        expected, actual = max(expected, epsilon), max(actual, epsilon)
        total += (actual - expected) * math.log(actual / expected)
    return total


def ks(reference: Sequence[float], recent: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest distance between the two
    samples' empirical distribution functions, in [0, 1]."""
    if not reference or not recent:
        raise ValueError("ks needs at least one sample on each side")
    a, b = sorted(reference), sorted(recent)
    # One walk over both sorted samples; the gap can only peak just after a sample value,
    # once every sample equal to it is counted on both sides.
    i = j = 0
    gap = 0.0
    while i < len(a) and j < len(b):
        x = min(a[i], b[j])
        while i < len(a) and a[i] == x:
            i += 1
        while j < len(b) and b[j] == x:
            j += 1
        gap = max(gap, abs(i / len(a) - j / len(b)))
    return gap


def judge(
    step: str,
    model: str,
    reference: Sequence[float],
    recent: Sequence[float],
    settings: DriftSettings | None = None,
) -> DriftReport:
    """The verdict for one (step, model) from its two samples."""
    s = settings or DriftSettings()
    if min(len(reference), len(recent)) < s.min_samples:
        return DriftReport(step, model, None, None, len(recent), len(reference), None)
    index = psi(reference, recent)
    return DriftReport(
        step, model, index, ks(reference, recent), len(recent), len(reference), index >= s.threshold
    )
