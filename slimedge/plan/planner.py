"""Make a plan, top to bottom: check what can be checked without search, search, fit the
contingency table, score the baselines, assemble the plan document.

    ctx = PlanContext.from_ladder(ladder, load_fleet(path), Constraints(min_accuracy=0.85))
    outcome = make_plan(ctx, SearchSettings(seed=0))       # raises PlanInfeasibleError
    write_plan("plan.json", outcome.plan, outcome.pareto_rows, outcome.png)
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.ladder.importance import MAX_EXACT_VIEWS, view_importance
from slimedge.plan import PlanInfeasibleError
from slimedge.plan.baselines import ratio, run_baselines
from slimedge.plan.context import PlanContext
from slimedge.plan.contingency import build_contingency, weights_by_mask
from slimedge.plan.explain import explain, explanation_text, latency_reasons, memory_reasons
from slimedge.plan.failures import AccuracyCache, Runner
from slimedge.plan.figures import failure_sets, figures, summary_row
from slimedge.plan.plan_file import PLAN_FORMAT, PLAN_VERSION
from slimedge.plan.search import SearchResult, SearchSettings, make_cache, search

SELECTION_RULES = {
    "latency": ("lowest system latency among the feasible candidates scored (memory fits, "
                "latency <= max_latency_ms, nominal accuracy >= min_accuracy, worst accuracy "
                "over failure sets of 1..k devices >= min_accuracy_k); ties: higher expected "
                "accuracy, lower energy, higher nominal accuracy, fewer model bytes, smaller "
                "level vector"),
    "energy": ("lowest energy per frame among the feasible candidates scored; ties: lower "
               "latency, higher expected accuracy, higher nominal accuracy, fewer model bytes, "
               "smaller level vector"),
    "balanced": ("on the Pareto front of the feasible candidates, latency, energy per frame "
                 "and expected accuracy each scaled to [0, 1] over the front (0 = its best); "
                 "the candidate with the smallest worst scaled regret (Chebyshev knee); ties: "
                 "lower latency, higher expected accuracy, lower energy"),
}
PLACEMENT = ("fixed: each view runs on the one device of the fleet file whose camera sees it; "
             "a device with several views runs one level for all of them, its branches in "
             "series")


@dataclass
class PlanOutcome:
    plan: dict[str, Any]
    pareto_rows: list[dict[str, Any]]
    png: bytes | None
    result: SearchResult

    def summary(self) -> dict[str, Any]:
        return plan_summary(self.plan)


def importance_of(ctx: PlanContext) -> dict[str, Any]:
    """Shapley importance (exact, 2^V evaluations) at level 0; leave-one-out beyond 16 views."""
    if ctx.views <= MAX_EXACT_VIEWS:
        return view_importance(ctx.evaluator)
    V = ctx.views
    full = ctx.evaluator.accuracy([0] * V)
    loo = [full - ctx.evaluator.accuracy([0] * V, np.arange(V) != v) for v in range(V)]
    return {"shapley": loo, "ratio": list(np.ones(V) / V), "leave_one_out": loo,
            "full_accuracy": full, "note": f"{V} views: leave-one-out instead of Shapley"}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fleet_info(ctx: PlanContext) -> dict[str, Any]:
    f = ctx.fleet
    return {
        "name": f.name, "path": str(f.path) if f.path else None,
        "aggregator": {"kind": f.aggregator.kind, "name": f.aggregator.name,
                       "ms": ctx.aggregator_ms},
        "devices": [{"id": d.id, "board": d.board_id, "views": list(d.views),
                     "failure_probability": d.failure_probability, "down": d.id in ctx.down}
                    for d in f.devices],
        "down": list(ctx.down),
    }


def _cost_inputs(ctx: PlanContext) -> dict[str, Any]:
    """The files the plan's latencies came from, with their hashes: each board file and, under
    the per-layer model, each kernel profile a board names. Two plans with the same inputs
    hashed here and the same ladder have the same cost table."""
    from slimedge.artifacts import sha256_file
    from slimedge.devices.kernel_profiles import load_profiles

    def entry(path: Path | None) -> dict[str, Any]:
        return {"path": str(path) if path else None,
                "sha256": sha256_file(path) if path and path.is_file() else None}

    boards: dict[str, dict[str, Any]] = {}
    kernels: dict[str, dict[str, Any]] = {}
    profiles = load_profiles() if ctx.cost.cost_model == "per-layer" else {}
    agg = ctx.fleet.aggregator.board  # None for a host outside the catalog
    for b in [d.board for d in ctx.fleet.devices] + ([agg] if agg is not None else []):
        if b.id not in boards:
            boards[b.id] = {**entry(b.path),
                            "kernels": b.kernels.key if b.kernels is not None else None}
        ref = b.kernels
        if ref is not None and ref.key in profiles and ref.key not in kernels:
            kernels[ref.key] = entry(profiles[ref.key].path)
    return {"boards": boards, "kernel_profiles": kernels}


def _pareto_rows(result: SearchResult, best_levels: tuple[int, ...]) -> list[dict[str, Any]]:
    return [{"rank": i, "levels": list(r.levels), "latency_ms": r.latency_ms,
             "expected_accuracy": r.expected, "accuracy": r.accuracy,
             "worst_k_accuracy": None if math.isnan(r.worst_k) else r.worst_k,
             "energy_mj": r.energy_mj,
             "battery_life_h": r.life_h if math.isfinite(r.life_h) else None,
             "model_bytes": r.model_bytes, "chosen": r.levels == best_levels}
            for i, r in enumerate(result.front)]


def _infeasible(ctx: PlanContext, reasons: list[dict[str, Any]], **extra: Any
                ) -> PlanInfeasibleError:
    summary = {"infeasible": reasons, "fleet": ctx.fleet.name,
               "constraints": ctx.constraints.to_dict(), **extra}
    return PlanInfeasibleError(explanation_text(reasons), summary)


def make_plan(ctx: PlanContext, settings: SearchSettings | None = None, *,
              importance: Mapping[str, Any] | None = None, runner: Runner | None = None,
              client: Any = None, baselines: bool = True, fit_contingency: bool = True,
              plot: bool = True, cache: AccuracyCache | None = None) -> PlanOutcome:
    """Search, contingency, baselines and the plan document; `PlanInfeasibleError` (message: the
    explanation, `.summary`: machine-readable) when no configuration meets the constraints.
    `cache`: the accuracy memo to use (e.g. one backed by a store shared across fleets over the
    same ladder, `slimedge.simulate`); default: a fresh one (`make_cache`)."""
    t0 = time.perf_counter()
    settings = (settings or SearchSettings()).validate()
    reasons = memory_reasons(ctx) or latency_reasons(ctx)
    if reasons:
        raise _infeasible(ctx, reasons)
    imp = dict(importance) if importance is not None else importance_of(ctx)
    cache = cache if cache is not None else make_cache(ctx, runner=runner, client=client)
    sets = failure_sets(ctx)
    result = search(ctx, settings, importance=np.asarray(imp["shapley"], float), cache=cache)
    base = (run_baselines(ctx, imp, cache=cache, sets=sets, fit_contingency=fit_contingency)
            if baselines else {})
    if result.best is None:
        reasons = explain(ctx, result.problem, cache)
        raise _infeasible(ctx, reasons, search=result.stats(),
                          baselines={n: summary_row(b) for n, b in base.items()})
    levels = result.best.levels
    table = build_contingency(ctx, levels, fit=fit_contingency)
    fig = figures(ctx, levels, sets=sets, weights_by_mask=weights_by_mask(table))
    for b in base.values():
        b["latency_vs_plan"] = ratio(b["latency_ms"], fig["latency_ms"], b["fits"])
        b["energy_vs_plan"] = ratio(b["energy_mj"], fig["energy_mj"], b["fits"])
    views = []
    head = ("board", "level_index", "level", "format")
    for v in range(ctx.views):
        d = fig["latency_breakdown"]["devices"][ctx.device_of(v)]
        views.append({"view": v, "device": ctx.device_of(v), **{k: d[k] for k in head},
                      **{k: x for k, x in d.items() if k not in head and k != "view"}})
    by_size: dict[str, int] = {}
    for m in sets.masks.tolist():
        key = str(bin(m).count("1"))
        by_size[key] = by_size.get(key, 0) + 1
    plan = {
        "format": PLAN_FORMAT, "format_version": PLAN_VERSION, "created": _now(),
        "slimedge_version": _version(),
        "ladder": {**dict(ctx.ladder), "levels": [float(x) for x in ctx.fractions],
                   "views": ctx.views, "feature_dim": ctx.cost.feature_dim,
                   "pool_mode": ctx.pool_mode},
        "fleet": _fleet_info(ctx),
        "constraints": ctx.constraints.to_dict(),
        "search": {**settings.to_dict(), **result.stats(),
                   "selection_rule": SELECTION_RULES[settings.prefer], "placement": PLACEMENT},
        "cost_model": ctx.cost.cost_model,
        "cost_inputs": _cost_inputs(ctx),
        "link_latency": ctx.cost.link_latency,
        "frame_period_ms": ctx.frame_period_ms,
        "down": list(ctx.down),
        "views": views,
        "predicted": {k: fig[k] for k in ("latency_ms", "latency_breakdown", "energy_mj",
                                          "battery_life_h", "model_bytes", "val", "test",
                                          "meets") if k in fig},
        "failure_sets": {"epsilon": sets.epsilon, "count": len(sets),
                         "neglected_mass": sets.neglected_mass, "by_size": by_size},
        "importance": {k: imp[k] for k in ("shapley", "ratio", "full_accuracy", "note")
                       if k in imp},
        "baselines": base,
        "contingency": table,
        "seconds": time.perf_counter() - t0,
    }
    rows = _pareto_rows(result, levels)
    png = None
    if plot:
        from slimedge.plan.plots import pareto_png

        feas = [(r.latency_ms, r.expected, r.energy_mj)
                for r in result.problem.feasible_records()]
        chosen = {"latency_ms": fig["latency_ms"], "energy_mj": fig["energy_mj"],
                  "expected_accuracy": result.best.expected}
        png = pareto_png(feas, rows, chosen, base,
                         f"{ctx.fleet.name}: plan vs baselines (val)")
    return PlanOutcome(plan, rows, png, result)


def _version() -> str | None:
    try:
        from slimedge import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - the package always has it
        return None


def plan_summary(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What `slimedge plan --json` prints."""
    p = plan["predicted"]
    val = p["val"]
    out = {
        "levels": [v["level_index"] for v in plan["views"]],
        "devices": [v["device"] for v in plan["views"]],
        "latency_ms": p["latency_ms"],
        "energy_mj": p["energy_mj"],
        "battery_life_h": p.get("battery_life_h"),
        "cost_model": plan["cost_model"],
        "link_latency": plan["link_latency"],
        "down": list(plan["down"]),
        "prefer": plan["search"]["prefer"],
        "accuracy": val["accuracy"],
        "expected_accuracy": val["expected_accuracy"],
        "expected_accuracy_neglected_mass": val["expected_accuracy_neglected_mass"],
        "worst_k_accuracy": val["worst_k_accuracy"],
        "k": val["k"],
        "test": ({k: p["test"][k] for k in ("accuracy", "expected_accuracy",
                                            "worst_k_accuracy")} if "test" in p else None),
        "meets": p["meets"],
        "baselines": {n: summary_row(b) for n, b in plan["baselines"].items()},
        "contingency_rows": len(plan["contingency"]["rows"]),
        "search": {k: plan["search"][k] for k in ("seconds", "generations_run",
                                                  "unique_candidates", "accuracy_evaluations",
                                                  "accuracy_cache_hits")},
    }
    return out
