"""The search: a latency scan over device-time thresholds, exact enumeration of the small
boxes, energy chains for the front, NSGA-II.

System latency is a max over devices, so it takes at most V x L distinct values (a device time at
some level), and below a threshold T the allowed levels of each view form a box (those that fit
and take <= T). The search works on that structure first, then lets NSGA-II refine the front:

1. Scan: a binary search over the thresholds for the least one whose box holds a feasible
   configuration. A probe scores the box's corner (every device at its least-pruned level
   within T); where the corner misses the nominal or worst-k floor, a steepest ascent inside
   the box (the best move of one device to another level of the box per step; pairs of moves
   where no single one helps) raises the nominal accuracy, then the worst accuracy over the
   currently worst failure sets. A corner that misses the nominal floor by more than
   `ASCENT_MARGIN` is taken as a box with none (an ascent from a corner 9 points under the
   floor reached it on an 8-device oracle instance, so the margin is wide). A feasible
   configuration of a smaller box lies in every larger one, so what the probes find grows
   with the threshold, as a binary search needs; the thresholds below the answer are then
   probed one by one, but for those step 2 enumerates.
2. Exact below the answer: measured accuracy is not monotone in the levels (pruning one view
   one level more raises the val accuracy in about a quarter of random moves on the demo
   ladder, a third on the synthetic one), so no corner bounds its box and the ascent stops at
   local optima: on the oracle's instances the only feasible configuration of the optimal box
   is often its accuracy maximum, three or four devices away from where the ascent stops. So
   every configuration faster than the scan's answer is scored, slice by slice in ascending
   latency (`slices`), while the box holds at most `enumerate_budget` configurations; the
   first slice with a feasible configuration holds the optimum (chosen inside it by the
   selection rule), and where every faster slice was scored the answer is proven
   (`stages["exact"]["proven"]`). Large fleets (mixed12: 10^10 configurations below its
   fastest threshold) skip this step and rely on steps 1 and 4.
3. Chains (the front): from what a probe finds in the boxes of up to `front_thresholds`
   thresholds at and above that latency, a greedy descent in energy: each step prunes one
   device one more level, the one that saves the most energy per nominal accuracy lost, while
   the nominal floor holds; points along the chain are then scored in full (worst-k, expected
   accuracy), so the front trades latency, accuracy and energy (and battery life where a device
   runs on one).
4. NSGA-II (pymoo) on `PlanProblem`, seeded with the front found so far, the candidates faster
   than it that miss a floor by the least, and the informed population below.

The oracle (`oracle`, `tools/plan_optimality.py`) measures how often the whole is exact.

Initial population of NSGA-II (then filled with seeded random levels), every member repaired:

- uniform: every view at level j, for each j;
- speed-guided: for each latency threshold T, every view at its least-pruned fitting level
  whose device time is <= T (slow devices pruned more, the others just enough);
- importance-guided: views ranked by Shapley importance; at budget t, the least important view
  at level t and the most important at 0, linearly in rank;
- importance x speed: the same, ranked by the mean of importance rank and slowness rank.

Variation: SBX on the level indices with rounding (pymoo's integer recipe), then
`BottleneckMutation` (rounded polynomial mutation plus, for half of the offspring, a step
that lowers the slowest device's time and wins back accuracy on another view), then
`MemoryRepair` (which also keeps a device's views at one level). Duplicates are eliminated.
Constraint violation is an extra objective (`violation_objective`, pymoo's constraints-as-
objectives technique), so near-feasible fast candidates survive while nothing feasible is as
fast. Stopping: after `generations`, or once the lowest feasible latency has not gone down for
`stall_evaluations` accuracy evaluations (or `patience` generations, when set).

Selection rule (the plan), among every candidate scored and found feasible (fits memory,
latency <= max_latency_ms, nominal accuracy >= min_accuracy, worst accuracy over the failure
sets of 1..k devices >= min_accuracy_k), by `prefer`:

- `latency` (default): the lowest system latency; ties: higher expected accuracy, lower energy,
  higher nominal accuracy, fewer model bytes, smaller level vector;
- `energy`: the lowest energy per frame; ties: lower latency, then as above;
- `balanced`: on the Pareto front, latency, energy and expected accuracy are each scaled to
  [0, 1] over the front (0 = the front's best); the candidate whose worst scaled regret is the
  smallest (a Chebyshev knee); ties: lower latency, then as above.
Every choice is on the Pareto front of the feasible candidates (the front is written out).
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
from slimedge.plan.problem import MemoryRepair, PlanProblem, Record, check_objectives
from slimedge.plan.slices import Slices

DEFAULT_POP = 32
DEFAULT_GENERATIONS = 60
DEFAULT_PATIENCE = None  # generations without a lower latency; None: by evaluations only
DEFAULT_STALL_EVALUATIONS = 3000  # accuracy evaluations without a lower latency
DEFAULT_FRONT_THRESHOLDS = 4
CHAIN_POINTS = 4  # points scored in full along each energy chain (the chain's end included)
ASCENT_PASSES = 4  # steps of the ascent inside one box
ASCENT_MARGIN = 0.15  # a box whose corner misses the nominal floor by more is taken as empty
PAIR_POOL = 8  # single moves whose pairs are tried when none helps alone
ACTIVE_SETS = 5  # worst failure sets the worst-k ascent raises at a time
ENUMERATE_BUDGET = 50_000  # boxes of at most this many configurations are enumerated exactly
ENUMERATE_CHUNK = 4096  # configurations scored per batch while enumerating
PREFER = ("latency", "energy", "balanced")


@dataclass(frozen=True)
class SearchSettings:
    pop: int = DEFAULT_POP
    generations: int = DEFAULT_GENERATIONS  # NSGA-II generations after scan and chains; 0: none
    seed: int = 0
    objectives: tuple[str, ...] | None = None  # None: `problem.default_objectives(ctx)`
    violation_objective: bool = True  # constraint violation as an objective (see module doc)
    patience: int | None = DEFAULT_PATIENCE  # stop NSGA-II after this many generations
    # without a lower feasible latency; None: no such limit
    stall_evaluations: int | None = DEFAULT_STALL_EVALUATIONS  # ... or this many accuracy
    # evaluations without one; None: no such limit
    progress: bool = False
    prefer: str = "latency"  # selection rule (module docstring)
    front_thresholds: int = DEFAULT_FRONT_THRESHOLDS  # energy chains, one per threshold
    enumerate_budget: int = ENUMERATE_BUDGET  # exact below the scan's answer while the box
    # holds at most this many configurations (module docstring, 2); 0: the scan alone

    def validate(self) -> SearchSettings:
        from slimedge.plan import PlanError

        for name, low in (("pop", 4), ("generations", 0), ("patience", 1),
                          ("stall_evaluations", 1), ("front_thresholds", 0),
                          ("enumerate_budget", 0)):
            value = getattr(self, name)
            if name in ("patience", "stall_evaluations") and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PlanError(f"{name}: expected a whole number >= {low}, got {value!r}")
        if self.prefer not in PREFER:
            raise PlanError(f"prefer: expected one of {', '.join(PREFER)}, got {self.prefer!r}")
        if self.objectives is not None:
            try:
                check_objectives(self.objectives)
            except ValueError as exc:
                raise PlanError(str(exc)) from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"algorithm": "latency scan + exact small boxes + energy chains + NSGA-II (pymoo)",
                "pop": self.pop, "generations": self.generations, "patience": self.patience,
                "stall_evaluations": self.stall_evaluations,
                "seed": self.seed,
                "objectives": None if self.objectives is None else list(self.objectives),
                "prefer": self.prefer, "front_thresholds": self.front_thresholds,
                "enumerate_budget": self.enumerate_budget}


@dataclass
class SearchResult:
    best: Record | None
    front: list[Record]
    problem: PlanProblem
    seconds: float
    seeds: dict[str, int] = field(default_factory=dict)
    generations: int = 0
    stages: dict[str, Any] = field(default_factory=dict)

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
            "objectives": list(p.objectives),
            "initial_population": dict(self.seeds),
            "stages": dict(self.stages),
        }


# --------------------------------------------------------------------------- scan and chains


def thresholds(ctx: PlanContext) -> np.ndarray:
    """Distinct device times that can be the system's slowest (ascending), within the cap."""
    t = np.where(ctx.fits, ctx.total_ms, np.inf)[ctx.up]
    lo = t.min(axis=1).max()
    vals = np.unique(t[np.isfinite(t)])
    vals = vals[vals >= lo]
    cap = ctx.constraints.max_latency_ms
    if cap is not None:
        vals = vals[vals + ctx.aggregator_ms <= cap]
    return vals


def box(ctx: PlanContext, t: float) -> np.ndarray:
    """(V, L) levels allowed below threshold t: they fit and take <= t."""
    return ctx.fits & (ctx.total_ms <= t)


def corner(ctx: PlanContext, t: float) -> np.ndarray:
    """Every device at its least-pruned level within t."""
    ok = box(ctx, t)
    return ctx.canonical(np.where(ok.any(axis=1), ok.argmax(axis=1), ctx.levels - 1))


def _ascend(problem: PlanProblem, x: np.ndarray, allowed: np.ndarray, score, passes: int
            ) -> tuple[np.ndarray, float]:
    """Steepest ascent of `score` (configurations -> values, batched) inside `allowed`: each
    step scores every move of one device to another level of the box and takes the best, while
    that raises the score. Where no single move helps, pairs of the best `PAIR_POOL` single
    moves (two devices at once) are tried: measured accuracy is a step function, so two moves
    that each change nothing can together cross a floor."""
    groups = problem.ctx.groups()
    here = float(score([x])[0])
    for _ in range(passes):
        moves: list[tuple[int, int]] = []
        cands = []
        for gi, group in enumerate(groups):
            v = int(group[0])
            for j in np.flatnonzero(allowed[v]):
                if j != x[v]:
                    y = x.copy()
                    y[group] = j
                    cands.append(y)
                    moves.append((gi, int(j)))
        if not cands:
            break
        vals = np.asarray(score(cands), float)
        i = int(np.argmax(vals))
        if vals[i] > here + 1e-12:
            x, here = cands[i], float(vals[i])
            continue
        pool = [moves[k] for k in np.argsort(-vals, kind="stable")[:PAIR_POOL]]
        pairs = []
        for a in range(len(pool)):
            for b in range(a + 1, len(pool)):
                (g1, j1), (g2, j2) = pool[a], pool[b]
                if g1 != g2:
                    y = x.copy()
                    y[groups[g1]] = j1
                    y[groups[g2]] = j2
                    pairs.append(y)
        if not pairs:
            break
        pv = np.asarray(score(pairs), float)
        i = int(np.argmax(pv))
        if pv[i] <= here + 1e-12:
            break
        x, here = pairs[i], float(pv[i])
    return x, here


def best_in_box(problem: PlanProblem, t: float, start: np.ndarray) -> Record:
    """A feasible configuration inside box(t) if the ascent finds one (module docstring, 1):
    nominal accuracy is raised first; if the worst-k floor is then missed, the worst-k accuracy
    over the sets that are currently the worst few is raised while the nominal floor holds."""
    ctx, c = problem.ctx, problem.ctx.constraints
    allowed = box(ctx, t)
    x = start
    rec = problem.assess(x)[0]
    if rec.feasible or rec.status not in ("accuracy", "accuracy_k"):
        return rec
    if rec.status == "accuracy" and c.min_accuracy - rec.accuracy > ASCENT_MARGIN:
        return rec
    if rec.status == "accuracy":
        def nominal(ys):
            return np.array([a[0] for a in problem.cache.get_many(
                [(y, [ctx.nominal_mask]) for y in ys])])

        x, _ = _ascend(problem, x, allowed, nominal, ASCENT_PASSES)
        rec = problem.assess(x)[0]
    for _ in range(ASCENT_PASSES):
        if rec.status != "accuracy_k":
            return rec
        acc = problem.cache.get(x, problem.k_masks)
        worst = problem.k_masks[np.argsort(acc, kind="stable")[:ACTIVE_SETS]]

        def worst_k(ys, worst=worst):
            # the min over the active sets, ties broken by their mean (several sets are often
            # equally worst, and raising one of them is progress)
            out = []
            for a in problem.cache.get_many(
                    [(y, [ctx.nominal_mask, *worst.tolist()]) for y in ys]):
                out.append(a[1:].min() + 1e-3 * a[1:].mean() if a[0] >= c.min_accuracy
                           else -1.0)
            return np.array(out)

        y, _ = _ascend(problem, x, allowed, worst_k, 1)
        if tuple(y) == tuple(x):
            return rec
        x = y
        rec = problem.assess(x)[0]
    return rec


def scan(problem: PlanProblem, exact_budget: int = 0) -> tuple[Record | None, dict[str, int]]:
    """The least-latency feasible configuration over the thresholds (module docstring, 1): a
    binary search over them, each probe an ascent inside its box warm-started from its corner
    and from the best configuration of the largest box below it already probed (which lies in
    this box too), so what a probe finds can only grow with the threshold."""
    ctx = problem.ctx
    ts = thresholds(ctx)
    stats = {"thresholds": int(len(ts)), "probes": 0}
    if not len(ts):
        return None, stats
    found: dict[int, Record] = {}

    def probe(i: int) -> Record:
        stats["probes"] += 1
        below = [k for k in found if k < i and found[k].feasible]
        if below:  # a feasible configuration of a smaller box is in this one
            rec = found[max(below)]
        else:
            rec = best_in_box(problem, float(ts[i]), corner(ctx, float(ts[i])))
        below = [k for k in found if k < i]
        if not rec.feasible and below:
            rec = best_in_box(problem, float(ts[i]), np.array(found[max(below)].levels))
        found[i] = rec
        return rec

    hi = len(ts) - 1
    if not probe(hi).feasible:
        return None, stats
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if probe(mid).feasible:
            hi = mid
        else:
            lo = mid + 1
    # The ascent is a heuristic, so feasibility need not be monotone in the threshold: every
    # threshold below the answer not probed yet is probed too (most cost one nominal accuracy:
    # their corners are far below the floor), but for those whose box `exact_below` will
    # enumerate anyway (at most `exact_budget` configurations).
    sizes = Slices(ctx)
    for i in range(hi - 1, -1, -1):
        if i not in found and sizes.box_size(float(ts[i])) > exact_budget:
            probe(i)
    feas = [r for r in found.values() if r.feasible]
    return min(feas, key=lambda r: (r.latency_ms, -r.expected, r.levels)), stats


def exact_below(problem: PlanProblem, best: Record | None, budget: int
                ) -> tuple[Record | None, dict[str, Any]]:
    """The exact optimum where the boxes are small (module docstring, 2): every configuration
    of the slices in ascending latency, up to the one holding `best` (the scan's answer, the
    bound), while the box below stays within `budget` configurations; the first slice holding a
    feasible configuration holds the least latency (chosen inside it by the selection rule).
    `proven`: no configuration faster than the answer meets the floors (every faster slice
    was enumerated)."""
    ctx = problem.ctx
    sl = Slices(ctx)
    rows = np.arange(ctx.views)
    t_best = math.inf if best is None else float(
        ctx.total_ms[rows, np.asarray(best.levels)].max())
    stats: dict[str, Any] = {"budget": budget, "slices": 0, "enumerated": 0, "proven": False,
                             "infeasible_to_ms": None}
    for t in thresholds(ctx):
        if t > t_best:
            break  # every slice faster than the answer enumerated, none feasible
        if sl.box_size(float(t)) > budget:
            return best, stats
        combos = sl.at(float(t))
        recs: list[Record] = []
        for s in range(0, len(combos), ENUMERATE_CHUNK):
            recs.extend(problem.assess(sl.configurations(combos[s:s + ENUMERATE_CHUNK])))
        stats["slices"] += 1
        stats["enumerated"] += len(combos)
        found = choose(recs)
        if found is not None:
            stats["proven"] = True
            return found, stats
        # nothing at or below this system latency meets the floors
        stats["infeasible_to_ms"] = float(t) + ctx.aggregator_ms
    stats["proven"] = True  # none feasible below the answer (or, with no answer, anywhere)
    return best, stats


def energy_chain(problem: PlanProblem, x: np.ndarray) -> list[np.ndarray]:
    """From x, prune one device one level per step, the one losing the least nominal accuracy
    per mJ saved, while the nominal floor holds (the chain, x first). Lazy greedy: a device's
    ratio is re-measured only when it comes out on top, and taken if it still is (ratios go
    stale as other devices move, but rarely much)."""
    import heapq

    ctx, c = problem.ctx, problem.ctx.constraints
    rows = np.arange(ctx.views)
    groups = ctx.groups()

    def step(x: np.ndarray, g: int) -> np.ndarray | None:
        v = int(groups[g][0])
        nxt = [j for j in range(int(x[v]) + 1, ctx.levels) if ctx.fits[v, j]]
        if not nxt:
            return None
        y = x.copy()
        y[groups[g]] = nxt[0]
        return y

    def nominal(y: np.ndarray) -> float:
        return float(problem.cache.get(y, [ctx.nominal_mask])[0])

    def key(x: np.ndarray, acc: float, y: np.ndarray) -> tuple[float, float] | None:
        a = nominal(y)
        if a < c.min_accuracy:
            return None
        saved = float(ctx.energy_mj[rows, x].sum() - ctx.energy_mj[rows, y].sum())
        return ((acc - a) / saved if saved > 0 else math.inf, a)

    chain = [x]
    acc = nominal(x)
    heap: list[tuple[float, int]] = []
    for g in range(len(groups)):
        y = step(x, g)
        k = key(x, acc, y) if y is not None else None
        if k is not None:
            heapq.heappush(heap, (k[0], g))
    while heap:
        _, g = heapq.heappop(heap)
        y = step(x, g)
        k = key(x, acc, y) if y is not None else None
        if k is None:
            continue  # no further level, or it breaks the floor: this device is done
        if heap and k[0] > heap[0][0]:
            heapq.heappush(heap, (k[0], g))  # stale: back in line with its current ratio
            continue
        x, acc = y, k[1]
        chain.append(x)
        nxt = step(x, g)
        kk = key(x, acc, nxt) if nxt is not None else None
        if kk is not None:
            heapq.heappush(heap, (kk[0], g))
    return chain


def chains(problem: PlanProblem, t_min: float, count: int) -> dict[str, int]:
    """Energy chains (module docstring, 3) from the corners of up to `count` thresholds >=
    t_min, each scored in full at `CHAIN_POINTS` points up to its last feasible one."""
    ctx = problem.ctx
    ts = thresholds(ctx)
    ts = ts[ts >= t_min - 1e-12]
    stats = {"chains": 0, "chain_steps": 0, "chain_points": 0}
    if not len(ts) or count < 1:
        return stats
    pick = np.unique(np.round(np.linspace(0, len(ts) - 1, min(count, len(ts)))).astype(int))
    seen: set[tuple[int, ...]] = set()
    for i in pick:
        rec = best_in_box(problem, float(ts[i]), corner(ctx, float(ts[i])))
        x = np.array(rec.levels)
        if tuple(x) in seen or not rec.feasible:
            continue
        seen.add(tuple(x))
        chain = energy_chain(problem, x)
        stats["chains"] += 1
        stats["chain_steps"] += len(chain) - 1
        # the last feasible point (feasibility along a chain is near-monotone: binary search)
        lo, hi = 0, len(chain) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if problem.assess(chain[mid])[0].feasible:
                lo = mid
            else:
                hi = mid - 1
        for j in np.unique(np.round(np.linspace(0, lo, min(CHAIN_POINTS, lo + 1))).astype(int)):
            problem.assess(chain[j])
            stats["chain_points"] += 1
    return stats


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
                       importance: np.ndarray | None, *,
                       seeds: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, dict[str, int]]:
    """`seeds` (the front found by scan and chains) come first, then the informed kinds."""
    repair = ctx.repair_map()
    rows = np.arange(ctx.views)
    kinds: list[tuple[str, list[np.ndarray]]] = [
        ("front", [np.asarray(x, np.int64) for x in seeds][: max(1, 3 * pop // 4)]),
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
            fixed = repair[rows, ctx.canonical(np.clip(x, 0, ctx.levels - 1))]
            key = tuple(int(j) for j in fixed)
            if key in seen or len(members) >= pop:
                continue
            seen.add(key)
            members.append(fixed)
            counts[name] = counts.get(name, 0) + 1
    tries = 0
    while len(members) < pop and tries < 50 * pop:
        tries += 1
        fixed = repair[rows, ctx.canonical(rng.integers(0, ctx.levels, ctx.views))]
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
    """Stops at `n_gen` generations, or when the lowest latency among the feasible candidates
    has not gone down for `patience` generations or for `stall_evaluations` accuracy
    evaluations (cache misses), whichever comes first. Counting evaluations lets a small
    instance, whose candidates cost a few evaluations each, run many generations, and a large
    one, whose candidates cost a hundred, few."""

    def __init__(self, n_gen: int, patience: int | None, stall_evaluations: int | None) -> None:
        super().__init__()
        self.n_gen, self.patience, self.budget = n_gen, patience, stall_evaluations
        self.best = math.inf
        self.stall = 0
        self.calls_at_best = 0

    def _update(self, algorithm: Any) -> float:
        gen = int(getattr(algorithm, "n_gen", 0) or 0)
        problem = algorithm.problem
        if gen > 0:
            best = min((r.latency_ms for r in problem.feasible_records()), default=math.inf)
            if best < self.best:
                self.best, self.stall, self.calls_at_best = best, 0, problem.cache.calls
            else:
                self.stall += 1
        by_stall = 0.0 if self.patience is None else self.stall / self.patience
        by_calls = (0.0 if self.budget is None
                    else (problem.cache.calls - self.calls_at_best) / self.budget)
        return min(1.0, max(gen / self.n_gen, by_stall, by_calls))


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


def _ties(r: Record) -> tuple:
    return (-r.expected, r.energy_mj, -r.accuracy, r.model_bytes, r.levels)


def choose(records: Sequence[Record], prefer: str = "latency",
           objectives: Sequence[str] | None = None) -> Record | None:
    """The selection rule (module docstring)."""
    feasible = [r for r in records if r.feasible]
    if not feasible:
        return None
    if prefer == "latency":
        return min(feasible, key=lambda r: (r.latency_ms, *_ties(r)))
    if prefer == "energy":
        return min(feasible, key=lambda r: (r.energy_mj, r.latency_ms, *_ties(r)))
    if prefer != "balanced":
        raise ValueError(f"prefer: expected one of {', '.join(PREFER)}, got {prefer!r}")
    front = _front(feasible, objectives or ("latency", "accuracy", "energy"))
    F = np.array([[r.latency_ms, r.energy_mj, -r.expected] for r in front])
    span = F.max(axis=0) - F.min(axis=0)
    regret = (F - F.min(axis=0)) / np.where(span > 0, span, 1.0)
    worst = regret.max(axis=1)
    return min(zip(worst.tolist(), front, strict=True),
               key=lambda wr: (wr[0], wr[1].latency_ms, *_ties(wr[1])))[1]


def _values(r: Record, objectives: Sequence[str]) -> list[float]:
    acc = 0.0 if math.isnan(r.expected) else r.expected
    table = {"latency": r.latency_ms, "accuracy": -acc, "energy": r.energy_mj,
             "battery": -min(r.life_h, 1e12), "memory": float(r.model_bytes)}
    return [table[o] for o in objectives]


def _front(feasible: Sequence[Record], objectives: Sequence[str]) -> list[Record]:
    F = np.array([_values(r, objectives) for r in feasible])
    idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
    front = [feasible[i] for i in idx]
    return sorted(front, key=lambda r: (r.latency_ms, -r.expected, r.energy_mj, r.levels))


def pareto_front(problem: PlanProblem) -> list[Record]:
    """Non-dominated feasible candidates (by the problem's objectives), by latency."""
    feas = problem.feasible_records()
    if not feas:
        return []
    return _front(feas, problem.objectives)


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
    """Scan, chains, then NSGA-II on `ctx` (memory must be satisfiable: see
    `explain.memory_reasons`)."""
    settings = settings.validate()
    t0 = time.perf_counter()
    problem = PlanProblem(ctx, objectives=settings.objectives, cache=cache,
                          violation_objective=settings.violation_objective)
    stages: dict[str, Any] = {}
    best, stages["scan"] = scan(problem, settings.enumerate_budget)
    stages["scan"]["seconds"] = time.perf_counter() - t0
    if settings.enumerate_budget:
        t1 = time.perf_counter()
        best, stages["exact"] = exact_below(problem, best, settings.enumerate_budget)
        stages["exact"]["seconds"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    if best is not None:
        stages["chains"] = chains(problem, best.latency_ms - ctx.aggregator_ms,
                                  settings.front_thresholds)
        stages["chains"]["seconds"] = time.perf_counter() - t1
    counts: dict[str, int] = {}
    generations = 0
    if settings.generations > 0:
        t2 = time.perf_counter()
        rng = np.random.default_rng(settings.seed)
        front = pareto_front(problem)
        # and the candidates faster than the best found that miss a floor by the least: the
        # scan's probes leave them at the frontier NSGA-II has to cross (not those of the
        # latencies step 2 proved infeasible: nothing there is worth crossing to)
        t_best = min((r.latency_ms for r in front), default=math.inf)
        t_none = stages.get("exact", {}).get("infeasible_to_ms") or -math.inf
        near = sorted((r for r in problem.archive.values()
                       if r.status in ("accuracy", "accuracy_k")
                       and t_none < r.latency_ms < t_best),
                      key=lambda r: (problem.violation(r), r.latency_ms, r.levels))
        seeds = [np.array(r.levels) for r in front + near[: settings.pop // 4]]
        X0, counts = initial_population(ctx, settings.pop, rng, importance, seeds=seeds)
        algorithm = NSGA2(
            pop_size=settings.pop,
            sampling=X0,
            crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
            mutation=BottleneckMutation(ctx),
            repair=MemoryRepair(ctx),
            eliminate_duplicates=True,
        )
        progress = _Progress(problem, settings.generations, disable=not settings.progress)
        stop = _Stall(settings.generations, settings.patience, settings.stall_evaluations)
        try:
            minimize(problem, algorithm, stop, seed=settings.seed, callback=progress,
                     verbose=False, copy_algorithm=False)
        finally:
            progress.close()
        generations = int(algorithm.n_gen or 0)
        stages["nsga2"] = {"seconds": time.perf_counter() - t2, "generations": generations}
    best = choose(list(problem.archive.values()), settings.prefer, problem.objectives)
    return SearchResult(best, pareto_front(problem), problem, time.perf_counter() - t0, counts,
                        generations, stages)
