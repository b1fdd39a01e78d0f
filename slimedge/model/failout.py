"""Failout: drop whole views of a training sample through the live mask.

The head must classify from whatever views survive, so during training each sample loses a
random set of views (their features are masked at pooling, the image itself is untouched). A
sample always keeps at least one live view.

Samplers (``failout_rate`` is always the expected fraction of views dropped per sample):

- ``"bernoulli"``: each view is dropped independently; a sample that would lose every view
  keeps one at random. The per-view drop probability is raised slightly so that, after that
  correction, the mean drop fraction is exactly the rate. Reachable rates: ``< (V-1)/V``.
- ``"uniform_k"``: a fraction ``q`` of samples lose ``k`` views, ``k`` uniform on ``0 … V-1``
  (the others lose none), ``q`` set so the mean drop fraction is the rate. Heavy failures
  (most views gone) are as likely as light ones, which Bernoulli dropping almost never makes.
  Reachable rates: ``<= (V-1)/(2V)``.

Schedules (the rate used in a given epoch; high rates from the start slow convergence):

- ``"constant"``: the target rate from the first epoch;
- ``"warmup"``: 0 for ``warmup_epochs`` epochs, then the target rate;
- ``"ramp"``: 0 for ``warmup_epochs`` epochs, then linear up to the target over
  ``ramp_epochs`` epochs.
"""

from __future__ import annotations

import numpy as np

from slimedge.model.pooling import ModelConfigError

FAILOUT_SAMPLERS: tuple[str, ...] = ("bernoulli", "uniform_k")
FAILOUT_SCHEDULES: tuple[str, ...] = ("constant", "warmup", "ramp")


def max_failout_rate(views: int, sampler: str) -> float:
    """The highest mean drop fraction a sampler can reach while keeping one view live."""
    check_sampler(sampler)
    if views < 2:
        return 0.0
    return (views - 1) / views if sampler == "bernoulli" else (views - 1) / (2 * views)


def check_sampler(sampler: str, where: str = "failout_sampler") -> str:
    if sampler not in FAILOUT_SAMPLERS:
        raise ModelConfigError(
            f"{where}: unknown sampler {sampler!r} (expected one of "
            f"{list(FAILOUT_SAMPLERS)})"
        )
    return sampler


def check_schedule(schedule: str) -> str:
    if schedule not in FAILOUT_SCHEDULES:
        raise ModelConfigError(
            f"failout_schedule: unknown schedule {schedule!r} (expected one of "
            f"{list(FAILOUT_SCHEDULES)})"
        )
    return schedule


def check_rate(rate: float, views: int | None = None, sampler: str = "bernoulli",
               where: str = "failout_rate") -> float:
    """A rate in [0, 1), and (given the view count) one the sampler can reach."""
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ModelConfigError(f"{where}: expected a rate in [0, 1), got {rate!r}")
    if views is not None and rate > 0:
        top = max_failout_rate(views, sampler)
        if rate > top + 1e-12:
            raise ModelConfigError(
                f"{where}: {rate} cannot be reached with {views} views and sampler "
                f"{sampler!r} while keeping one view live (at most {top:.4f})"
            )
    return rate


def failout_rate_at(epoch: int, rate: float, schedule: str = "constant", *,
                    warmup_epochs: int = 0, ramp_epochs: int = 1) -> float:
    """The rate used in (0-based) ``epoch`` under ``schedule``."""
    check_schedule(schedule)
    if schedule == "constant":
        return float(rate)
    if epoch < warmup_epochs:
        return 0.0
    if schedule == "warmup":
        return float(rate)
    step = epoch - warmup_epochs + 1
    return float(rate) * min(1.0, step / max(1, ramp_epochs))


def full_rate_epoch(schedule: str, *, warmup_epochs: int = 0, ramp_epochs: int = 1) -> int:
    """The first (0-based) epoch that trains at the target rate."""
    check_schedule(schedule)
    if schedule == "constant":
        return 0
    if schedule == "warmup":
        return warmup_epochs
    return warmup_epochs + max(1, ramp_epochs) - 1


def _bernoulli_p(rate: float, views: int) -> float:
    """Per-view drop probability p with p - p**V / V == rate (reviving one view of the
    all-dead samples removes p**V / V of the mean drop fraction). Monotone in p: bisect."""
    lo, hi = rate, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if mid - mid**views / views < rate:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def sample_live_mask(rng: np.random.Generator, n: int, views: int, rate: float,
                     sampler: str = "bernoulli") -> np.ndarray:
    """Live mask ``(n, views)`` bool: failout at mean drop fraction ``rate``, >= 1 live per row."""
    check_rate(rate, views, sampler)
    live = np.ones((n, views), bool)
    if rate == 0.0 or n == 0:
        return live
    if sampler == "bernoulli":
        dead = rng.random((n, views)) < _bernoulli_p(rate, views)
        all_dead = np.flatnonzero(dead.all(axis=1))
        dead[all_dead, rng.integers(0, views, size=all_dead.size)] = False
    else:
        q = rate * 2 * views / (views - 1)
        k = np.where(rng.random(n) < q, rng.integers(0, views, size=n), 0)
        # The k views with the smallest random keys die: a uniform k-subset per row.
        ranks = rng.random((n, views)).argsort(axis=1).argsort(axis=1)
        dead = ranks < k[:, None]
    live &= ~dead
    return live
