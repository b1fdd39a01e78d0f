"""Failure-set enumeration and the memoized accuracy engine of the planner."""

from __future__ import annotations

import itertools
import math
from multiprocessing.pool import ThreadPool

import numpy as np
import pytest
from pymoo.parallelization.starmap import StarmapParallelization

from slimedge.plan.failures import (
    AccuracyCache,
    enumerate_failure_sets,
    live_masks,
    mask_of,
    set_probability,
    sets_up_to,
    views_of,
)
from slimedge.plan.synthetic import SyntheticSpec, synthetic_evaluators

SPEC = SyntheticSpec(fractions=(0.0, 0.4, 0.8), n_val=90, n_test=30, n_train=300, views=5,
                     dim=16, classes=4, hidden=16, difficulty=0.6)


@pytest.fixture(scope="module")
def ev():
    return synthetic_evaluators(SPEC)["val"]


def brute_sets(p):
    V = len(p)
    out = {}
    for code in range(1 << V):
        dead = [(code >> v) & 1 for v in range(V)]
        out[code] = math.prod(p[v] if d else 1 - p[v] for v, d in enumerate(dead))
    return out


@pytest.mark.parametrize("eps", [0.0, 1e-4, 1e-3, 1e-2, 0.2])
def test_enumeration_keeps_exactly_the_sets_above_epsilon(eps):
    p = [0.02, 0.06, 0.3, 0.05, 0.6, 0.01]  # one device more likely down than up
    brute = brute_sets(p)
    sets = enumerate_failure_sets(p, eps)
    want = {m for m, q in brute.items() if q > eps}
    assert set(sets.masks.tolist()) == want
    for m, q in zip(sets.masks.tolist(), sets.probabilities, strict=True):
        assert q == pytest.approx(brute[m], rel=1e-12)
        assert q == pytest.approx(set_probability(m, np.array(p)), rel=1e-12)
    assert sets.neglected_mass == pytest.approx(sum(q for m, q in brute.items() if q <= eps),
                                                abs=1e-12)
    sizes = [bin(m).count("1") for m in sets.masks]
    assert sizes == sorted(sizes)  # by size, then value


def test_enumeration_edge_probabilities():
    sets = enumerate_failure_sets([0.0, 1.0, 0.1], 0.0)
    # view 0 never fails, view 1 always does: {1} and {1, 2}
    assert sorted(sets.masks.tolist()) == [0b010, 0b110]
    assert sets.probabilities.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="failure probabilities"):
        enumerate_failure_sets([0.1, 1.5], 1e-3)


def test_sets_up_to_and_mask_helpers():
    masks = sets_up_to(5, 2)
    assert len(masks) == 5 + 10
    assert {tuple(views_of(m)) for m in masks} == (
        {(v,) for v in range(5)} | set(itertools.combinations(range(5), 2)))
    assert mask_of([0, 3]) == 0b1001
    live = live_masks([0b1001], 5)
    assert live.tolist() == [[False, True, True, False, True]]


def test_batched_accuracy_matches_one_mask_at_a_time(ev):
    levels = [0, 2, 1, 1, 0]
    masks = np.r_[0, sets_up_to(5, 2)]
    live = live_masks(masks, 5)
    got = ev.accuracy_over_masks(levels, live)
    want = [ev.accuracy(levels, m) for m in live]  # predictions: one pooling, one classifier
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got[0] == ev.accuracy(levels)


def test_weighted_batch_matches_the_evaluator():
    evw = synthetic_evaluators(SyntheticSpec(**{**SPEC.__dict__, "mode": "mean"}))["val"]
    import dataclasses

    evw = dataclasses.replace(evw, mode="weighted")
    levels = [1, 0, 2, 0, 1]
    live = live_masks([0, 0b00011, 0b10100], 5)
    w = np.array([[1, 2, 0.5, 1, 3], [0.2, 1, 1, 1, 1], [1, 1, 1, 4, 1]], np.float32)
    got = evw.accuracy_over_masks(levels, live, w)
    want = [evw.accuracy(levels, live[i], w[i]) for i in range(3)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_cache_is_keyed_on_live_levels_only(ev):
    cache = AccuracyCache(ev)
    a = cache.get([0, 1, 2, 0, 1], [0b00001, 0b00011])
    assert cache.calls == 2 and cache.hits == 0
    # view 0 and 1 dead: their levels do not matter for the second set; the first set differs
    # only in view 0's level, which is dead there too.
    b = cache.get([2, 0, 2, 0, 1], [0b00001, 0b00011])
    assert cache.hits == 1 and cache.calls == 3
    assert b[1] == a[1]
    live = live_masks([0b00001], 5)[0]
    assert b[0] == pytest.approx(ev.accuracy([2, 0, 2, 0, 1], live))
    assert cache.gathers == 2


def test_runner_gives_identical_results(ev):
    plain = AccuracyCache(ev)
    with ThreadPool(2) as pool:
        runner = StarmapParallelization(pool.starmap)
        par = AccuracyCache(ev, runner=runner)
        reqs = [(np.array(lv), sets_up_to(5, 2)) for lv in ([0, 0, 0, 0, 0], [1, 2, 0, 1, 2])]
        got = par.get_many(reqs)
    want = plain.get_many(reqs)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert par.calls == plain.calls
