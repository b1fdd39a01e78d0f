"""NSGA-II over per-view levels, with an informed initial population and a documented choice.

Initial population (then filled with seeded random levels), every member memory-repaired:

- uniform: every view at level j, for each j;
- speed-guided: for each latency threshold T, every view at its least-pruned fitting level
  whose device time is <= T (slow devices pruned more, the others just enough);
- importance-guided: views ranked by Shapley importance; at budget t, the least important view
  at level t and the most important at 0, linearly in rank;
- importance x speed: the same, ranked by the mean of importance rank and slowness rank.

Variation: SBX on the level indices with rounding (pymoo's integer recipe), then
`BottleneckMutation` (rounded polynomial mutation plus, for half of the offspring, a step
that lowers the slowest device's time and wins back accuracy on another view), then
`MemoryRepair`. Duplicates are eliminated. A tqdm bar counts generations.

Constraint handling: by default the total constraint violation is a third objective
(`violation_objective`; the constraints-as-objectives technique that pymoo also ships as
`ConstraintsAsObjective`) rather than a hard feasibility-first rule. System latency is a max
over devices, so the configurations that lower it often miss an accuracy floor by a little at
first; ranking every infeasible candidate below every feasible one discards exactly those,
and the search stalls on a latency plateau. As an objective, an infeasible candidate survives
only while nothing feasible is as fast, which keeps the search working at the frontier.
Feasibility is still decided exactly, and only feasible candidates can become the plan.

Stopping: after `generations`, or after `patience` generations without a lower feasible latency.

Selection rule (the plan): among every candidate the search scored and found feasible (fits
memory, latency <= max_latency_ms, nominal accuracy >= min_accuracy, worst accuracy over the
failure sets of size 1..k >= min_accuracy_k), the one with the lowest system latency; ties go
to the higher expected accuracy, then the higher nominal accuracy, then the fewer model bytes,
then the smaller level vector. That candidate is on the Pareto front of the feasible
candidates (the front is also written out).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.callback import Callback
from pymoo.core.mutation import Mutation
from pymoo.core.termination import Termination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.optimize import minimize
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from slimedge.plan.context import PlanContext
from slimedge.plan.failures import AccuracyCache, Runner
from slimedge.plan.problem import MemoryRepair, PlanProblem, Record

DEFAULT_POP = 64
DEFAULT_GENERATIONS = 80
DEFAULT_PATIENCE = 40


@dataclass(frozen=True)
class SearchSettings:
    pop: int = DEFAULT_POP
    generations: int = DEFAULT_GENERATIONS
    seed: int = 0
    objectives: tuple[str, ...] = ("latency", "accuracy")
    violation_objective: bool = True  # constraint violation as an objective (see module doc)
    patience: int | None = DEFAULT_PATIENCE  # stop after this many generations without a
    # lower feasible latency; None: run every generation
    progress: bool = False

    def validate(self) -> SearchSettings:
        from slimedge.plan import PlanError

        for name, low in (("pop", 4), ("generations", 1), ("patience", 1)):
            value = getattr(self, name)
            if name == "patience" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PlanError(f"{name}: expected a whole number >= {low}, got {value!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"algorithm": "NSGA-II (pymoo)", "pop": self.pop,
                "generations": self.generations, "patience": self.patience,
                "seed": self.seed, "objectives": list(self.objectives)}


@dataclass
class SearchResult:
    best: Record | None
    front: list[Record]
    problem: PlanProblem
    seconds: float
    seeds: dict[str, int] = field(default_factory=dict)
    generations: int = 0

    def stats(self) -> dict[str, Any]:
        p = self.problem
        return {
            "seconds": self.seconds,
            "generations_run": self.generations,
            "evaluations": p.evaluations,
            "unique_candidates": len(p.archive),
            "feasible_candidates": len(p.feasible_records()),
            "accuracy_evaluations": p.cache.calls,
            "accuracy_cache_hits": p.cache.hits,
            "failure_sets": len(p.sets),
            "initial_population": dict(self.seeds),
        }


# --------------------------------------------------------------------------- seeds


def _ranks01(values: np.ndarray) -> np.ndarray:
    """Rank in [0, 1] (0 = smallest value); ties share the order of appearance."""
    n = len(values)
    r = np.empty(n)
    r[np.argsort(values, kind="stable")] = np.arange(n)
    return r / max(1, n - 1)


def speed_guided(ctx: PlanContext) -> list[np.ndarray]:
    """For each latency threshold: every view at its least-pruned fitting level within it."""
    L = ctx.levels
    total = np.where(ctx.fits, ctx.total_ms, np.inf)
    out = []
    for T in np.unique(total[np.isfinite(total)]):
        ok = total <= T
        x = np.where(ok.any(axis=1), ok.argmax(axis=1), L - 1)
        out.append(x)
    return out


def importance_guided(ctx: PlanContext, importance: np.ndarray, *, with_speed: bool
                      ) -> list[np.ndarray]:
    s = 1.0 - _ranks01(np.asarray(importance, float))  # 0 = most important
    if with_speed:
        least = np.maximum(ctx.least_pruned_fitting(), 0)
        slow = _ranks01(ctx.total_ms[np.arange(ctx.views), least])  # 1 = slowest
        s = (s + slow) / 2.0
    return [np.round(t * s).astype(np.int64) for t in range(1, ctx.levels)]


def initial_population(ctx: PlanContext, pop: int, rng: np.random.Generator,
                       importance: np.ndarray | None) -> tuple[np.ndarray, dict[str, int]]:
    repair = ctx.repair_map()
    rows = np.arange(ctx.views)
    kinds: list[tuple[str, list[np.ndarray]]] = [
        ("uniform", [np.full(ctx.views, j) for j in range(ctx.levels)])]
    speed = speed_guided(ctx)
    if len(speed) > pop // 2:  # keep an even spread of thresholds
        pick = np.unique(np.round(np.linspace(0, len(speed) - 1, pop // 2)).astype(int))
        speed = [speed[i] for i in pick]
    kinds.append(("speed", speed))
    if importance is not None:
        kinds.append(("importance", importance_guided(ctx, importance, with_speed=False)))
        kinds.append(("importance_speed", importance_guided(ctx, importance, with_speed=True)))
    seen: set[tuple[int, ...]] = set()
    members: list[np.ndarray] = []
    counts: dict[str, int] = {}
    for name, xs in kinds:
        for x in xs:
            fixed = repair[rows, np.clip(x, 0, ctx.levels - 1)]
            key = tuple(int(j) for j in fixed)
            if key in seen or len(members) >= pop:
                continue
            seen.add(key)
            members.append(fixed)
            counts[name] = counts.get(name, 0) + 1
    tries = 0
    while len(members) < pop and tries < 50 * pop:
        tries += 1
        fixed = repair[rows, rng.integers(0, ctx.levels, ctx.views)]
        key = tuple(int(j) for j in fixed)
        if key not in seen:
            seen.add(key)
            members.append(fixed)
            counts["random"] = counts.get("random", 0) + 1
    return np.array(members, np.int64), counts


# --------------------------------------------------------------------------- operators


class BottleneckMutation(Mutation):
    """Polynomial mutation (rounded), then, with probability `prob` per offspring, a step on the
    latency plateau: the view on the slowest device moves to its least-pruned fitting level
    that is faster than the second-slowest device (one level more pruned if none is), and one
    other view, picked at random among those that stay within the new latency, is pruned one
    level less to win back accuracy.

    System latency is a max over devices, so most single-level changes leave it unchanged;
    this is the move that lowers it while trading accuracy between views. The offspring is
    repaired and scored like any other."""

    def __init__(self, ctx: PlanContext, prob: float = 0.5) -> None:
        super().__init__()
        self.pm = PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair())
        self.total = np.where(ctx.fits, ctx.total_ms, np.inf)
        self.step_prob = prob

    def _do(self, problem, X, random_state=None, **kwargs):  # noqa: ANN001 (pymoo signature)
        X = self.pm._do(problem, np.asarray(X, float), random_state=random_state, **kwargs)
        X = np.clip(np.round(X), 0, self.total.shape[1] - 1).astype(np.int64)
        rows = np.arange(X.shape[1])
        for i in np.flatnonzero(random_state.random(len(X)) < self.step_prob):
            t = self.total[rows, X[i]]
            order = np.argsort(-t, kind="stable")
            v, second = order[0], (t[order[1]] if len(order) > 1 else 0.0)
            faster = np.flatnonzero(self.total[v] < second)
            faster = faster[faster > X[i, v]]
            if faster.size:
                X[i, v] = faster[0]
            elif X[i, v] + 1 < self.total.shape[1]:
                X[i, v] += 1
            cap = self.total[rows, X[i]].max()
            up = [u for u in rows if u != v and X[i, u] > 0
                  and self.total[u, X[i, u] - 1] <= cap]
            if up:
                u = up[int(random_state.integers(len(up)))]
                X[i, u] -= 1
        return X


# --------------------------------------------------------------------------- search


class _Stall(Termination):
    """Stops at `n_gen` generations, or after `patience` generations in which the lowest
    latency among the feasible candidates did not go down."""

    def __init__(self, n_gen: int, patience: int | None) -> None:
        super().__init__()
        self.n_gen, self.patience = n_gen, patience
        self.best = math.inf
        self.stall = 0

    def _update(self, algorithm: Any) -> float:
        gen = int(getattr(algorithm, "n_gen", 0) or 0)
        if self.patience is not None and gen > 0:
            best = min((r.latency_ms for r in algorithm.problem.feasible_records()),
                       default=math.inf)
            self.stall = self.stall + 1 if best >= self.best else 0
            self.best = min(best, self.best)
        by_stall = 0.0 if self.patience is None else self.stall / self.patience
        return min(1.0, max(gen / self.n_gen, by_stall))


class _Progress(Callback):
    """A tqdm bar over generations, showing feasible candidates and the best latency."""

    def __init__(self, problem: PlanProblem, total: int, disable: bool) -> None:
        super().__init__()
        from tqdm import tqdm

        self.problem = problem
        self.bar = tqdm(total=total, desc="plan", unit="gen", disable=disable)

    def notify(self, algorithm: Any) -> None:
        feas = self.problem.feasible_records()
        best = min((r.latency_ms for r in feas), default=math.nan)
        self.bar.set_postfix(feasible=len(feas), best_ms=f"{best:.4g}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def choose(records: Sequence[Record]) -> Record | None:
    """The selection rule (module docstring)."""
    feasible = [r for r in records if r.feasible]
    if not feasible:
        return None
    return min(feasible, key=lambda r: (r.latency_ms, -r.expected, -r.accuracy, r.model_bytes,
                                        r.levels))


def pareto_front(problem: PlanProblem) -> list[Record]:
    """Non-dominated feasible candidates (by the problem's objectives), by latency."""
    feas = problem.feasible_records()
    if not feas:
        return []
    F = np.array([problem.objective_values(r) for r in feas])
    idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
    front = [feas[i] for i in idx]
    return sorted(front, key=lambda r: (r.latency_ms, -r.expected, r.levels))


def make_cache(ctx: PlanContext, *, runner: Runner | None = None,
               client: Any = None) -> AccuracyCache:
    """The accuracy memo; with a Dask `client`, jobs run on its workers (the evaluator is
    scattered once); with a `runner` (`runner(f, jobs) -> list`), jobs run through it."""
    if client is not None:
        from pymoo.parallelization.dask import DaskParallelization  # imports no dask itself

        ref = client.scatter(ctx.evaluator, broadcast=True)
        return AccuracyCache(ctx.evaluator, ctx.base_weights,
                             runner=DaskParallelization(client), evaluator_ref=ref)
    return AccuracyCache(ctx.evaluator, ctx.base_weights, runner=runner)


def search(ctx: PlanContext, settings: SearchSettings = SearchSettings(), *,
           importance: np.ndarray | None = None, cache: AccuracyCache | None = None
           ) -> SearchResult:
    """Run NSGA-II on `ctx` (memory must be satisfiable: see `explain.memory_reasons`)."""
    settings = settings.validate()
    t0 = time.perf_counter()
    problem = PlanProblem(ctx, objectives=settings.objectives, cache=cache,
                          violation_objective=settings.violation_objective)
    rng = np.random.default_rng(settings.seed)
    X0, counts = initial_population(ctx, settings.pop, rng, importance)
    algorithm = NSGA2(
        pop_size=settings.pop,
        sampling=X0,
        crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
        mutation=BottleneckMutation(ctx),
        repair=MemoryRepair(ctx),
        eliminate_duplicates=True,
    )
    progress = _Progress(problem, settings.generations, disable=not settings.progress)
    stop = _Stall(settings.generations, settings.patience)
    try:
        minimize(problem, algorithm, stop, seed=settings.seed, callback=progress,
                 verbose=False, copy_algorithm=False)
    finally:
        progress.close()
    best = choose(list(problem.archive.values()))
    return SearchResult(best, pareto_front(problem), problem, time.perf_counter() - t0, counts,
                        int(algorithm.n_gen or 0))
