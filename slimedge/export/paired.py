"""How much accuracy did the int8 system lose against the float pipeline? A paired interval.

Both systems classify the same test frames, so their accuracies are paired: per frame, four
outcomes (both right, only float right, only int8 right, both wrong), counts a, b, c, d. The
loss is theta = acc_float - acc_int8 = (b - c) / n, and the interval around it is Newcombe's
hybrid score interval for a difference of paired proportions (Newcombe 1998, "Improved
confidence intervals for the difference between binomial proportions based on paired data",
Stat. Med. 17:2635, method 10): the Wilson score intervals of the two accuracies, combined with
the phi correlation of the 2x2 table.

Why this one: it is closed form (no resampling, so the gate is deterministic without a seed),
its coverage stays close to nominal at the small n and extreme accuracies of tiny test splits
(where the Wald interval collapses to a point when no frame disagrees), and it never leaves
[-1, 1]. A paired bootstrap needs a seed and many resamples; McNemar's exact test answers
"is the loss zero?", not "is the loss above a tolerance?".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class PairedCounts:
    """Per-frame outcomes of two classifiers on the same frames."""

    both: int  # a: both right
    only_first: int  # b: the first (float) right, the second (int8) wrong
    only_second: int  # c: the second (int8) right, the first (float) wrong
    neither: int  # d

    @property
    def n(self) -> int:
        return self.both + self.only_first + self.only_second + self.neither

    @classmethod
    def of(cls, first_right: np.ndarray, second_right: np.ndarray) -> PairedCounts:
        f, s = np.asarray(first_right, bool), np.asarray(second_right, bool)
        if f.shape != s.shape or f.ndim != 1:
            raise ValueError(f"paired outcomes: shapes {f.shape} and {s.shape} differ")
        return cls(int(np.sum(f & s)), int(np.sum(f & ~s)), int(np.sum(~f & s)),
                   int(np.sum(~f & ~s)))


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (lower, upper); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(counts: PairedCounts, confidence: float
                               ) -> tuple[float, float, float]:
    """(estimate, lower, upper) of acc_first - acc_second; each bound is one-sided at
    `confidence` (the two-sided interval has level 2 * confidence - 1)."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence: expected a value in (0.5, 1), got {confidence!r}")
    a, b, c, d, n = (counts.both, counts.only_first, counts.only_second, counts.neither,
                     counts.n)
    if n == 0:
        raise ValueError("paired difference: no frames")
    z = NormalDist().inv_cdf(confidence)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    # Newcombe's continuity-adjusted phi: without it, a table with no discordant frame has
    # phi = 1 and an interval of (almost) zero width around 0.
    num = a * d - b * c
    if num > 0:
        num = max(num - n / 2, 0.0)
    phi = num / math.sqrt(margins) if margins > 0 else 0.0
    theta = p1 - p2
    dl, eu = p1 - l1, u2 - p2
    eu1, dl2 = u1 - p1, p2 - l2
    lower = theta - math.sqrt(max(0.0, dl * dl - 2 * phi * dl * eu + eu * eu))
    upper = theta + math.sqrt(max(0.0, eu1 * eu1 - 2 * phi * eu1 * dl2 + dl2 * dl2))
    return theta, max(-1.0, lower), min(1.0, upper)
