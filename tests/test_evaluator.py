"""The evaluator and view importance on a synthetic ladder: real C++ pooling and a real
classifier, with features whose informativeness per view is planted."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from reference_aggregate import pool_reference

from slimedge.ladder.classifier import NumpyClassifier
from slimedge.ladder.evaluator import Evaluator
from slimedge.ladder.importance import shapley_from_values, view_importance
from slimedge.ladder.store import LadderError

N, V, D, C, L = 240, 5, 16, 4, 3


def planted(seed: int = 0) -> Evaluator:
    """Class c lights feature block c; view v shows it with strength decreasing in v, and
    higher levels add noise, so views and levels differ in a known order."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N)
    feats = np.zeros((L, N, V, D), np.int8)
    for lvl in range(L):
        for v in range(V):
            signal = np.zeros((N, D))
            signal[np.arange(N), labels * (D // C)] = 40 - 6 * v
            noise = rng.normal(0, 16 + 10 * lvl, (N, D))
            feats[lvl, :, v] = np.clip(signal + noise, -128, 127).astype(np.int8)
    w = np.zeros((D, C), np.float32)
    for c in range(C):
        w[c * (D // C), c] = 1.0
    clf = NumpyClassifier([w], [np.zeros(C, np.float32)], [False])
    return Evaluator(feats, np.full(L, 0.05, np.float32), np.zeros(L, np.int32), labels, clf, "max")


def test_accuracy_matches_numpy_reference_pooling():
    ev = planted()
    levels = [0, 2, 1, 0, 2]
    live = np.array([1, 0, 1, 1, 0], bool)
    feats = np.stack([ev.features[levels[v], :, v] for v in range(V)], axis=1)
    pooled, empty = pool_reference(feats, live, None, "max", ev.scales[levels], ev.zero_points[levels])
    want = np.mean(np.where(empty, -1, ev.classifier.predict(pooled)) == ev.labels)
    assert ev.accuracy(levels, live) == pytest.approx(want)


def test_more_pruning_and_fewer_views_cost_accuracy():
    ev = planted()
    assert ev.accuracy([0] * V) > ev.accuracy([2] * V)
    one = np.zeros(V, bool)
    one[V - 1] = True  # the weakest view alone
    assert ev.accuracy([0] * V) > ev.accuracy([0] * V, one)
    assert ev.accuracy([0] * V, np.zeros(V, bool)) == 0.0  # no view: no prediction


def test_accuracy_vs_failed_exact_and_sampled():
    ev = planted()
    rows = ev.accuracy_vs_failed([0] * V, max_subsets=5)
    assert [r["k"] for r in rows] == list(range(V))
    assert rows[0]["exact"] and rows[0]["subsets"] == 1
    assert not rows[2]["exact"] and rows[2]["subsets"] == 5  # C(5,2) = 10 > 5: sampled
    assert all(r["worst"] <= r["mean"] for r in rows)
    assert rows[0]["mean"] >= rows[-1]["mean"]


def test_bad_levels_are_named():
    ev = planted()
    with pytest.raises(LadderError, match="view 1 has level index 7"):
        ev.accuracy([0, 7, 0, 0, 0])
    with pytest.raises(LadderError, match="expected one level index per view"):
        ev.accuracy([0, 0])


def test_shapley_is_exact_on_a_known_game():
    # v(S) = sum of member values + bonus if players 0 and 1 are both in: Shapley splits it.
    V_ = 4
    base = np.array([0.1, 0.2, 0.3, 0.4])
    values = np.zeros(1 << V_)
    for code in range(1 << V_):
        members = [i for i in range(V_) if code >> i & 1]
        values[code] = base[members].sum() + (0.5 if {0, 1} <= set(members) else 0.0)
    phi = shapley_from_values(values, V_)
    np.testing.assert_allclose(phi, [0.35, 0.45, 0.3, 0.4])


def test_shapley_matches_brute_force_permutations():
    ev = planted(1)
    imp = view_importance(ev)
    V_ = V
    perms = list(itertools.permutations(range(V_)))
    brute = np.zeros(V_)
    for perm in perms:
        live = np.zeros(V_, bool)
        prev = 0.0
        for p in perm:
            live[p] = True
            acc = ev.accuracy([0] * V_, live)
            brute[p] += acc - prev
            prev = acc
    brute /= math.factorial(V_)
    np.testing.assert_allclose(imp["shapley"], brute, atol=1e-12)
    assert imp["shapley_sum"] == pytest.approx(imp["full_accuracy"])
    # The planted order: earlier views carry more signal.
    assert imp["shapley"][0] > imp["shapley"][-1]
    assert imp["single_view_accuracy"][0] > imp["single_view_accuracy"][-1]
    assert sum(imp["ratio"]) == pytest.approx(1.0)


def test_classifier_from_keras_folds_batchnorm_and_matches():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((D,))
    x = keras.layers.Dense(8, use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(0.3)(x)
    out = keras.layers.Dense(C)(x)
    model = keras.Model(inp, out)
    bn = model.layers[2]
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8),
                    rng.uniform(0.5, 2, 8)])
    x = rng.normal(size=(32, D)).astype(np.float32)
    clf = NumpyClassifier.from_keras(model)
    np.testing.assert_allclose(clf.logits(x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_classifier_rejects_unknown_layers(tmp_path):
    keras = pytest.importorskip("keras")
    inp = keras.Input((D,))
    x = keras.layers.LayerNormalization(name="norm")(inp)
    model = keras.Model(inp, keras.layers.Dense(C)(x))
    from slimedge.ladder.classifier import ClassifierError

    with pytest.raises(ClassifierError, match=r"layer 'norm' \(LayerNormalization\) is not supported"):
        NumpyClassifier.from_keras(model)
    clf = planted().classifier
    clf.save(tmp_path / "c.npz")
    back = NumpyClassifier.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.weights[0], clf.weights[0])
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ClassifierError, match="bad.npz: not a classifier file"):
        NumpyClassifier.load(tmp_path / "bad.npz")


def test_float_features_are_pooled_without_quantization():
    ev = planted()
    floats = (ev.features.astype(np.float32) * 0.05)
    fev = Evaluator(floats, None, None, ev.labels, ev.classifier, "max")
    levels = [0, 1, 2, 1, 0]
    live = np.array([1, 1, 0, 1, 1], bool)
    np.testing.assert_array_equal(fev.predictions(levels, live), ev.predictions(levels, live))
