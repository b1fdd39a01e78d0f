"""Exhaustive search for small instances: the true minimal-latency configuration that meets the
floors, to measure the search's optimality gap.

Configurations are visited in order of system latency, one latency value at a time: for each
distinct device time t (ascending), every combination of fitting levels whose slowest device
takes exactly t is enumerated (the devices before the first one at t below it, that one at t,
the rest at or below t: disjoint, so nothing is scored twice) and scored with the search's own
scoring (`PlanProblem.assess`: latency cap, nominal floor, worst-k floor, expected accuracy). The
first latency holding a feasible configuration gives the answer, chosen inside it by the
search's selection rule. So the oracle and the search agree on every definition and differ only
in how they visit configurations; only configurations up to the answer's latency are ever built,
which keeps 8-device instances within reach. A device with several views is one variable.
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

MAX_COMBINATIONS = 250_000  # configurations scored at most
CHUNK = 4096


@dataclass
class OracleResult:
    best: Record | None
    combinations: int  # fitting combinations in the whole space
    scored: int  # configurations scored before the answer was certain
    problem: PlanProblem


def _grid(parts: list[np.ndarray]) -> np.ndarray:
    grids = np.meshgrid(*parts, indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


def at_latency(choices: list[np.ndarray], times: list[np.ndarray], t: float) -> np.ndarray:
    """(n, G) every combination (one level per device) whose slowest device takes exactly t."""
    out = []
    for i in range(len(choices)):
        if not np.any(times[i] == t):
            continue
        parts = ([c[tm < t] for c, tm in zip(choices[:i], times[:i], strict=True)]
                 + [choices[i][times[i] == t]]
                 + [c[tm <= t] for c, tm in zip(choices[i + 1:], times[i + 1:], strict=True)])
        if all(len(p) for p in parts):
            out.append(_grid(parts))
    return np.concatenate(out) if out else np.zeros((0, len(choices)), np.int64)


def exhaustive(ctx: PlanContext, *, max_combinations: int = MAX_COMBINATIONS,
               cache: AccuracyCache | None = None) -> OracleResult:
    groups = ctx.groups()
    leads = [int(g[0]) for g in groups]
    choices = [np.flatnonzero(ctx.fits[v]) for v in leads]
    counts = [len(c) for c in choices]
    n = math.prod(counts)
    if n == 0:
        raise PlanError("oracle: some device has no fitting level (nothing to enumerate)")
    times = [ctx.total_ms[v, c] for v, c in zip(leads, choices, strict=True)]
    lo = max(float(tm.min()) for tm in times)
    ts = np.unique(np.concatenate(times))
    ts = ts[ts >= lo]
    problem = PlanProblem(ctx, cache=cache)
    cap = ctx.constraints.max_latency_ms
    base = ctx.canonical(np.zeros(ctx.views, np.int64))
    scored = 0
    for t in ts:
        if cap is not None and t + ctx.aggregator_ms > cap:
            break
        combos = at_latency(choices, times, float(t))
        if scored + len(combos) > max_combinations:
            raise PlanError(f"oracle: more than {max_combinations:,} configurations at or "
                            f"below {t + ctx.aggregator_ms:.4g} ms (levels per device: "
                            f"{counts})")
        recs: list[Record] = []
        for s in range(0, len(combos), CHUNK):
            X = np.repeat(base[None, :], len(combos[s:s + CHUNK]), axis=0)
            for gi, g in enumerate(groups):
                X[:, g] = combos[s:s + CHUNK, gi][:, None]
            recs.extend(problem.assess(X))
        scored += len(combos)
        best = choose(recs)
        if best is not None:
            return OracleResult(best, n, scored, problem)
    return OracleResult(None, n, scored, problem)
