"""The head is the C++ core's pooling followed by an extractable classifier."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from slimedge import _core
from slimedge.model.head import (
    build_head,
    classify_pooled,
    core_logits,
    head_classifier,
    head_info,
    head_pooling,
    load_head,
)
from slimedge.model.pooling import ModelConfigError

V, D, C = 6, 16, 5


def _frames(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, V, D)).astype(np.float32) * 3
    mask = rng.random((n, V)) < 0.6
    mask[0] = False  # one frame with no live view
    mask[1] = True
    return x, mask


@pytest.mark.parametrize("mode", ["max", "mean", "weighted"])
@pytest.mark.parametrize("hidden", [32, None])
def test_head_equals_classifier_of_core_pool(mode, hidden):
    weights = [0.5, 1, 2, 0, 1, 3] if mode == "weighted" else None
    head = build_head(V, D, C, mode=mode, hidden=hidden, dropout=0.3, seed=3,
                      view_weights=weights)
    x, mask = _frames(1)
    keras_logits = np.asarray(head([x, mask.astype(np.float32)], training=False))
    pooled, empty = _core.pool(x, mask, None if weights is None else np.float32(weights),
                               mode=mode)
    assert empty[0]
    via_core = np.asarray(head_classifier(head)(pooled, training=False))
    np.testing.assert_allclose(keras_logits, via_core, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(core_logits(head, x, mask), via_core, rtol=1e-6, atol=1e-6)
    assert keras_logits.shape == (12, C)


def test_core_logits_int8_features():
    head = build_head(V, D, C, mode="max", seed=0)
    rng = np.random.default_rng(2)
    q = rng.integers(-128, 128, size=(8, V, D), dtype=np.int8)
    scale = rng.uniform(0.01, 0.1, V).astype(np.float32)
    zp = rng.integers(-5, 5, V).astype(np.int32)
    mask = rng.random((8, V)) < 0.5
    x = scale[None, :, None] * (q.astype(np.int32) - zp[None, :, None]).astype(np.float32)
    want = np.asarray(head([x, mask.astype(np.float32)], training=False))
    got = core_logits(head, q, mask, scale=scale, zero_point=zp)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_classifier_shares_weights_and_saves(tmp_path):
    head = build_head(V, D, C, mode="mean", hidden=8, seed=1)
    classifier = head_classifier(head)
    assert classifier.input_shape == (None, D) and classifier.output_shape == (None, C)
    # Training the head moves the classifier's weights: they are the same variables.
    before = [w.copy() for w in classifier.get_weights()]
    head.compile(optimizer=keras.optimizers.SGD(0.1),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, mask = _frames(3, 32)
    head.fit([x, mask.astype(np.float32)], np.arange(32) % C, epochs=1, verbose=0)
    assert any(np.any(a != b) for a, b in zip(before, classifier.get_weights(), strict=True))

    path = tmp_path / "head.keras"
    head.save(path)
    loaded = load_head(path)
    assert head_info(loaded) == {"views": V, "feature_dim": D, "n_classes": C,
                                 "pooling": "mean", "view_weights": None}
    np.testing.assert_allclose(core_logits(loaded, x, mask), core_logits(head, x, mask),
                               rtol=1e-6, atol=1e-6)
    # The classifier alone saves and loads too (the part that is exported).
    classifier.save(tmp_path / "classifier.keras")
    alone = keras.saving.load_model(tmp_path / "classifier.keras")
    pooled, _ = _core.pool(x, mask, mode="mean")
    np.testing.assert_allclose(np.asarray(alone(pooled)), classify_pooled(head, pooled),
                               rtol=1e-6, atol=1e-6)


def test_head_info_weighted():
    head = build_head(3, 4, 2, mode="weighted", view_weights=[1, 2, 3])
    info = head_info(head)
    assert info["pooling"] == "weighted" and info["view_weights"] == [1.0, 2.0, 3.0]
    assert head_pooling(head).mode == "weighted"


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((V, D, C), {"mode": "median"}, "mode: unknown pooling mode 'median'"),
        ((0, D, C), {}, "views: expected an integer >= 1"),
        ((V, D, 1), {}, "n_classes: expected an integer >= 2"),
        ((V, D, C), {"dropout": 1.0}, r"dropout: expected a rate in \[0, 1\)"),
        ((V, D, C), {"hidden": 0}, "hidden: expected None or an integer >= 1"),
        ((V, D, C), {"mode": "weighted", "view_weights": [1, 1]}, "2 weights for 6 views"),
    ],
)
def test_bad_head_settings(args, kwargs, match):
    with pytest.raises(ModelConfigError, match=match):
        build_head(*args, **kwargs)


def test_not_a_head():
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ModelConfigError, match="not a slimedge head"):
        head_classifier(other)
