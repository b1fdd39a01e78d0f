"""Baselines, scored with the same evaluator and cost model as the plan (`figures.figures`).

Every rule starts where memory forces it: each view at its least-pruned fitting level. The
floors checked while a rule runs are the plan's: nominal accuracy >= min_accuracy and, when
given, worst accuracy over failure sets of size 1..k >= min_accuracy_k (measured).

- `unpruned`: level 0 everywhere; the devices it does not fit are listed.
- `uniform`: the least-pruned common level that fits every device and meets the floors (if no
  common level meets them, the least-pruned one that fits, marked as missing the floors).
- `importance_only`: views in increasing Shapley importance; each in turn is pruned one level
  at a time while the floors hold (important views stay least pruned; device speed ignored).
- `device_only`: the view on the currently slowest device is pruned one more level while the
  floors hold; the first step that breaks them ends the rule (latency is the slowest device's,
  so no other step can lower it; importance ignored).
- `published`: the SlimEdge authors' heuristic (shared/reference/slimedge-authors, their
  `Optimize.py` and CSVs): per-view minimum pruning from the memory caps, then pruning spread by
  importance and device performance under their accuracy surrogate, the importance-weighted
  mean of per-view accuracies read off the uniform-pruning curve, sum_v I_v acc_u(level_v)
  >= min_accuracy. Reproduced here: I = the published ratio importance |drop| / single
  (normalized, `view_importance(...)["ratio"]`); acc_u(j) = measured accuracy with every view at
  level j; device performance = its measured time at its current level. Each step prunes, by
  one level, the unfrozen view with the largest time / importance; a step that takes the
  surrogate under the floor freezes that view. The result is then scored with the measured
  evaluator, like every other baseline, so the surrogate's error shows. Their pruning label p
  removed about p^2 of the filters (a double multiplication); we use our levels' exact
  fractions (their p corresponds to our level p^2), and they never modelled failures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from slimedge.plan.context import PlanContext
from slimedge.plan.failures import AccuracyCache, FailureSets, sets_up_to
from slimedge.plan.figures import failure_sets, figures

BASELINES = ("unpruned", "uniform", "importance_only", "device_only", "published")


class _Floors:
    """Measured floor checks through the memoized engine (shared by the rules)."""

    def __init__(self, ctx: PlanContext, cache: AccuracyCache) -> None:
        self.ctx, self.cache = ctx, cache
        c = ctx.constraints
        self.k_masks = (sets_up_to(ctx.views, c.report_k) if c.min_accuracy_k is not None
                        else np.zeros(0, np.int64))

    def __call__(self, x: np.ndarray) -> bool:
        c = self.ctx.constraints
        if not self.ctx.fits[np.arange(self.ctx.views), x].all():
            return False
        if self.cache.get(x, [0])[0] < c.min_accuracy:
            return False
        if len(self.k_masks):
            return bool(self.cache.get(x, self.k_masks).min() >= c.min_accuracy_k)
        return True


def _start(ctx: PlanContext) -> np.ndarray:
    return np.maximum(ctx.least_pruned_fitting(), 0).astype(np.int64)


def unpruned(ctx: PlanContext, ok: Callable[[np.ndarray], bool]) -> np.ndarray:
    return np.zeros(ctx.views, np.int64)


def uniform(ctx: PlanContext, ok: Callable[[np.ndarray], bool]) -> np.ndarray:
    fitting = [j for j in range(ctx.levels) if ctx.fits[:, j].all()]
    for j in fitting:
        if ok(np.full(ctx.views, j, np.int64)):
            return np.full(ctx.views, j, np.int64)
    return np.full(ctx.views, fitting[0] if fitting else ctx.levels - 1, np.int64)


def importance_only(ctx: PlanContext, ok: Callable[[np.ndarray], bool],
                    shapley: Sequence[float]) -> np.ndarray:
    x = _start(ctx)
    for v in np.argsort(np.asarray(shapley, float), kind="stable"):
        while x[v] + 1 < ctx.levels and ctx.fits[v, x[v] + 1]:
            y = x.copy()
            y[v] += 1
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
        y = x.copy()
        y[v] = nxt[0]
        if not ok(y):
            return x
        x = y


def published(ctx: PlanContext, ratio: Sequence[float], uniform_acc: Sequence[float]
              ) -> np.ndarray:
    imp = np.asarray(ratio, float)
    imp = imp / imp.sum() if imp.sum() > 0 else np.full(ctx.views, 1.0 / ctx.views)
    acc_u = np.asarray(uniform_acc, float)
    x = _start(ctx)
    frozen = np.zeros(ctx.views, bool)
    rows = np.arange(ctx.views)

    def surrogate(y: np.ndarray) -> float:
        return float(np.dot(imp, acc_u[y]))

    while not frozen.all():
        t = ctx.total_ms[rows, x]
        with np.errstate(divide="ignore"):
            score = np.where(frozen, -np.inf, t / np.maximum(imp, 0.0))
        v = int(np.argmax(score))
        nxt = [j for j in range(int(x[v]) + 1, ctx.levels) if ctx.fits[v, j]]
        if not nxt:
            frozen[v] = True
            continue
        y = x.copy()
        y[v] = nxt[0]
        if surrogate(y) >= ctx.constraints.min_accuracy:
            x = y
        else:
            frozen[v] = True
    return x


def run_baselines(ctx: PlanContext, importance: Mapping[str, Any], *,
                  cache: AccuracyCache | None = None, sets: FailureSets | None = None,
                  names: Sequence[str] = BASELINES) -> dict[str, dict[str, Any]]:
    """Each baseline's levels and every figure the plan reports (val, and test where cached).

    `importance`: a `view_importance` result (its `shapley` and `ratio` are used)."""
    cache = cache if cache is not None else AccuracyCache(ctx.evaluator, ctx.base_weights)
    sets = failure_sets(ctx) if sets is None else sets
    ok = _Floors(ctx, cache)
    uniform_acc = [float(cache.get(np.full(ctx.views, j), [0])[0]) for j in range(ctx.levels)]
    rules: dict[str, Callable[[], np.ndarray]] = {
        "unpruned": lambda: unpruned(ctx, ok),
        "uniform": lambda: uniform(ctx, ok),
        "importance_only": lambda: importance_only(ctx, ok, importance["shapley"]),
        "device_only": lambda: device_only(ctx, ok),
        "published": lambda: published(ctx, importance["ratio"], uniform_acc),
    }
    out = {}
    for name in names:
        if name not in rules:
            raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")
        fig = figures(ctx, rules[name](), sets=sets)
        fig["name"] = name
        out[name] = fig
    return out
