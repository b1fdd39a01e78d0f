"""Baselines: the same figures as the plan, each rule's defining property, and the published
heuristic's surrogate measured against the evaluator."""

from __future__ import annotations

import numpy as np
import pytest

from slimedge.ladder.importance import view_importance
from slimedge.plan.baselines import BASELINES, device_only, published, run_baselines
from slimedge.plan.context import Constraints
from slimedge.plan.figures import figures
from slimedge.plan.planner import make_plan
from slimedge.plan.search import SearchSettings
from slimedge.plan.synthetic import SyntheticSpec, synthetic_context

BOARDS = ("esp32s3", "nrf52840", "rpi4b", "rpi5", "rpi3bplus")
FLOOR = 0.65


@pytest.fixture(scope="module")
def ctx():
    spec = SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=120, n_test=60, n_train=500,
                         views=len(BOARDS), dim=16, classes=4, hidden=16, difficulty=0.5,
                         seed=1)
    return synthetic_context(Constraints(min_accuracy=FLOOR, k_failures=1), spec=spec,
                             boards=BOARDS)


@pytest.fixture(scope="module")
def importance(ctx):
    return view_importance(ctx.evaluator)


@pytest.fixture(scope="module")
def results(ctx, importance):
    return run_baselines(ctx, importance)


def keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k in ("val", "test", "meets"):
            out |= keys(v, prefix + k + ".")
    return out


def test_baselines_report_the_plans_fields(ctx, results):
    plan = make_plan(ctx, SearchSettings(pop=16, generations=8), plot=False).plan
    plan_fields = keys({"levels": 0, "fractions": 0, **plan["predicted"]})
    assert set(results) == set(BASELINES)
    for name, b in results.items():
        assert plan_fields <= keys(b), name
        assert set(plan["baselines"][name]) >= set(b)
        assert b["val"]["accuracy"] == ctx.evaluator.accuracy(b["levels"])


def test_unpruned_lists_the_devices_it_does_not_fit(results):
    b = results["unpruned"]
    assert b["levels"] == [0] * 5 and not b["fits"]
    assert {d["device"] for d in b["infeasible_devices"]} == {"cam00", "cam01"}
    assert all("needs" in d["message"] for d in b["infeasible_devices"])
    assert b["meets"]["memory"] is False and b["meets"]["all"] is False


def test_uniform_is_the_fastest_uniform_level_that_meets_the_floors(ctx, results):
    b = results["uniform"]
    j = b["levels"][0]
    assert b["levels"] == [j] * 5
    ok = [i for i in range(ctx.levels) if ctx.evaluator.accuracy([i] * 5) >= FLOOR]
    assert ok, "the fixture's floor is reachable by some uniform level"
    lat = {i: ctx.latency([i] * 5) for i in ok}
    assert j == min(ok, key=lambda i: (lat[i], i))
    assert b["val"]["accuracy"] >= FLOOR and b["meets"]["min_accuracy"]
    # memory is reported, not used to pick: the fixture's fastest uniform level fits here
    assert b["fits"] == bool(ctx.fits[np.arange(5), j].all())


def test_uniform_fit_is_the_least_pruning_that_fits_and_meets_the_floor(ctx, results):
    b = results["uniform_fit"]
    j = b["levels"][0]
    assert b["levels"] == [j] * 5 and b["fits"]
    fitting = [i for i in range(ctx.levels) if ctx.fits[:, i].all()]
    ok = [i for i in fitting if ctx.evaluator.accuracy([i] * 5) >= FLOOR]
    assert j == (ok[0] if ok else fitting[0])


def test_a_baseline_that_does_not_fit_is_no_denominator(ctx, results):
    from slimedge.plan.baselines import DOES_NOT_FIT, ratio

    assert not results["unpruned"]["fits"]
    assert ratio(results["unpruned"]["latency_ms"], 10.0, False) == DOES_NOT_FIT
    assert ratio(20.0, 10.0, True) == 2.0
    plan = make_plan(ctx, SearchSettings(pop=16, generations=2), plot=False).plan
    for name, b in plan["baselines"].items():
        assert "energy_mj" in b and "fits" in b, name
        if b["fits"]:
            assert b["latency_vs_plan"] == pytest.approx(
                b["latency_ms"] / plan["predicted"]["latency_ms"])
        else:
            assert b["latency_vs_plan"] == DOES_NOT_FIT == b["energy_vs_plan"]
    assert plan["baselines"]["unpruned"]["latency_vs_plan"] == DOES_NOT_FIT


def test_importance_only_prunes_unimportant_views_more(ctx, results, importance):
    b = results["importance_only"]
    assert b["fits"] and b["val"]["accuracy"] >= FLOOR
    order = np.argsort(importance["shapley"])
    least, most = order[0], order[-1]
    start = np.maximum(ctx.least_pruned_fitting(), 0)
    assert b["levels"][least] - start[least] >= b["levels"][most] - start[most]


def test_device_only_prunes_the_bottleneck_while_floors_hold(ctx, results):
    b = results["device_only"]
    assert b["fits"] and b["val"]["accuracy"] >= FLOOR
    x = np.array(b["levels"])
    v = int(np.argmax(ctx.total_ms[np.arange(5), x]))
    nxt = [j for j in range(x[v] + 1, ctx.levels) if ctx.fits[v, j]]
    if nxt:  # the next step on the bottleneck would break the floor
        y = x.copy()
        y[v] = nxt[0]
        assert ctx.evaluator.accuracy(y) < FLOOR
    # With no floor the rule stops only when the slowest device has no more pruned level.
    free = device_only(ctx, lambda y: True)
    v = int(np.argmax(ctx.total_ms[np.arange(5), free]))
    assert free[v] == max(j for j in range(ctx.levels) if ctx.fits[v, j])


def test_published_heuristic_meets_its_surrogate_not_necessarily_the_evaluator(ctx, importance,
                                                                                results):
    imp = np.array(importance["ratio"])
    imp = imp / imp.sum()
    acc_u = np.array([ctx.evaluator.accuracy([j] * 5) for j in range(ctx.levels)])
    x = published(ctx, importance["ratio"], acc_u)
    assert ctx.fits[np.arange(5), x].all()
    start = np.maximum(ctx.least_pruned_fitting(), 0)
    assert np.all(x >= start)  # starts at the memory minimum, only prunes more
    if float(np.dot(imp, acc_u[start])) >= FLOOR:
        assert float(np.dot(imp, acc_u[x])) >= FLOOR
    else:  # memory alone breaks the surrogate: nothing more is pruned
        assert x.tolist() == start.tolist()
    # with a lower floor it prunes more, and still meets its surrogate
    y = published(ctx.with_constraints(Constraints(min_accuracy=0.5)), importance["ratio"],
                  acc_u)
    assert y.sum() > x.sum()
    assert float(np.dot(imp, acc_u[y])) >= 0.5
    assert results["published"]["levels"] == x.tolist()
    # scored with the measured evaluator like the rest
    assert results["published"]["val"]["accuracy"] == ctx.evaluator.accuracy(x)
    fig = figures(ctx, x)
    assert fig["latency_ms"] == results["published"]["latency_ms"]


def test_published_is_held_to_the_worst_k_floor(ctx, importance):
    from slimedge.plan.failures import AccuracyCache

    acc_u = np.array([ctx.evaluator.accuracy([j] * 5) for j in range(ctx.levels)])
    low = 0.5  # a floor the surrogate lets the rule prune far under
    free = published(ctx.with_constraints(Constraints(min_accuracy=low)), importance["ratio"],
                     acc_u)
    k_live = ~np.eye(5, dtype=bool)
    worst_free = ctx.evaluator.accuracy_over_masks(free, k_live).min()
    start = np.maximum(ctx.least_pruned_fitting(), 0)
    worst_start = ctx.evaluator.accuracy_over_masks(start, k_live).min()
    floor_k = round(float(worst_free + worst_start) / 2, 4)
    if not worst_free < floor_k <= worst_start:
        pytest.skip("the surrogate's own stop already keeps worst-k here")
    held = ctx.with_constraints(Constraints(min_accuracy=low, k_failures=1,
                                            min_accuracy_k=floor_k))
    out = run_baselines(held, importance, names=("published",),
                        cache=AccuracyCache(held.evaluator, held.base_weights))["published"]
    x = np.array(out["levels"])
    assert ctx.evaluator.accuracy_over_masks(x, k_live).min() >= floor_k
    assert out["meets"]["min_accuracy_k"] is True
    assert x.sum() <= free.sum()


def test_baselines_get_contingency_weights_fitted_like_the_plan():
    from slimedge.plan.contingency import build_contingency, weights_by_mask

    spec = SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=120, n_test=60, n_train=500,
                         views=len(BOARDS), dim=16, classes=4, hidden=16, difficulty=0.5,
                         seed=1, mode="mean")
    mean = synthetic_context(Constraints(min_accuracy=0.5, k_failures=1), spec=spec,
                             boards=BOARDS)
    imp = view_importance(mean.evaluator)
    out = run_baselines(mean, imp)
    fitted = 0
    for name, b in out.items():
        w = weights_by_mask(build_contingency(mean, b["levels"], fit=True, extra=False))
        want = figures(mean, b["levels"], weights_by_mask=w)
        assert b["val"]["expected_accuracy"] == pytest.approx(
            want["val"]["expected_accuracy"]), name
        assert b["weights"] == ("fitted contingency rows" if w else "renormalized")
        fitted += bool(w)
    assert fitted  # the mean head gains from fitted rows somewhere, as the plan does
    plain = run_baselines(mean, imp, fit_contingency=False)
    assert all(b["weights"] == "renormalized" for b in plain.values())
