"""The planner as a pymoo `Problem`: one integer variable per view, its ladder level index.

Objectives (all minimized):

- system latency (ms): the slowest device's inference + feature transfer, plus the
  aggregator's pooling and head (views run in parallel; `PlanContext.latencies`);
- minus the expected accuracy under independent device failures (`failures`), exact over the
  failure sets with probability > epsilon;
- energy per frame (mJ), summed over the up devices (active + radio, `device_costs`);
- minus the battery life (h) of the weakest battery-powered up device (only where the fleet has
  one: otherwise it is the same for every configuration and is left out); it is an objective of
  the front, not of NSGA-II's ranking (`search_objectives`);
- optionally total model bytes over the fleet (`"memory"`).

`objectives` names them: ("latency", "accuracy") first, then any of "energy", "battery",
"memory" (default: `default_objectives(ctx)`, latency, accuracy, energy and battery where it
applies), so the front is a real trade between latency, accuracy and energy.

Constraints (G <= 0 is met), checked cheapest first; a candidate that fails one is not scored
further, so the accuracy work is spent only where it can matter:

1. memory: every view's level fits its device (a `CostTable.fits` lookup), G = number of views
   that do not fit. `MemoryRepair` makes this hold before evaluation; the check stays so a
   candidate that bypasses the repair still never reaches the accuracy evaluation;
2. latency <= max_latency_ms (relative excess), when given;
3. nominal accuracy >= min_accuracy (one evaluator call);
4. worst accuracy over every failure set of size 1..k >= min_accuracy_k, when given;
5. only then the expected accuracy over the kept failure sets.

A check not reached is reported as violated by 1.0 (pessimistic), so candidates are ranked
lexicographically: memory, latency, nominal, worst-k. With `violation_objective` the problem
has no constraints for pymoo and the total violation (sum of the positive G) is an extra
objective instead (see `search`); the records and their feasibility are the same.

Failure sets are scored with the head's base weights renormalized over the live views (what
the C++ core does for a set without a contingency row). The plan's reported figures then use
its fitted contingency rows (`contingency`), which only replace a row where they raise val
accuracy, so the search's figures are a lower bound for weighted/mean heads and exact for max.

Every candidate ever scored is kept in `archive` (levels -> `Record`), from which the plan and
the Pareto front are chosen: all of them were measured, not only the last population.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair

from slimedge.plan.context import PlanContext
from slimedge.plan.failures import (
    AccuracyCache,
    FailureSets,
    expected_accuracy,
)

OBJECTIVES = ("latency", "accuracy", "energy", "battery", "memory")
NOT_REACHED = 1.0  # violation reported for a check a candidate never reached


def default_objectives(ctx: PlanContext) -> tuple[str, ...]:
    """latency, accuracy, energy, and battery where an up device runs on one."""
    return ("latency", "accuracy", "energy") + (("battery",) if ctx.has_battery else ())


def check_objectives(objectives: Iterable[str]) -> tuple[str, ...]:
    objectives = tuple(objectives)
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad or objectives[:2] != ("latency", "accuracy") or len(set(objectives)) != len(
            objectives):
        raise ValueError(f"objectives: expected latency,accuracy then any of energy, battery, "
                         f"memory; got {','.join(objectives)}")
    return objectives


@dataclass
class Record:
    """What the search measured for one configuration."""

    levels: tuple[int, ...]
    latency_ms: float
    model_bytes: int
    status: str  # "memory" | "latency" | "accuracy" | "accuracy_k" | "feasible"
    energy_mj: float = math.nan  # per frame, summed over the up devices
    life_h: float = math.inf  # weakest battery-powered up device; inf when none
    accuracy: float = math.nan  # nominal, val
    worst_k: float = math.nan
    expected: float = math.nan

    @property
    def feasible(self) -> bool:
        return self.status == "feasible"


class MemoryRepair(Repair):
    """Moves each view's level to the least-pruned level at or above it that fits its device
    (pruning more only ever shrinks the model on a measured ladder; if no level at or above
    fits, the most-pruned fitting level below is taken)."""

    def __init__(self, ctx: PlanContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.map = ctx.repair_map()
        if np.any(self.map < 0):
            raise ValueError("MemoryRepair: a view has no fitting level (explain before search)")

    def _do(self, problem, X, **kwargs):  # noqa: ANN001 (pymoo signature)
        x = np.clip(np.round(np.asarray(X, float)), 0, self.map.shape[1] - 1).astype(np.int64)
        x = self.ctx.canonical(x)  # one level per device; down views at a fixed level
        return self.map[np.arange(self.map.shape[0])[None, :], x]


class PlanProblem(Problem):
    """Vectorized pymoo problem over per-view level indices (see module docstring)."""

    def __init__(self, ctx: PlanContext, *, objectives: Sequence[str] | None = None,
                 cache: AccuracyCache | None = None, sets: FailureSets | None = None,
                 violation_objective: bool = False) -> None:
        objectives = check_objectives(default_objectives(ctx) if objectives is None
                                      else objectives)
        if "battery" in objectives and not ctx.has_battery:
            objectives = tuple(o for o in objectives if o != "battery")
        self.violation_objective = violation_objective
        # What NSGA-II ranks by: the objectives less the battery life, a min over (usually)
        # one device's levels that adds a dimension to the ranking without adding much trade,
        # and so thins the population near the least latency (measured on the optimality
        # tool's 8-device instances). The front (`search.pareto_front`) keeps it.
        self.search_objectives = tuple(o for o in objectives if o != "battery")
        super().__init__(n_var=ctx.views,
                         n_obj=len(self.search_objectives) + violation_objective,
                         n_ieq_constr=0 if violation_objective else 4, xl=0,
                         xu=ctx.levels - 1, vtype=int)
        self.ctx = ctx
        self.objectives = objectives
        self.cache = cache if cache is not None else AccuracyCache(ctx.evaluator,
                                                                   ctx.base_weights)
        self.sets = sets if sets is not None else ctx.failure_sets()
        c = ctx.constraints
        self.k_masks = ctx.k_masks() if c.min_accuracy_k is not None \
            else np.zeros(0, np.int64)
        self.archive: dict[tuple[int, ...], Record] = {}
        self.evaluations = 0  # candidates scored, repeats included

    # ------------------------------------------------------------------ scoring
    def assess(self, X: np.ndarray) -> list[Record]:
        """Records of the configurations X (P, V), scoring the ones not seen before."""
        ctx, c = self.ctx, self.ctx.constraints
        X = ctx.canonical(np.asarray(np.round(X), np.int64).reshape(-1, ctx.views))
        self.evaluations += len(X)
        keys = [tuple(int(j) for j in row) for row in X]
        new = {}
        for key in keys:
            if key not in self.archive and key not in new:
                new[key] = None
        if new:
            self._score(list(new), c)
        return [self.archive[k] for k in keys]

    def _score(self, keys: list[tuple[int, ...]], c) -> None:  # noqa: ANN001
        ctx = self.ctx
        X = np.array(keys, np.int64)
        rows = np.arange(ctx.views)
        fits = ctx.fits[rows[None, :], X].all(axis=1)
        lat = ctx.latencies(X)
        mem = ctx.model_bytes[rows[None, :], X].sum(axis=1)
        energy, life = ctx.energies(X), ctx.lives(X)
        recs = [Record(k, float(lat[i]), int(mem[i]), "memory", float(energy[i]),
                       float(life[i])) for i, k in enumerate(keys)]
        alive = [i for i in range(len(keys)) if fits[i]]
        for i in alive:
            recs[i].status = "latency"
        if c.max_latency_ms is not None:
            alive = [i for i in alive if lat[i] <= c.max_latency_ms]
        for i in alive:
            recs[i].status = "accuracy"
        # nominal accuracy first: one evaluator value per candidate
        nominal = self.cache.get_many([(X[i], [ctx.nominal_mask]) for i in alive])
        for i, a in zip(alive, nominal, strict=True):
            recs[i].accuracy = float(a[0])
        alive = [i for i in alive if recs[i].accuracy >= c.min_accuracy]
        for i in alive:
            recs[i].status = "accuracy_k"
        if len(self.k_masks):
            worst = self.cache.get_many([(X[i], self.k_masks) for i in alive])
            for i, a in zip(alive, worst, strict=True):
                recs[i].worst_k = float(a.min())
            alive = [i for i in alive if recs[i].worst_k >= c.min_accuracy_k]
        expected = self.cache.get_many([(X[i], self.sets.masks) for i in alive])
        for i, a in zip(alive, expected, strict=True):
            recs[i].expected = expected_accuracy(a, self.sets)
            recs[i].status = "feasible"
        for k, r in zip(keys, recs, strict=True):
            self.archive[k] = r

    def constraint_values(self, r: Record) -> list[float]:
        c = self.ctx.constraints
        g_mem = float(np.sum(~self.ctx.fits[np.arange(self.ctx.views), list(r.levels)]))
        if c.max_latency_ms is None:
            g_lat = -1.0
        else:
            g_lat = (r.latency_ms - c.max_latency_ms) / c.max_latency_ms
        g_acc = NOT_REACHED if math.isnan(r.accuracy) else c.min_accuracy - r.accuracy
        if c.min_accuracy_k is None:
            g_k = -1.0
        else:
            g_k = NOT_REACHED if math.isnan(r.worst_k) else c.min_accuracy_k - r.worst_k
        return [g_mem, g_lat, g_acc, g_k]

    def objective_values(self, r: Record, objectives: Sequence[str] | None = None
                         ) -> list[float]:
        """Minimized values of `objectives` (default: the problem's, the front's)."""
        acc = 0.0 if math.isnan(r.expected) else r.expected
        out = [r.latency_ms, -acc]
        for name in (self.objectives if objectives is None else objectives)[2:]:
            out.append({"energy": r.energy_mj, "battery": -min(r.life_h, 1e12),
                        "memory": float(r.model_bytes)}[name])
        return out

    def violation(self, r: Record) -> float:
        return float(sum(max(0.0, g) for g in self.constraint_values(r)))

    def _evaluate(self, x, out, *args, **kwargs):  # noqa: ANN001 (pymoo signature)
        recs = self.assess(np.atleast_2d(x))
        F = np.array([self.objective_values(r, self.search_objectives) for r in recs], float)
        G = np.array([self.constraint_values(r) for r in recs], float)
        if self.violation_objective:
            out["F"] = np.column_stack([F, np.maximum(G, 0.0).sum(axis=1)])
        else:
            out["F"], out["G"] = F, G

    # ------------------------------------------------------------------ results
    def feasible_records(self) -> list[Record]:
        return [r for r in self.archive.values() if r.feasible]
