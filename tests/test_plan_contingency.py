"""Contingency rows: coverage of failure sets, weights fitted on val for mean/weighted heads
(moot for max), accuracies equal to the evaluator's, and the extra-work step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slimedge import _core
from slimedge.plan.context import Constraints
from slimedge.plan.contingency import build_contingency, fit_weights, weights_by_mask
from slimedge.plan.failures import live_masks, sets_up_to
from slimedge.plan.figures import figures
from slimedge.plan.synthetic import SyntheticSpec, synthetic_context

BOARDS = ("esp32s3", "nrf52840", "rpi4b", "rpi5", "rpi3bplus")


def spec(mode: str) -> SyntheticSpec:
    return SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=150, n_test=90, n_train=600,
                         views=len(BOARDS), dim=16, classes=4, hidden=16, difficulty=0.7,
                         mode=mode, seed=2)


@pytest.fixture(scope="module")
def max_ctx():
    return synthetic_context(Constraints(min_accuracy=0.5, k_failures=2), spec=spec("max"),
                             boards=BOARDS)


@pytest.fixture(scope="module")
def mean_ctx():
    return synthetic_context(Constraints(min_accuracy=0.5, k_failures=2), spec=spec("mean"),
                             boards=BOARDS)


LEVELS = [1, 2, 0, 0, 1]


def test_rows_cover_every_failure_set_up_to_k(max_ctx):
    table = build_contingency(max_ctx, LEVELS)
    masks = [r["dead_mask"] for r in table["rows"]]
    assert sorted(masks) == sorted(sets_up_to(5, 2).tolist())
    assert len(masks) == 5 + 10
    for r in table["rows"]:
        w = np.array(r["weights"])
        assert np.all(w[r["dead_views"]] == 0) and np.all(w >= 0)
        assert r["dead_devices"] == [f"cam{v:02d}" for v in r["dead_views"]]


def test_max_head_weights_are_moot(max_ctx):
    table = build_contingency(max_ctx, LEVELS)
    assert table["rows_pool_mode"] == "max" and not table["weights_fitted"]
    ev = max_ctx.evaluator
    for r, live in zip(table["rows"], live_masks([r["dead_mask"] for r in table["rows"]], 5),
                       strict=True):
        assert r["policy"] == "moot"
        want = _core.redistribute(np.ones(5, np.float32), live, "renormalize")
        np.testing.assert_array_equal(np.float32(r["weights"]), want)
        assert r["accuracy"]["val"] == ev.accuracy(LEVELS, live)
        assert r["accuracy"]["test"] == max_ctx.test_evaluator.accuracy(LEVELS, live)
    assert weights_by_mask(table) == {}


def test_mean_head_weights_are_fitted_on_val(mean_ctx):
    table = build_contingency(mean_ctx, LEVELS)
    assert table["rows_pool_mode"] == "weighted" and table["weights_fitted"]
    evw = dataclasses.replace(mean_ctx.evaluator, mode="weighted")
    fitted = [r for r in table["rows"] if r["policy"] == "fitted"]
    assert fitted, "planted unequal views: some failure set must gain from re-weighting"
    for r in table["rows"]:
        live = ~np.isin(np.arange(5), r["dead_views"])
        assert r["accuracy"]["val"] >= r["renormalized_accuracy"]["val"]
        # the stored float32 weights reproduce the stored accuracy exactly
        assert r["accuracy"]["val"] == evw.accuracy(LEVELS, live, np.float32(r["weights"]))
        if r["policy"] == "renormalize":
            # uniform weights in weighted mode are the head's plain mean
            assert r["accuracy"]["val"] == mean_ctx.evaluator.accuracy(LEVELS, live)
    for r in fitted:
        assert r["accuracy"]["val"] > r["renormalized_accuracy"]["val"]
        assert sum(r["weights"]) == pytest.approx(1.0, abs=1e-6)
    # the plan's expected accuracy is scored with the fitted rows
    rows = weights_by_mask(table)
    with_rows = figures(mean_ctx, LEVELS, weights_by_mask=rows)["val"]
    plain = figures(mean_ctx, LEVELS)["val"]
    assert with_rows["expected_accuracy"] >= plain["expected_accuracy"]
    assert with_rows["worst_k_accuracy"] >= plain["worst_k_accuracy"]


def test_fit_weights_never_loses_on_val(mean_ctx):
    evw = dataclasses.replace(mean_ctx.evaluator, mode="weighted")
    live = np.array([True, False, True, True, True])
    start = np.where(live, 0.25, 0.0).astype(np.float32)
    w = fit_weights(evw, LEVELS, live, start)
    assert w[1] == 0 and w.sum() == pytest.approx(1.0, abs=1e-6)
    assert evw.accuracy(LEVELS, live, w) >= evw.accuracy(LEVELS, live, start)


def test_extra_work_moves_survivors_to_less_pruned_levels(max_ctx):
    ctx = max_ctx.with_constraints(Constraints(min_accuracy=0.5, k_failures=1,
                                               min_accuracy_k=0.99))
    pruned = [3, 3, 3, 3, 3]
    table = build_contingency(ctx, pruned)
    helped = [r for r in table["rows"] if r["extra_work"] is not None]
    assert helped and all(not r["meets_floor"] for r in table["rows"])
    for r in helped:
        ew = r["extra_work"]
        live = ~np.isin(np.arange(5), r["dead_views"])
        assert ew["accuracy"]["val"] > r["accuracy"]["val"]
        assert ew["accuracy"]["val"] == ctx.evaluator.accuracy(ew["levels"], live)
        for m in ew["level_changes"]:
            assert m["to"] < m["from"] and m["view"] not in r["dead_views"]
            assert ctx.fits[m["view"], m["to"]]
        assert ew["latency_ms"] == pytest.approx(ctx.latency(ew["levels"], live))
        assert ew["meets_floor"] == (ew["accuracy"]["val"] >= 0.99)
