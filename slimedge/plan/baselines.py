"""Baselines, scored exactly as the plan is: the same evaluator and cost model, the same floors
(nominal, worst-k, latency cap), and the same weights policy (each baseline gets its own
contingency rows fitted on val the way the plan's are, `contingency.build_contingency`, so a
mean/weighted head is not scored with fitted weights for the plan and renormalized ones for the
baselines).

The floors a rule checks while it runs are the plan's: memory fits, nominal accuracy >=
min_accuracy and, when given, worst accuracy over failure sets of 1..k devices >= min_accuracy_k
(measured). A device with several views moves as one (one artifact, one level).

- `unpruned`: level 0 everywhere; the devices it does not fit are listed.
- `uniform`: uniform pruning at the plan's floors: of the levels j with every view at j that meet
  every floor (accuracy, worst-k, latency cap), the one with the least system latency (ties: the
  least pruned); memory is not a floor here: where it does not fit, its ratio reads "does not
  fit". If no uniform level meets the floors, level 0 (marked as missing them).
- `uniform_fit`: the least-pruned common level that fits every device and meets the floors (if
  none meets them, the least-pruned one that fits, marked as missing the floors).
- `importance_only`: views in increasing Shapley importance; each in turn is pruned one level
  at a time while the floors hold (important views stay least pruned; device speed ignored).
- `device_only`: the slowest device is pruned one more level while the floors hold; the first
  step that breaks them ends the rule (latency is the slowest device's, so no other step can
  lower it; importance ignored).
- `published`: the SlimEdge authors' heuristic (shared/reference/slimedge-authors, their
  `Optimize.py` and CSVs): per-view minimum pruning from the memory caps, then pruning spread by
  importance and device performance under their accuracy surrogate, the importance-weighted
  mean of per-view accuracies read off the uniform-pruning curve, sum_v I_v acc_u(level_v)
  >= min_accuracy. Reproduced here: I = the published ratio importance |drop| / single
  (normalized, `view_importance(...)["ratio"]`); acc_u(j) = measured accuracy with every view at
  level j; device performance = its measured time at its current level. Each step prunes, by
  one level, the unfrozen view with the largest time / importance; a step that takes the
  surrogate under the floor freezes that view. They never modelled failures; so that the rule
  is held to the plan's floors, a step that breaks the measured worst-k floor (when one is set)
  also freezes the view. The result is then scored with the measured evaluator, like every
  other baseline, so the surrogate's error shows. Their pruning label p removed about p^2 of the
  filters (a double multiplication); we use our levels' exact fractions.

Ratios (`latency_vs_plan`, `energy_vs_plan`, set by the planner) are numbers only for a baseline
that fits memory; otherwise they read "does not fit" (a configuration that cannot be deployed is
no denominator).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from slimedge.plan.context import PlanContext
from slimedge.plan.contingency import build_contingency, weights_by_mask
from slimedge.plan.failures import AccuracyCache, FailureSets
from slimedge.plan.figures import figures

BASELINES = ("unpruned", "uniform", "uniform_fit", "importance_only", "device_only",
             "published")
DOES_NOT_FIT = "does not fit"


class _Floors:
    """Measured floor checks through the memoized engine (shared by the rules)."""

    def __init__(self, ctx: PlanContext, cache: AccuracyCache, *, memory: bool = True) -> None:
        self.ctx, self.cache, self.memory = ctx, cache, memory
        c = ctx.constraints
        self.k_masks = ctx.k_masks() if c.min_accuracy_k is not None else np.zeros(0, np.int64)

    def nominal(self, x: np.ndarray) -> float:
        return float(self.cache.get(x, [self.ctx.nominal_mask])[0])

    def worst_k_ok(self, x: np.ndarray) -> bool:
        if not len(self.k_masks):
            return True
        return bool(self.cache.get(x, self.k_masks).min() >= self.ctx.constraints.min_accuracy_k)

    def __call__(self, x: np.ndarray) -> bool:
        ctx, c = self.ctx, self.ctx.constraints
        x = ctx.canonical(x)
        if self.memory and not ctx.fits[np.arange(ctx.views), x].all():
            return False
        if c.max_latency_ms is not None and ctx.latency(x) > c.max_latency_ms:
            return False
        if self.nominal(x) < c.min_accuracy:
            return False
        return self.worst_k_ok(x)


def _start(ctx: PlanContext) -> np.ndarray:
    return ctx.canonical(np.maximum(ctx.least_pruned_fitting(), 0).astype(np.int64))


def _with(x: np.ndarray, views: np.ndarray, level: int) -> np.ndarray:
    y = x.copy()
    y[views] = level
    return y


def unpruned(ctx: PlanContext, ok: Callable[[np.ndarray], bool]) -> np.ndarray:
    return ctx.canonical(np.zeros(ctx.views, np.int64))


def uniform(ctx: PlanContext, ok: Callable[[np.ndarray], bool]) -> np.ndarray:
    """The uniform level with the least latency among those meeting the floors (memory aside:
    `ok` must not check it)."""
    X = ctx.canonical(np.repeat(np.arange(ctx.levels)[:, None], ctx.views, axis=1))
    lat = ctx.latencies(X)
    for j in sorted(range(ctx.levels), key=lambda i: (lat[i], i)):
        if ok(X[j]):
            return X[j]
    return X[0]


def uniform_fit(ctx: PlanContext, ok: Callable[[np.ndarray], bool]) -> np.ndarray:
    fitting = [j for j in range(ctx.levels) if ctx.fits[:, j].all()]
    for j in fitting:
        if ok(np.full(ctx.views, j, np.int64)):
            return ctx.canonical(np.full(ctx.views, j, np.int64))
    return ctx.canonical(np.full(ctx.views, fitting[0] if fitting else ctx.levels - 1, np.int64))


def importance_only(ctx: PlanContext, ok: Callable[[np.ndarray], bool],
                    shapley: Sequence[float]) -> np.ndarray:
    x = _start(ctx)
    done: set[int] = set()
    for v in np.argsort(np.asarray(shapley, float), kind="stable"):
        lead = int(ctx.lead_view[v])
        if lead in done or not ctx.up[v]:
            continue
        done.add(lead)
        group = np.flatnonzero(ctx.lead_view == lead)
        while x[v] + 1 < ctx.levels and ctx.fits[v, x[v] + 1]:
            y = _with(x, group, int(x[v]) + 1)
            if not ok(y):
                break
            x = y
    return x


def device_only(ctx: PlanContext, ok: Callable[[np.ndarray], bool]) -> np.ndarray:
    x = _start(ctx)
    rows = np.arange(ctx.views)
    while True:
        v = int(np.argmax(ctx.total_ms[rows, x]))
        nxt = [j for j in range(int(x[v]) + 1, ctx.levels) if ctx.fits[v, j]]
        if not nxt:
            return x
        y = _with(x, np.flatnonzero(ctx.lead_view == ctx.lead_view[v]), nxt[0])
        if not ok(y):
            return x
        x = y


def published(ctx: PlanContext, ratio: Sequence[float], uniform_acc: Sequence[float],
              worst_k_ok: Callable[[np.ndarray], bool] | None = None) -> np.ndarray:
    imp = np.asarray(ratio, float)
    imp = imp / imp.sum() if imp.sum() > 0 else np.full(ctx.views, 1.0 / ctx.views)
    acc_u = np.asarray(uniform_acc, float)
    x = _start(ctx)
    frozen = ~ctx.up.copy()
    rows = np.arange(ctx.views)

    def surrogate(y: np.ndarray) -> float:
        return float(np.dot(imp, acc_u[y]))

    while not frozen.all():
        t = ctx.total_ms[rows, x]
        with np.errstate(divide="ignore"):
            score = np.where(frozen, -np.inf, t / np.maximum(imp, 0.0))
        v = int(np.argmax(score))
        nxt = [j for j in range(int(x[v]) + 1, ctx.levels) if ctx.fits[v, j]]
        group = np.flatnonzero(ctx.lead_view == ctx.lead_view[v])
        if not nxt:
            frozen[group] = True
            continue
        y = _with(x, group, nxt[0])
        if surrogate(y) >= ctx.constraints.min_accuracy and (worst_k_ok is None
                                                             or worst_k_ok(y)):
            x = y
        else:
            frozen[group] = True
    return x


def ratio(value: float, plan_value: float, fits: bool) -> float | str:
    """A baseline's figure over the plan's, or "does not fit" (module docstring)."""
    if not fits:
        return DOES_NOT_FIT
    return value / plan_value if plan_value else float("nan")


def run_baselines(ctx: PlanContext, importance: Mapping[str, Any], *,
                  cache: AccuracyCache | None = None, sets: FailureSets | None = None,
                  names: Sequence[str] = BASELINES, fit_contingency: bool = True
                  ) -> dict[str, dict[str, Any]]:
    """Each baseline's levels and every figure the plan reports (val, and test where cached),
    with contingency weights fitted as for the plan (`fit_contingency`).

    `importance`: a `view_importance` result (its `shapley` and `ratio` are used)."""
    cache = cache if cache is not None else AccuracyCache(ctx.evaluator, ctx.base_weights)
    sets = ctx.failure_sets() if sets is None else sets
    ok = _Floors(ctx, cache)
    ok_any_memory = _Floors(ctx, cache, memory=False)
    uniform_acc = [ok.nominal(ctx.canonical(np.full(ctx.views, j))) for j in range(ctx.levels)]
    rules: dict[str, Callable[[], np.ndarray]] = {
        "unpruned": lambda: unpruned(ctx, ok),
        "uniform": lambda: uniform(ctx, ok_any_memory),
        "uniform_fit": lambda: uniform_fit(ctx, ok),
        "importance_only": lambda: importance_only(ctx, ok, importance["shapley"]),
        "device_only": lambda: device_only(ctx, ok),
        "published": lambda: published(ctx, importance["ratio"], uniform_acc,
                                       ok.worst_k_ok if len(ok.k_masks) else None),
    }
    out = {}
    for name in names:
        if name not in rules:
            raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")
        x = rules[name]()
        weights = None
        if fit_contingency and ctx.pool_mode != "max":
            weights = weights_by_mask(build_contingency(ctx, x, fit=True, extra=False))
        fig = figures(ctx, x, sets=sets, weights_by_mask=weights)
        fig["name"] = name
        fig["weights"] = ("fitted contingency rows" if weights else
                          "renormalized (max pooling: weights moot)" if ctx.pool_mode == "max"
                          else "renormalized")
        out[name] = fig
    return out
