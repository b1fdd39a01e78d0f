"""The figures a configuration is reported with: the plan and every baseline alike.

Accuracies here are computed by the `Evaluator` itself (`accuracy` / `accuracy_over_masks`),
not read from the search's memo, so a reported figure is exactly what the evaluator gives for
that configuration. Weights: the head's base weights (None for max pooling), or a contingency
table's row for the failure sets it covers (`weights_by_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slimedge.ladder.evaluator import Evaluator
from slimedge.plan.context import PlanContext
from slimedge.plan.contingency import fitting_evaluator
from slimedge.plan.failures import (
    FailureSets,
    expected_accuracy,
    live_masks,
    views_of,
)


def failure_sets(ctx: PlanContext) -> FailureSets:
    return ctx.failure_sets()


def split_accuracies(ctx: PlanContext, ev: Evaluator, levels: Sequence[int],
                     masks: np.ndarray,
                     weights_by_mask: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """Evaluator accuracy for each dead mask: the head's base weights, or a contingency row's
    weights pooled the way the runtime pools rows (`contingency.rows_pool_mode`)."""
    masks = np.asarray(masks, np.int64)
    live = live_masks(masks, ev.n_views)
    rows = weights_by_mask or {}
    out = np.empty(len(masks))
    plain = [i for i, m in enumerate(masks) if int(m) not in rows]
    if plain:
        out[plain] = ev.accuracy_over_masks(levels, live[plain], ctx.base_weights)
    row_ev = fitting_evaluator(ctx, ev)
    for i, m in enumerate(masks):
        if int(m) in rows:
            out[i] = row_ev.accuracy(levels, live[i], np.asarray(rows[int(m)], np.float32))
    return out


def accuracy_figures(ctx: PlanContext, ev: Evaluator, levels: Sequence[int],
                     sets: FailureSets,
                     weights_by_mask: Mapping[int, np.ndarray] | None = None) -> dict[str, Any]:
    """Nominal, expected (with the neglected mass) and worst-k accuracy on one split."""
    k = ctx.constraints.report_k
    k_masks = ctx.k_masks()
    nominal = ctx.nominal_mask
    union = np.union1d(np.union1d(sets.masks, k_masks), [nominal])
    acc = dict(zip(union.tolist(),
                   split_accuracies(ctx, ev, levels, union, weights_by_mask).tolist(),
                   strict=True))
    expected = expected_accuracy(np.array([acc[int(m)] for m in sets.masks]), sets)
    worst_mask = min(k_masks.tolist(), key=lambda m: (acc[m], m)) if len(k_masks) else None
    down = views_of(nominal)
    return {
        "accuracy": acc[nominal],
        "expected_accuracy": expected,
        "expected_accuracy_neglected_mass": sets.neglected_mass,
        "worst_k_accuracy": acc[worst_mask] if worst_mask is not None else math.nan,
        "worst_k_dead_views": ([v for v in views_of(worst_mask) if v not in down]
                               if worst_mask is not None else []),
        "k": k,
        "objects": int(len(ev.labels)),
    }


def cost_figures(ctx: PlanContext, levels: Sequence[int]) -> dict[str, Any]:
    """Latency with its per-device breakdown, energy, model bytes and memory margins per device
    (a device with several views: its whole load, `device_costs`; down devices: marked down)."""
    x = ctx.canonical(np.asarray(levels, np.int64))
    cost, dev = ctx.cost, ctx.device
    devices: dict[str, Any] = {}
    infeasible = []
    for v in range(ctx.views):
        r, j = int(ctx.view_row[v]), int(x[v])
        name = cost.devices[r]
        if name in devices:
            continue
        views = [int(u) for u in ctx.fleet.devices[r].views]
        if not ctx.up[v]:
            devices[name] = {"view": v, "views": views, "board": cost.boards[r], "down": True,
                             "level_index": j, "level": float(cost.levels[j]),
                             "format": cost.formats[r]}
            continue
        details = cost.assessment(r, j).details
        fits = bool(dev.fits[r, j])
        devices[name] = {
            "view": v, "views": views, "board": cost.boards[r], "down": False,
            "level_index": j, "level": float(cost.levels[j]), "format": cost.formats[r],
            "inference_ms": float(cost.inference_ms[r, j]) * len(views),
            "transfer_ms": float(cost.transfer_ms[r]) * len(views),
            "total_ms": float(dev.time_ms[r, j]),
            "energy_mj": float(dev.energy_mj[r, j]),
            "battery_life_h": float(dev.life_h[r, j]) if dev.battery_powered[r] else None,
            "ram_kind": details["ram_kind"],
            "ram_needed_bytes": int(dev.ram_needed[r, j]),
            "ram_budget_bytes": int(cost.ram_budget[r]),
            "ram_margin_bytes": int(cost.ram_budget[r] - dev.ram_needed[r, j]),
            "storage_kind": details["storage_kind"],
            "storage_needed_bytes": int(dev.storage_needed[r, j]),
            "storage_budget_bytes": int(cost.storage_budget[r]),
            "storage_margin_bytes": int(cost.storage_budget[r] - dev.storage_needed[r, j]),
            "fits": fits,
        }
        if not fits:
            infeasible.append({"device": name, "view": v, "level_index": j,
                               "message": cost.message(r, j)})
    per = ctx.total_ms[np.arange(ctx.views), x]
    slowest = int(np.argmax(per))
    life = float(ctx.lives(x[None, :])[0])
    return {
        "levels": [int(j) for j in x],
        "fractions": [float(cost.levels[j]) for j in x],
        "latency_ms": float(per.max() + ctx.aggregator_ms),
        "latency_breakdown": {
            "slowest_device": ctx.device_of(slowest),
            "slowest_ms": float(per[slowest]),
            "aggregator_ms": float(ctx.aggregator_ms),
            "devices": devices,
        },
        "energy_mj": float(ctx.energies(x[None, :])[0]),
        "battery_life_h": life if np.isfinite(life) else None,
        "model_bytes": int(ctx.model_bytes[np.arange(ctx.views), x].sum()),
        "fits": not infeasible,
        "infeasible_devices": infeasible,
    }


def meets(ctx: PlanContext, latency_ms: float, fits: bool, val: Mapping[str, Any]
          ) -> dict[str, bool | None]:
    c = ctx.constraints
    out: dict[str, bool | None] = {
        "memory": bool(fits),
        "max_latency": None if c.max_latency_ms is None else latency_ms <= c.max_latency_ms,
        "min_accuracy": val["accuracy"] >= c.min_accuracy,
        "min_accuracy_k": (None if c.min_accuracy_k is None
                           else val["worst_k_accuracy"] >= c.min_accuracy_k),
    }
    out["all"] = all(v is not False for v in out.values())
    return out


def figures(ctx: PlanContext, levels: Sequence[int], *, sets: FailureSets | None = None,
            weights_by_mask: Mapping[int, np.ndarray] | None = None) -> dict[str, Any]:
    """Every reported figure of one configuration (val, and test where cached)."""
    sets = failure_sets(ctx) if sets is None else sets
    lv = [int(j) for j in ctx.canonical(np.asarray(levels, np.int64))]
    out = cost_figures(ctx, lv)
    out["val"] = accuracy_figures(ctx, ctx.evaluator, lv, sets, weights_by_mask)
    if ctx.test_evaluator is not None:
        out["test"] = accuracy_figures(ctx, ctx.test_evaluator, lv, sets, weights_by_mask)
    out["meets"] = meets(ctx, out["latency_ms"], out["fits"], out["val"])
    return out


def summary_row(fig: Mapping[str, Any]) -> dict[str, Any]:
    """The short form used in the CLI summary (`levels`, `latency_ms`, accuracies)."""
    val = fig["val"]
    return {
        "levels": fig["levels"],
        "latency_ms": fig["latency_ms"],
        "energy_mj": fig["energy_mj"],
        "battery_life_h": fig.get("battery_life_h"),
        "accuracy": val["accuracy"],
        "expected_accuracy": val["expected_accuracy"],
        "worst_k_accuracy": val["worst_k_accuracy"],
        "model_bytes": fig["model_bytes"],
        "fits": fig["fits"],
        "meets_constraints": fig["meets"]["all"],
        "test_accuracy": fig["test"]["accuracy"] if "test" in fig else None,
        **{k: fig[k] for k in ("latency_vs_plan", "energy_vs_plan") if k in fig},
    }
