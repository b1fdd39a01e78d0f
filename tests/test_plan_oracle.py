"""The exhaustive oracle against a brute force written independently (evaluator calls only),
and the search against the oracle on small instances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from slimedge.plan import PlanError
from slimedge.plan.context import Constraints
from slimedge.plan.failures import live_masks, sets_up_to
from slimedge.plan.oracle import exhaustive
from slimedge.plan.search import SearchSettings, search, thresholds
from slimedge.plan.slices import Slices, at_latency
from slimedge.plan.synthetic import SyntheticSpec, synthetic_context

BOARDS = ("esp32s3", "nrf52840", "rp2350", "rpi_zero2w", "rpi4b")


@pytest.fixture(scope="module")
def ctx():
    spec = SyntheticSpec(fractions=(0.0, 0.2, 0.4, 0.6, 0.8), n_val=90, n_test=30, n_train=500,
                         views=len(BOARDS), dim=16, classes=4, hidden=16, difficulty=0.5,
                         seed=4)
    return synthetic_context(Constraints(min_accuracy=0.78, k_failures=1, min_accuracy_k=0.7),
                             spec=spec, boards=BOARDS)


def brute_force(ctx):
    """Minimal latency meeting the floors, by evaluating every level vector directly."""
    ev, c = ctx.evaluator, ctx.constraints
    k_live = live_masks(sets_up_to(ctx.views, c.report_k), ctx.views)
    best = None
    for x in itertools.product(range(ctx.levels), repeat=ctx.views):
        if not ctx.fits[np.arange(ctx.views), list(x)].all():
            continue
        lat = ctx.latency(x)
        if best is not None and lat > best[0]:
            continue
        if ev.accuracy(x) < c.min_accuracy:
            continue
        if c.min_accuracy_k is not None and ev.accuracy_over_masks(x, k_live).min() \
                < c.min_accuracy_k:
            continue
        if best is None or lat < best[0]:
            best = (lat, {x})
        elif lat == best[0]:
            best[1].add(x)
    return best


def test_oracle_finds_the_true_optimum(ctx):
    want = brute_force(ctx)
    assert want is not None
    got = exhaustive(ctx)
    assert got.best is not None
    assert got.best.latency_ms == pytest.approx(want[0], rel=1e-12)
    assert got.best.levels in want[1]
    assert got.combinations == int(np.prod(ctx.fits.sum(axis=1)))
    assert got.scored <= got.combinations


def test_oracle_visits_each_configuration_once_in_latency_order(ctx):
    choices = [np.flatnonzero(ctx.fits[v]) for v in range(ctx.views)]
    times = [ctx.total_ms[v, c] for v, c in enumerate(choices)]
    seen = []
    for t in np.unique(np.concatenate(times)):
        X = at_latency(choices, times, float(t))
        assert np.all(ctx.total_ms[np.arange(ctx.views)[None, :], X].max(axis=1) == t)
        seen.extend(tuple(x) for x in X)
    assert len(seen) == len(set(seen)) == int(np.prod([len(c) for c in choices]))
    assert all(ctx.fits[np.arange(ctx.views), list(x)].all() for x in seen)


def test_oracle_reports_none_when_infeasible(ctx):
    res = exhaustive(ctx.with_constraints(Constraints(min_accuracy=0.999)))
    assert res.best is None and res.scored == res.combinations


def test_oracle_refuses_huge_instances(ctx):
    with pytest.raises(PlanError, match="more than 10 configurations"):
        exhaustive(ctx, max_combinations=10)


def test_search_matches_the_oracle_on_a_small_instance(ctx):
    opt = exhaustive(ctx).best
    res = search(ctx, SearchSettings(seed=0))
    assert res.best is not None
    assert res.best.latency_ms == pytest.approx(opt.latency_ms, rel=1e-12)


def test_optimality_tool_runs_and_reports_gaps(capsys):
    import json

    tool = _tool()
    assert tool.main(["--instances", "2", "--views", "3", "--levels", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["instances"] == 2 and len(out["rows"]) == 2
    for r in out["rows"]:
        assert r["search_ms"] >= r["oracle_ms"] > 0  # the oracle is a lower bound
        assert r["gap"] == pytest.approx((r["search_ms"] - r["oracle_ms"]) / r["oracle_ms"])
        assert len(r["boards"]) == 3 and len(r["levels"]) == 3 and r["levels"][0] == 0.0
        assert r["search_proven"] and r["search_enumerated"] > 0  # 27 configurations at most
    assert out["proven"] == 2


def test_optimality_tool_counts_non_monotone_moves(capsys):
    import json

    assert _tool().main(["--monotonicity", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["raises"] + out["lowers"] + out["same"] == 20
    assert out["raises"] > 0 and out["max_gain"] > 0  # the synthetic ladder is not monotone


def _tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "plan_optimality.py"
    spec = importlib.util.spec_from_file_location("plan_optimality", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_slices_partition_the_box(ctx):
    sl = Slices(ctx)
    ts = thresholds(ctx)
    total = 0
    for t in ts:
        total += len(sl.at(float(t)))
        assert sl.box_size(float(t)) == total
    assert sl.box_size(float(ts[-1])) == sl.combinations
    X = sl.configurations(sl.at(float(ts[0])))
    assert np.all(ctx.total_ms[np.arange(ctx.views)[None, :], X].max(axis=1) == ts[0])


def test_search_enumerates_small_boxes_and_proves_its_answer(ctx):
    opt = exhaustive(ctx).best
    res = search(ctx, SearchSettings(seed=0, generations=0))
    exact = res.stages["exact"]
    assert exact["proven"] and exact["enumerated"] > 0
    assert res.best.latency_ms == pytest.approx(opt.latency_ms, rel=1e-12)
    assert res.best.levels == opt.levels  # the whole slice was scored: the same tie-break
    small = search(ctx, SearchSettings(seed=0, generations=0, enumerate_budget=1))
    assert not small.stages["exact"]["proven"] and small.stages["exact"]["enumerated"] == 0
    none = search(ctx, SearchSettings(seed=0, generations=0, enumerate_budget=0))
    assert "exact" not in none.stages


def test_search_proves_infeasibility_of_a_small_instance(ctx):
    res = search(ctx.with_constraints(Constraints(min_accuracy=0.999)),
                 SearchSettings(seed=0, generations=0))
    assert res.best is None
    assert res.stages["exact"]["proven"]
    assert res.stages["exact"]["enumerated"] == Slices(ctx).combinations


def test_enumerate_budget_is_validated():
    with pytest.raises(PlanError, match="enumerate_budget"):
        SearchSettings(enumerate_budget=-1).validate()


SLOW = pytest.mark.slow


@pytest.mark.parametrize("views, seed, instances", [
    (6, 0, 1),
    (6, 2, 1),  # the first instance: the scan alone stops 156 % above the optimum
    (8, 1, 1),  # the first instance: the scan alone stops 18 % above the optimum
    *[pytest.param(6, s, 5, marks=SLOW) for s in (0, 1, 2, 3, 4)],
    # seed 3's first instance: the optimum's box holds 31,250 configurations and the scan
    # alone stops 169 % above it; seed 2's fourth: the scan's margin once skipped its box
    *[pytest.param(8, s, 3 if s != 2 else 4, marks=SLOW) for s in (0, 1, 2, 3, 4)],
])
def test_search_is_exact_on_random_oracle_instances(views, seed, instances):
    """The optimality tool's instances (random catalog boards, levels, failure rates, floors)
    at 6 devices (6 levels) and 8 devices (5 levels): the search's latency equals the
    oracle's. The default run checks the first instances the scan alone misses."""
    rows = _tool().study(instances=instances, views=views, levels=6 if views == 6 else 5,
                         seed=seed)
    assert len(rows) == instances
    for r in rows:
        assert r["gap"] == pytest.approx(0.0, abs=1e-12), r
