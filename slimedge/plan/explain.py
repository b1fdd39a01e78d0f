"""Why no plan meets the constraints: which constraint binds, on which device, by how much.

Each reason is a dict with `constraint` ("memory", "max_latency", "min_accuracy",
"min_accuracy_k" or "combined"), a one-line `message`, and the numbers behind it.
Checks go from the cheapest and most certain to the least:

1. memory: a device no ladder level fits (what the most-pruned level needs vs has);
2. latency: the fastest fitting configuration is slower than max_latency_ms;
3. nominal accuracy: the best accuracy found (every view at its least-pruned level that fits
   and keeps within the latency cap, and every candidate the search scored) is below the floor;
4. worst-k accuracy: likewise for the worst accuracy over failure sets of size 1..k;
5. combined: each floor is reachable alone, but no scored candidate met them together.
Accuracy is measured, not monotone in the levels, so 3-5 report the best *found*.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from slimedge.devices.cost import no_fit_message
from slimedge.plan.context import PlanContext
from slimedge.plan.failures import AccuracyCache, views_of
from slimedge.plan.problem import PlanProblem, Record


def memory_reasons(ctx: PlanContext) -> list[dict[str, Any]]:
    out = []
    last = ctx.levels - 1
    for v in range(ctx.views):
        if ctx.fits[v].any() or ctx.lead_view[v] != v:
            continue
        r = int(ctx.view_row[v])
        a = ctx.cost.assessment(r, last)
        d = a.details
        views = list(ctx.fleet.devices[r].views)
        out.append({
            "constraint": "memory", "device": ctx.device_of(v), "board": ctx.board_of(v),
            "view": v, "views": views, "binding": a.binding,
            "level_index": last, "ram_kind": d["ram_kind"],
            "ram_needed_bytes": d["ram_needed_bytes"],
            "ram_budget_bytes": d["ram_budget_bytes"],
            "storage_kind": d["storage_kind"],
            "storage_needed_bytes": d["storage_needed_bytes"],
            "storage_budget_bytes": d["storage_budget_bytes"],
            "message": str(no_fit_message(ctx.cost, r)),
        })
    return out


def fastest(ctx: PlanContext) -> np.ndarray:
    """Per view, the fitting level with the smallest device time."""
    t = np.where(ctx.fits, ctx.total_ms, np.inf)
    return t.argmin(axis=1)


def latency_reasons(ctx: PlanContext) -> list[dict[str, Any]]:
    cap = ctx.constraints.max_latency_ms
    if cap is None:
        return []
    x = fastest(ctx)
    t = ctx.total_ms[np.arange(ctx.views), x]
    best = float(t.max() + ctx.aggregator_ms)
    if best <= cap:
        return []
    v = int(np.argmax(t))
    return [{
        "constraint": "max_latency", "device": ctx.device_of(v), "board": ctx.board_of(v),
        "view": v, "max_latency_ms": cap, "best_latency_ms": best,
        "device_ms": float(t[v]), "aggregator_ms": ctx.aggregator_ms,
        "message": (f"max latency {cap:g} ms unreachable: the fastest fitting configuration "
                    f"takes {best:.4g} ms, set by {ctx.who(v)} at level {int(x[v])} "
                    f"({ctx.fractions[x[v]]:g}): {t[v]:.4g} ms, plus {ctx.aggregator_ms:.3g} "
                    "ms at the aggregator"),
    }]


def best_levels(ctx: PlanContext) -> np.ndarray:
    """Every view at its least-pruned fitting level within the latency cap."""
    ok = ctx.fits.copy()
    cap = ctx.constraints.max_latency_ms
    if cap is not None:
        ok &= ctx.total_ms + ctx.aggregator_ms <= cap
    x = np.where(ok.any(axis=1), ok.argmax(axis=1), fastest(ctx))
    return x.astype(np.int64)


def _levels_text(ctx: PlanContext, x: np.ndarray) -> str:
    if not np.any(x):
        return "with every view at level 0 (unpruned)"
    return f"with levels {[int(j) for j in x]}"


def explain(ctx: PlanContext, problem: PlanProblem | None = None,
            cache: AccuracyCache | None = None) -> list[dict[str, Any]]:
    """Reasons no configuration met the constraints (empty only if none can be found)."""
    reasons = memory_reasons(ctx)
    if reasons:
        return reasons
    reasons = latency_reasons(ctx)
    if reasons:
        return reasons
    c = ctx.constraints
    cache = cache or (problem.cache if problem is not None else
                      AccuracyCache(ctx.evaluator, ctx.base_weights))
    x0 = best_levels(ctx)
    nominal0 = float(cache.get(x0, [ctx.nominal_mask])[0])
    records: list[Record] = list(problem.archive.values()) if problem is not None else []
    within = [r for r in records if r.status not in ("memory", "latency")]
    best_nom = max(within, key=lambda r: (r.accuracy, -r.latency_ms), default=None)
    nom, nom_levels = nominal0, x0
    if best_nom is not None and best_nom.accuracy > nom:
        nom, nom_levels = best_nom.accuracy, np.array(best_nom.levels)
    if nom < c.min_accuracy:
        return [{
            "constraint": "min_accuracy", "min_accuracy": c.min_accuracy,
            "best_accuracy": nom, "levels": [int(j) for j in nom_levels],
            "shortfall": c.min_accuracy - nom,
            "message": (f"min accuracy {c.min_accuracy:g} unreachable: best found {nom:.4g} "
                        f"{_levels_text(ctx, nom_levels)} (val, {len(ctx.evaluator.labels)} "
                        f"objects; {len(records)} candidates scored)"),
        }]
    if c.min_accuracy_k is not None:
        k_masks = ctx.k_masks()
        cands = [x0] + [np.array(r.levels) for r in within if r.accuracy >= c.min_accuracy]
        best_k, best_x, best_mask = -math.inf, x0, -1
        for x in cands:
            acc = cache.get(x, k_masks)
            i = int(np.argmin(acc))
            if acc[i] > best_k:
                best_k, best_x, best_mask = float(acc[i]), x, int(k_masks[i])
        if best_k < c.min_accuracy_k:
            dead = [ctx.device_of(v) for v in views_of(best_mask)]
            return [{
                "constraint": "min_accuracy_k", "k": c.report_k,
                "min_accuracy_k": c.min_accuracy_k, "best_worst_k_accuracy": best_k,
                "levels": [int(j) for j in best_x], "worst_failure_set": dead,
                "shortfall": c.min_accuracy_k - best_k,
                "message": (f"min accuracy {c.min_accuracy_k:g} with any {c.report_k} failed "
                            f"device(s) unreachable: best worst-case found {best_k:.4g} "
                            f"{_levels_text(ctx, best_x)} (worst when "
                            f"{' + '.join(dead)} fail; {len(cands)} candidates meeting "
                            f"min accuracy {c.min_accuracy:g} checked)"),
            }]
    close = min(records, key=lambda r: sum(max(0.0, g) for g in problem.constraint_values(r)),
                default=None) if problem is not None else None
    detail = ""
    if close is not None:
        g = problem.constraint_values(close)
        names = ["memory", "max_latency", "min_accuracy", "min_accuracy_k"]
        missed = [f"{n} by {v:.3g}" for n, v in zip(names, g, strict=True) if v > 0]
        detail = f"; closest candidate {list(close.levels)} misses {', '.join(missed)}"
    return [{
        "constraint": "combined",
        "message": ("each constraint is reachable on its own, but no candidate the search "
                    f"scored met all of them together{detail}"),
    }]


def explanation_text(reasons: list[dict[str, Any]]) -> str:
    return "no plan meets the constraints: " + "; ".join(r["message"] for r in reasons)
