"""The contingency table: for every failure set of size 1..k, the aggregation weights to use,
fitted on the validation split, the accuracy they give, and what survivors could do about it.

Weights and the head's pooling mode (the ladder manifest's `pool_mode`):

- `max`: the pooled vector is an element-wise max over live views; weights do not change it,
  so none are fitted. Rows hold the renormalized base weights (policy `renormalize`, what the
  C++ core does for a set without a row) so the table is complete and loadable.
- `mean`: fitted as a weighted mean over the live views (uniform weights reproduce the mean
  exactly); a row whose fitted weights beat the plain mean on val is `fitted`, and the runtime
  pools that failure set in `weighted` mode with the row's weights (`rows_pool_mode`).
- `weighted`: fitted from the head's base weights, pooled `weighted` as always.

Fitting is a coordinate search: for each live view in turn, its weight is multiplied by each
of `FACTORS` and the best val accuracy kept; passes repeat until none improves (at most
`PASSES`). A row is `fitted` only when it beats renormalization on val (measured by the
`Evaluator` with the exact float32 weights stored); test accuracy is reported beside it, so
over-fitting to val is visible.

Extra work: when a failure set's accuracy is below the floor (`min_accuracy_k` if given, else
`min_accuracy`) and a survivor's device has memory for a less-pruned level, survivors are moved
greedily: each step takes the (view, fitting lower level) with the best val accuracy, until the
floor is met or no move helps. The row records the moves, the accuracy they buy and the latency
they cost (the live devices only: dead ones send nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from slimedge import _core
from slimedge.ladder.evaluator import Evaluator
from slimedge.plan.context import PlanContext
from slimedge.plan.failures import live_masks, views_of

FACTORS = (0.0, 0.5, 1.5, 2.0)
PASSES = 3


def rows_pool_mode(pool_mode: str) -> str:
    """How the aggregator pools a failure set that has a table row."""
    return "max" if pool_mode == "max" else "weighted"


def fitting_evaluator(ctx: PlanContext, ev: Evaluator) -> Evaluator:
    """The evaluator a row's weights are scored with (`weighted` for mean/weighted heads)."""
    mode = rows_pool_mode(ctx.pool_mode)
    return ev if ev.mode == mode else dataclasses.replace(ev, mode=mode)


def base_weights(ctx: PlanContext) -> np.ndarray:
    return (np.ones(ctx.views, np.float32) if ctx.base_weights is None
            else np.asarray(ctx.base_weights, np.float32))


def renormalized(ctx: PlanContext, live: np.ndarray) -> np.ndarray:
    return np.asarray(_core.redistribute(base_weights(ctx), live, "renormalize"), np.float32)


def _normalized(w: np.ndarray, live: np.ndarray) -> np.ndarray:
    w = np.where(live, w, 0.0).astype(np.float64)
    total = w.sum()
    return (w / total if total > 0 else w).astype(np.float32)


def fit_weights(ev: Evaluator, levels: Sequence[int], live: np.ndarray, start: np.ndarray
                ) -> np.ndarray:
    """Coordinate search over per-view weight factors maximizing `ev` accuracy (val)."""
    w = np.asarray(start, np.float64).copy()
    best = float(ev.accuracy_over_masks(levels, live[None, :], w[None, :].astype(np.float32))[0])
    for _ in range(PASSES):
        improved = False
        for v in np.flatnonzero(live):
            trials = []
            for f in FACTORS:
                t = w.copy()
                t[v] *= f
                if t[live].sum() > 0:
                    trials.append(t)
            if not trials:
                continue
            T = np.array(trials)
            acc = ev.accuracy_over_masks(levels, np.repeat(live[None, :], len(T), axis=0),
                                 T.astype(np.float32))
            i = int(np.argmax(acc))
            if acc[i] > best:
                best, w, improved = float(acc[i]), T[i], True
        if not improved:
            break
    return _normalized(w, live)


def _accuracy(ev: Evaluator | None, levels: Sequence[int], live: np.ndarray,
              w: np.ndarray) -> float | None:
    return None if ev is None else ev.accuracy(levels, live, w)


def extra_work(ctx: PlanContext, levels: Sequence[int], live: np.ndarray, w: np.ndarray,
               floor: float, start_acc: float) -> dict[str, Any] | None:
    """Greedy moves of survivors to less-pruned fitting levels (module docstring)."""
    ev = fitting_evaluator(ctx, ctx.evaluator)
    x = np.asarray(levels, np.int64).copy()
    acc = start_acc
    moves: list[dict[str, Any]] = []
    for _ in range(ctx.views):
        if acc >= floor:
            break
        # a device with several views moves them together (one artifact)
        cands = [(v, j) for v in np.flatnonzero(live) if ctx.lead_view[v] == v
                 for j in range(int(x[v])) if ctx.fits[v, j]]
        if not cands:
            break
        scores = []
        for v, j in cands:
            y = x.copy()
            y[ctx.lead_view == v] = j
            scores.append(float(ev.accuracy_over_masks(y, live[None, :], w[None, :])[0]))
        i = int(np.argmax(scores))
        if scores[i] <= acc:
            break
        v, j = cands[i]
        moves.append({"view": int(v), "device": ctx.device_of(int(v)), "from": int(x[v]),
                      "to": int(j)})
        x[ctx.lead_view == v] = j
        acc = scores[i]
    if not moves:
        return None
    val = ev.accuracy(x, live, w)  # the evaluator's own figure for the final levels
    test_ev = (fitting_evaluator(ctx, ctx.test_evaluator) if ctx.test_evaluator is not None
               else None)
    return {
        "level_changes": moves,
        "levels": [int(j) for j in x],
        "accuracy": {"val": val, "test": _accuracy(test_ev, x, live, w)},
        "gain_val": val - start_acc,
        "latency_ms": ctx.latency(x, live),
        "meets_floor": val >= floor,
    }


def row_floor(ctx: PlanContext) -> float:
    c = ctx.constraints
    return c.min_accuracy_k if c.min_accuracy_k is not None else c.min_accuracy


def build_contingency(ctx: PlanContext, levels: Sequence[int], *, fit: bool = True,
                      extra: bool = True) -> dict[str, Any]:
    """Rows for every failure set of 1..k up devices (k = max(1, k_failures)), and for the
    down devices alone when some are down."""
    lv = [int(j) for j in ctx.canonical(np.asarray(levels, np.int64))]
    k = ctx.constraints.report_k
    masks = ctx.k_masks()
    if ctx.nominal_mask:  # down devices: the runtime sees their views dead on every frame
        masks = np.r_[[ctx.nominal_mask], masks].astype(np.int64)
    ev = fitting_evaluator(ctx, ctx.evaluator)
    test_ev = (fitting_evaluator(ctx, ctx.test_evaluator) if ctx.test_evaluator is not None
               else None)
    floor = row_floor(ctx)
    rows = []
    for mask, live in zip(masks.tolist(), live_masks(masks, ctx.views), strict=True):
        renorm = renormalized(ctx, live)
        acc_r = ev.accuracy(lv, live, renorm)
        w, policy, acc = renorm, ("moot" if ctx.pool_mode == "max" else "renormalize"), acc_r
        if fit and ctx.pool_mode != "max":
            cand = fit_weights(ev, lv, live, renorm)
            acc_c = ev.accuracy(lv, live, cand)
            if acc_c > acc_r:
                w, policy, acc = cand, "fitted", acc_c
        row: dict[str, Any] = {
            "dead_views": views_of(mask),
            "dead_devices": [ctx.device_of(v) for v in views_of(mask)],
            "dead_mask": int(mask),
            "probability": ctx.set_probability(mask),
            "policy": policy,
            "weights": [float(x) for x in w],
            "accuracy": {"val": acc, "test": _accuracy(test_ev, lv, live, w)},
            "renormalized_accuracy": {"val": acc_r,
                                      "test": _accuracy(test_ev, lv, live, renorm)},
            "latency_ms": ctx.latency(lv, live),
            "meets_floor": acc >= floor,
            "extra_work": None,
        }
        if extra and acc < floor:
            row["extra_work"] = extra_work(ctx, lv, live, w, floor, acc)
        rows.append(row)
    return {
        "k": k,
        "head_pool_mode": ctx.pool_mode,
        "rows_pool_mode": rows_pool_mode(ctx.pool_mode),
        "weights_fitted": ctx.pool_mode != "max" and fit,
        "note": ("max pooling: weights do not change the pooled vector; rows hold the "
                 "renormalized weights" if ctx.pool_mode == "max" else
                 "weights fitted on the validation split by coordinate search"),
        "base_weights": [float(x) for x in base_weights(ctx)],
        "floor": floor,
        "rows": rows,
    }


def weights_by_mask(table: dict[str, Any]) -> dict[int, np.ndarray]:
    """Rows whose weights differ from renormalization (to score expected accuracy with)."""
    return {int(r["dead_mask"]): np.asarray(r["weights"], np.float32)
            for r in table["rows"] if r["policy"] == "fitted"}
