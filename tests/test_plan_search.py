"""The pymoo problem, the memory repair, the search and the whole planner on a small synthetic
ladder over real catalog boards (an ESP32-S3 and an nRF52840 that need pruning, Pi 4, Pi 5)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from slimedge.ladder.evaluator import Evaluator
from slimedge.plan import PlanError, PlanInfeasibleError
from slimedge.plan.context import Constraints, PlanContext
from slimedge.plan.failures import enumerate_failure_sets, live_masks, sets_up_to
from slimedge.plan.planner import make_plan
from slimedge.plan.problem import MemoryRepair, PlanProblem
from slimedge.plan.search import SearchSettings, choose, initial_population, search
from slimedge.plan.synthetic import (
    make_fleet,
    synthetic_context,
    synthetic_evaluators,
    synthetic_level_entries,
)

FAST = SearchSettings(pop=16, generations=12, seed=3)


class CountingEvaluator(Evaluator):
    """Records every level vector whose features are gathered (= accuracy work done)."""

    def gather(self, levels, live=None):
        self.gathered.append(tuple(int(j) for j in levels))
        return super().gather(levels, live)


def counting(ctx: PlanContext) -> PlanContext:
    ev = ctx.evaluator
    cev = CountingEvaluator(ev.features, ev.scales, ev.zero_points, ev.labels, ev.classifier,
                            ev.mode)
    cev.gathered = []
    return dataclasses.replace(ctx, evaluator=cev)


@pytest.fixture(scope="module")
def ctx():
    return synthetic_context(Constraints(min_accuracy=0.75, k_failures=1, min_accuracy_k=0.7))


def test_repair_prunes_more_to_fit(ctx):
    repair = MemoryRepair(ctx)
    X = np.array([[0, 0, 0, 0], [3, 1, 2, 0], [1, 3, 0, 3]])
    fixed = repair._do(None, X)
    # esp32s3 fits levels 1..3, nrf52840 only 2..3: raised to the least-pruned fitting level
    np.testing.assert_array_equal(fixed, [[1, 2, 0, 0], [3, 2, 2, 0], [1, 3, 0, 3]])
    assert ctx.fits[np.arange(4), fixed].all()


def test_memory_infeasible_candidates_never_reach_the_evaluator(ctx):
    c = counting(ctx)
    problem = PlanProblem(c)
    recs = problem.assess(np.array([[0, 0, 0, 0], [1, 1, 3, 3], [1, 2, 0, 0]]))
    assert [r.status for r in recs[:2]] == ["memory", "memory"]
    assert math.isnan(recs[0].accuracy) and math.isnan(recs[0].expected)
    assert c.evaluator.gathered and set(c.evaluator.gathered) == {(1, 2, 0, 0)}
    assert recs[0].feasible is False
    G = problem.constraint_values(recs[0])
    assert G[0] == 2  # two views do not fit
    # A whole search: nothing it measured is memory-infeasible, and nothing in the result.
    c2 = counting(ctx)
    res = search(c2, FAST)
    fits = c2.fits
    assert c2.evaluator.gathered
    for lv in c2.evaluator.gathered:
        assert fits[np.arange(4), list(lv)].all(), lv
    assert all(fits[np.arange(4), list(r.levels)].all() for r in res.front)
    assert res.best is not None and fits[np.arange(4), list(res.best.levels)].all()


def test_checks_run_cheapest_first(ctx):
    """A candidate under the nominal floor is never scored under failures."""
    strict = ctx.with_constraints(Constraints(min_accuracy=0.99, k_failures=1,
                                              min_accuracy_k=0.7))
    problem = PlanProblem(strict)
    (rec,) = problem.assess(np.array([[1, 2, 0, 0]]))
    assert rec.status == "accuracy" and problem.cache.calls == 1
    assert problem.constraint_values(rec)[3] == 1.0  # not reached: pessimistic


def test_problem_figures_equal_the_evaluator(ctx):
    problem = PlanProblem(ctx.with_constraints(Constraints(k_failures=1, min_accuracy_k=0.0)))
    x = [1, 2, 1, 0]
    (rec,) = problem.assess(np.array([x]))
    ev = ctx.evaluator
    assert rec.accuracy == pytest.approx(ev.accuracy(x), abs=1e-12)
    k_masks = sets_up_to(4, 1)
    worst = ev.accuracy_over_masks(x, live_masks(k_masks, 4)).min()
    assert rec.worst_k == pytest.approx(worst, abs=1e-12)
    sets = enumerate_failure_sets(ctx.failure_p, ctx.constraints.epsilon)
    want = float(np.dot(sets.probabilities,
                        ev.accuracy_over_masks(x, live_masks(sets.masks, 4))))
    assert rec.expected == pytest.approx(want, abs=1e-12)
    assert rec.latency_ms == pytest.approx(ctx.latency(x))
    F = problem.objective_values(rec)
    # the nRF52840 runs on a battery: its life is the fourth objective
    assert F == [rec.latency_ms, -rec.expected, rec.energy_mj, -rec.life_h]
    assert rec.energy_mj == pytest.approx(ctx.energies(np.array([x]))[0])
    assert rec.life_h == pytest.approx(ctx.life_h[1, 2]) and np.isfinite(rec.life_h)


def test_initial_population_is_repaired_and_seeded(ctx):
    X, counts = initial_population(ctx, 16, np.random.default_rng(0), np.arange(4.0))
    assert len(X) == 16 and len({tuple(x) for x in X}) == 16
    assert ctx.fits[np.arange(4)[None, :], X].all()
    assert counts["uniform"] >= 1 and counts["speed"] >= 1


def test_seed_reproduces_the_search(ctx):
    a, b = search(ctx, FAST), search(ctx, FAST)
    assert a.best is not None
    assert a.best.levels == b.best.levels
    assert [r.levels for r in a.front] == [r.levels for r in b.front]
    assert list(a.problem.archive) == list(b.problem.archive)


def test_selection_rule_picks_lowest_latency_then_expected(ctx):
    res = search(ctx, FAST)
    feas = res.problem.feasible_records()
    lo = min(r.latency_ms for r in feas)
    assert res.best.latency_ms == lo
    assert res.best.expected == max(r.expected for r in feas if r.latency_ms == lo)
    assert res.best in res.front
    assert choose([]) is None


def test_plan_predictions_equal_the_evaluator(ctx):
    out = make_plan(ctx, FAST, plot=False)
    plan = out.plan
    levels = [v["level_index"] for v in plan["views"]]
    ev, tev = ctx.evaluator, ctx.test_evaluator
    assert plan["predicted"]["val"]["accuracy"] == ev.accuracy(levels)
    assert plan["predicted"]["test"]["accuracy"] == tev.accuracy(levels)
    sets = enumerate_failure_sets(ctx.failure_p, ctx.constraints.epsilon)
    want = float(np.dot(sets.probabilities,
                        ev.accuracy_over_masks(levels, live_masks(sets.masks, 4))))
    assert plan["predicted"]["val"]["expected_accuracy"] == pytest.approx(want, abs=1e-12)
    assert plan["predicted"]["val"]["expected_accuracy_neglected_mass"] == pytest.approx(
        sets.neglected_mass)
    assert plan["predicted"]["latency_ms"] == pytest.approx(ctx.latency(levels))
    assert plan["predicted"]["meets"]["all"] is True
    assert plan["views"][1]["device"] == "cam01" and plan["views"][1]["board"] == "nrf52840"


def test_more_demanding_floor_costs_latency(ctx):
    loose = search(ctx.with_constraints(Constraints(min_accuracy=0.6)), FAST)
    tight = search(ctx.with_constraints(Constraints(min_accuracy=0.8)), FAST)
    assert loose.best.latency_ms <= tight.best.latency_ms
    assert tight.best.accuracy >= 0.8


def test_latency_cap_is_a_constraint(ctx):
    free = search(ctx.with_constraints(Constraints(min_accuracy=0.5)), FAST)
    cap = free.best.latency_ms * 1.5
    capped = search(ctx.with_constraints(Constraints(min_accuracy=0.5, max_latency_ms=cap)),
                    FAST)
    assert all(r.latency_ms <= cap for r in capped.problem.feasible_records())
    # The cap binds: some candidates were rejected for latency alone, and the answer obeys it.
    assert any(r.status == "latency" for r in capped.problem.archive.values())
    assert capped.best.latency_ms <= cap


# --------------------------------------------------------------------------- infeasible


def test_memory_infeasible_is_explained_before_search():
    ctx = synthetic_context(Constraints(min_accuracy=0.5), arena0=2_000_000)
    with pytest.raises(PlanInfeasibleError) as info:
        make_plan(ctx, FAST, plot=False)
    reasons = info.value.summary["infeasible"]
    devices = {r["device"] for r in reasons}
    assert "cam01" in devices  # the nRF52840
    r = next(r for r in reasons if r["device"] == "cam01")
    assert r["constraint"] == "memory" and r["ram_kind"] == "arena"
    assert r["ram_needed_bytes"] > r["ram_budget_bytes"]
    assert "cam01 (nrf52840)" in str(info.value) and "arena" in str(info.value)
    assert info.value.exit_code == 3


def test_unreachable_accuracy_is_explained(ctx):
    strict = ctx.with_constraints(Constraints(min_accuracy=0.99))
    with pytest.raises(PlanInfeasibleError) as info:
        make_plan(strict, FAST, plot=False, baselines=False)
    (reason,) = info.value.summary["infeasible"]
    assert reason["constraint"] == "min_accuracy"
    assert reason["best_accuracy"] < 0.99 and reason["shortfall"] > 0
    assert "min accuracy 0.99 unreachable: best found" in str(info.value)


def test_unreachable_k_floor_is_explained(ctx):
    strict = ctx.with_constraints(Constraints(min_accuracy=0.5, k_failures=2,
                                              min_accuracy_k=0.97))
    with pytest.raises(PlanInfeasibleError) as info:
        make_plan(strict, FAST, plot=False)
    (reason,) = info.value.summary["infeasible"]
    assert reason["constraint"] == "min_accuracy_k" and reason["k"] == 2
    assert 0 < reason["best_worst_k_accuracy"] < 0.97
    assert len(reason["worst_failure_set"]) >= 1
    assert "baselines" in info.value.summary


def test_unreachable_latency_is_explained(ctx):
    strict = ctx.with_constraints(Constraints(min_accuracy=0.5, max_latency_ms=10.0))
    with pytest.raises(PlanInfeasibleError) as info:
        make_plan(strict, FAST, plot=False)
    (reason,) = info.value.summary["infeasible"]
    assert reason["constraint"] == "max_latency" and reason["device"] == "cam01"
    assert reason["best_latency_ms"] > 10.0


# --------------------------------------------------------------------------- bad input


def test_fleet_and_ladder_mismatch_names_both_numbers():
    from slimedge.devices import load_fleet, resolve_fleet_path

    spec = synthetic_context().evaluator
    entries = synthetic_level_entries((0.0, 0.3, 0.6, 0.9))
    with pytest.raises(PlanError, match=r"fleet 'mixed12' has 12 views .*has 4 views"):
        PlanContext.build(spec, load_fleet(resolve_fleet_path("mixed12")), entries,
                          Constraints())


def test_a_view_seen_by_two_devices_is_refused():
    from slimedge.devices import load_catalog
    from slimedge.devices.fleet import Device

    cat = load_catalog()
    fleet = make_fleet([cat["rpi4b"]] * 2, [0.05, 0.05])
    both = Device("cam01", "rpi4b", cat["rpi4b"], (0, 1), 0.05, "x", {}, "")
    fleet = dataclasses.replace(fleet, devices=(fleet.devices[0], both))
    from slimedge.plan.synthetic import SyntheticSpec

    ev = synthetic_evaluators(SyntheticSpec(fractions=(0.0, 0.5), n_val=20, n_test=10,
                                            n_train=60, views=2, dim=8, classes=2,
                                            hidden=8))["val"]
    with pytest.raises(PlanError, match="view 0 is seen by devices 'cam00' and 'cam01'"):
        PlanContext.build(ev, fleet, synthetic_level_entries((0.0, 0.5)), Constraints())


@pytest.mark.parametrize("kwargs, match", [
    ({"min_accuracy": 1.5}, "min_accuracy: expected an accuracy"),
    ({"k_failures": 4}, "k_failures: expected a whole number in 0..3"),
    ({"k_failures": 0, "min_accuracy_k": 0.5}, "needs k_failures >= 1"),
    ({"max_latency_ms": -1}, "max_latency_ms"),
    ({"epsilon": 1.0}, "epsilon"),
])
def test_bad_constraints_are_named(ctx, kwargs, match):
    with pytest.raises(PlanError, match=match):
        ctx.with_constraints(Constraints(**kwargs))


def test_bad_settings_are_named(ctx):
    with pytest.raises(PlanError, match="pop: expected a whole number >= 4"):
        search(ctx, SearchSettings(pop=2))


def test_latency_is_the_slowest_live_device_plus_the_aggregator(ctx):
    x = np.array([0, 2, 1, 0])
    per_view = [ctx.total_ms[v, x[v]] for v in range(4)]
    assert ctx.latency(x) == pytest.approx(max(per_view) + ctx.aggregator_ms, rel=1e-12)
    live = np.array([True, False, True, True])
    assert ctx.latency(x, live) == pytest.approx(
        max(p for p, ok in zip(per_view, live, strict=True) if ok) + ctx.aggregator_ms)
    X = np.array([x, [1, 1, 1, 1]])
    np.testing.assert_allclose(ctx.latencies(X), [ctx.latency(X[0]), ctx.latency(X[1])])
