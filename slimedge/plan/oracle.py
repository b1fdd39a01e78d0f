"""Exhaustive search for small instances: the true minimal-latency configuration that meets the
floors, to measure the search's optimality gap.

Every combination of fitting levels (memory-infeasible levels are never enumerated) is ordered
by system latency; groups of equal latency are scored in that order with the search's own
scoring (`PlanProblem.assess`: latency cap, nominal floor, worst-k floor, expected accuracy),
and the first group holding a feasible configuration gives the answer, chosen inside the group
by the search's selection rule. So the oracle and the search agree on every definition and
differ only in how they visit configurations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slimedge.plan import PlanError
from slimedge.plan.context import PlanContext
from slimedge.plan.failures import AccuracyCache
from slimedge.plan.problem import PlanProblem, Record
from slimedge.plan.search import choose

MAX_COMBINATIONS = 250_000


@dataclass
class OracleResult:
    best: Record | None
    combinations: int  # fitting combinations enumerated
    scored: int  # configurations scored before the answer was certain
    problem: PlanProblem


def combinations(ctx: PlanContext) -> np.ndarray:
    """(n, V) every combination of fitting levels."""
    choices = [np.flatnonzero(ctx.fits[v]) for v in range(ctx.views)]
    grids = np.meshgrid(*choices, indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


def exhaustive(ctx: PlanContext, *, max_combinations: int = MAX_COMBINATIONS,
               cache: AccuracyCache | None = None) -> OracleResult:
    counts = [int(ctx.fits[v].sum()) for v in range(ctx.views)]
    n = math.prod(counts)
    if n == 0:
        raise PlanError("oracle: some view has no fitting level (nothing to enumerate)")
    if n > max_combinations:
        raise PlanError(f"oracle: {n:,} combinations of fitting levels exceed the limit "
                        f"{max_combinations:,} (levels per view: {counts})")
    X = combinations(ctx)
    lat = ctx.latencies(X)
    order = np.argsort(lat, kind="stable")
    X, lat = X[order], lat[order]
    problem = PlanProblem(ctx, cache=cache)
    cap = ctx.constraints.max_latency_ms
    starts = np.flatnonzero(np.r_[True, lat[1:] != lat[:-1]])
    ends = np.r_[starts[1:], len(lat)]
    scored = 0
    for s, e in zip(starts, ends, strict=True):
        if cap is not None and lat[s] > cap:
            break
        recs = problem.assess(X[s:e])
        scored += int(e - s)
        best = choose(recs)
        if best is not None:
            return OracleResult(best, n, scored, problem)
    return OracleResult(None, n, scored, problem)
