"""Exhaustive search for small instances: the true minimal-latency configuration that meets the
floors, to measure the search's optimality gap.

Configurations are visited in order of system latency, one latency value at a time: for each
distinct device time t (ascending), every combination of fitting levels whose slowest device
takes exactly t is enumerated (`slices`: disjoint, so nothing is scored twice) and scored
with the search's own scoring (`PlanProblem.assess`: latency cap, nominal floor, worst-k
floor, expected accuracy). The
first latency holding a feasible configuration gives the answer, chosen inside it by the
search's selection rule. So the oracle and the search agree on every definition and differ only
in how they visit configurations; only configurations up to the answer's latency are ever built,
which keeps 8-device instances within reach. A device with several views is one variable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimedge.plan import PlanError
from slimedge.plan.context import PlanContext
from slimedge.plan.failures import AccuracyCache
from slimedge.plan.problem import PlanProblem, Record
from slimedge.plan.search import choose
from slimedge.plan.slices import Slices

MAX_COMBINATIONS = 250_000  # configurations scored at most
CHUNK = 4096


@dataclass
class OracleResult:
    best: Record | None
    combinations: int  # fitting combinations in the whole space
    scored: int  # configurations scored before the answer was certain
    problem: PlanProblem


def exhaustive(ctx: PlanContext, *, max_combinations: int = MAX_COMBINATIONS,
               cache: AccuracyCache | None = None) -> OracleResult:
    sl = Slices(ctx)
    counts = [len(c) for c in sl.choices]
    n = sl.combinations
    if n == 0:
        raise PlanError("oracle: some device has no fitting level (nothing to enumerate)")
    lo = max(float(tm.min()) for tm in sl.times)
    ts = np.unique(np.concatenate(sl.times))
    ts = ts[ts >= lo]
    problem = PlanProblem(ctx, cache=cache)
    cap = ctx.constraints.max_latency_ms
    scored = 0
    for t in ts:
        if cap is not None and t + ctx.aggregator_ms > cap:
            break
        combos = sl.at(float(t))
        if scored + len(combos) > max_combinations:
            raise PlanError(f"oracle: more than {max_combinations:,} configurations at or "
                            f"below {t + ctx.aggregator_ms:.4g} ms (levels per device: "
                            f"{counts})")
        recs: list[Record] = []
        for s in range(0, len(combos), CHUNK):
            recs.extend(problem.assess(sl.configurations(combos[s:s + CHUNK])))
        scored += len(combos)
        best = choose(recs)
        if best is not None:
            return OracleResult(best, n, scored, problem)
    return OracleResult(None, n, scored, problem)
