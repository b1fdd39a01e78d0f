"""One scenario -> its rows: the plan and every baseline under each cost model.

The plan is made by the planner's public entry (`make_plan`), which also scores the baselines
(`plan/baselines.py`) the same way: same floors, same evaluator, same weights policy. Rows:
one per method (`plan` and each baseline) and cost model, with

- `latency_ms`, `energy_mj`, `fits` (memory), `levels`;
- accuracies on val and test: nominal, expected (failure-weighted), worst with one device
  failed; `satisfied_val` / `satisfied_test`: memory, latency cap, nominal floor and worst-k
  floor all met on that split;
- `ratio_vs_unpruned` = unpruned latency / the method's, where both fit memory;
  `ratio_vs_uniform` = best uniform's latency / the method's, where both fit memory and the
  uniform level meets the floors; `energy_ratio` = unpruned energy / the method's, where both
  fit (all NaN otherwise: a configuration that cannot be deployed is no denominator);
- `scenario_feasible`: the planner found a configuration meeting every floor;
- `plan_s`: the plan's wall time (search, contingency and baselines; NaN on baseline rows);
- `plan_proven`: the search proved its answer optimal (every faster configuration scored;
  see `SWEEP_ENUMERATE_BUDGET`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from slimedge.plan import PlanError, PlanInfeasibleError
from slimedge.plan.baselines import BASELINES, run_baselines
from slimedge.plan.context import PlanContext
from slimedge.plan.planner import make_plan
from slimedge.plan.search import SearchSettings
from slimedge.simulate import SimulateError
from slimedge.simulate.generators import Scenario, make_scenario
from slimedge.simulate.state import LadderState, ScenarioCache, ladder_state

METHODS = ("plan", *BASELINES)
# The planner enumerates a box exactly when it holds at most `search.ENUMERATE_BUDGET`
# configurations; on the demo ladder one configuration costs ~3-8 ms to score (275 frames x
# 12 views x D = 128, a 128-wide classifier), so a random fleet whose free devices form such a
# box spent minutes in that step alone. A sweep scores thousands of fleets: it enumerates
# boxes up to this size and records per plan whether the answer was proven optimal
# (`plan_proven`).
SWEEP_ENUMERATE_BUDGET = 2_000
NAN = math.nan
TIMING_COLUMNS = ("plan_s",)  # vary run to run; every other column is fixed by the seed


def _split(fig: Mapping[str, Any], split: str, key: str) -> float:
    part = fig.get(split)
    value = None if part is None else part.get(key)
    return NAN if value is None else float(value)


def _satisfied(ctx: PlanContext, fig: Mapping[str, Any], split: str) -> bool:
    c = ctx.constraints
    if split not in fig or not fig["fits"]:
        return False
    if c.max_latency_ms is not None and fig["latency_ms"] > c.max_latency_ms:
        return False
    if _split(fig, split, "accuracy") < c.min_accuracy:
        return False
    return c.min_accuracy_k is None or _split(fig, split, "worst_k_accuracy") >= c.min_accuracy_k


def _ratio(num: float, den: float, ok: bool) -> float:
    return num / den if ok and den > 0 else NAN


def _rows(ctx: PlanContext, scenario: Scenario, cost_model: str,
          figs: Mapping[str, Mapping[str, Any] | None], plan_s: float) -> list[dict[str, Any]]:
    un, uni = figs["unpruned"], figs["uniform"]
    uniform_ok = bool(uni and uni["fits"] and uni["meets"]["all"])
    c = ctx.constraints
    feasible = figs["plan"] is not None
    out = []
    for method in METHODS:
        f = figs.get(method)
        row: dict[str, Any] = {
            "generator": scenario.generator, "scenario": scenario.index, "seed": scenario.seed,
            "mix": scenario.mix, "devices": len(scenario.fleet.devices),
            "multi_camera": scenario.multi_camera, "floor_kind": scenario.floor_kind,
            "min_accuracy": c.min_accuracy,
            "min_accuracy_k": NAN if c.min_accuracy_k is None else c.min_accuracy_k,
            "cost_model": cost_model, "method": method, "scenario_feasible": feasible,
        }
        if f is None:
            row.update(levels=[], latency_ms=NAN, energy_mj=NAN, fits=False,
                       satisfied_val=False, satisfied_test=False,
                       **{f"{k}_{s}": NAN for s in ("val", "test")
                          for k in ("accuracy", "expected", "worst_k")},
                       ratio_vs_unpruned=NAN, ratio_vs_uniform=NAN, energy_ratio=NAN)
        else:
            fits = bool(f["fits"])
            lat, energy = float(f["latency_ms"]), float(f["energy_mj"])
            row.update(
                levels=[int(j) for j in f["levels"]], latency_ms=lat, energy_mj=energy,
                fits=fits, satisfied_val=_satisfied(ctx, f, "val"),
                satisfied_test=_satisfied(ctx, f, "test"),
                **{f"{name}_{s}": _split(f, s, key) for s in ("val", "test")
                   for name, key in (("accuracy", "accuracy"), ("expected", "expected_accuracy"),
                                     ("worst_k", "worst_k_accuracy"))},
                ratio_vs_unpruned=_ratio(un["latency_ms"], lat, fits and un["fits"]),
                ratio_vs_uniform=_ratio(uni["latency_ms"], lat, fits and uniform_ok),
                energy_ratio=_ratio(un["energy_mj"], energy, fits and un["fits"]))
        row["plan_s"] = plan_s if method == "plan" else NAN
        # None on baseline rows and where no plan meets the floors
        row["plan_proven"] = (bool(f["proven"]) if method == "plan" and f is not None
                              else None)
        out.append(row)
    return out


def evaluate(state: LadderState, scenario: Scenario, cost_models: Sequence[str]
             ) -> list[dict[str, Any]]:
    """Rows of one scenario (module docstring)."""
    rows: list[dict[str, Any]] = []
    for cm in cost_models:
        try:
            ctx = PlanContext.from_ladder(state.root, scenario.fleet, scenario.constraints,
                                          cost_model=cm)
        except PlanError as exc:
            raise SimulateError(f"{scenario.generator} scenario {scenario.index} "
                                f"(seed {scenario.seed}): {exc}") from None
        cache = ScenarioCache(ctx.evaluator, ctx.base_weights, state.store)
        settings = SearchSettings(seed=scenario.search_seed,
                                  enumerate_budget=SWEEP_ENUMERATE_BUDGET)
        t0 = time.perf_counter()
        try:
            outcome = make_plan(ctx, settings, importance=state.importance, cache=cache,
                                plot=False)
            figs: dict[str, Any] = dict(outcome.plan["baselines"])
            p = outcome.plan["predicted"]
            figs["plan"] = {**p, "fits": bool(p["meets"]["memory"]),
                            "levels": [v["level_index"] for v in outcome.plan["views"]],
                            "proven": bool(outcome.plan["search"]["stages"]
                                           .get("exact", {}).get("proven", False))}
        except PlanInfeasibleError:
            figs = dict(run_baselines(ctx, state.importance, cache=cache))
            figs["plan"] = None
        rows += _rows(ctx, scenario, cm, figs, time.perf_counter() - t0)
    return rows


def run_chunk(ladder: str, generator: str, start: int, stop: int, seed: int,
              cost_models: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of scenarios start..stop-1 of one generator (a Dask task)."""
    state = ladder_state(ladder)
    rows: list[dict[str, Any]] = []
    for i in range(start, stop):
        rows += evaluate(state, make_scenario(state, generator, i, seed), cost_models)
    return rows
