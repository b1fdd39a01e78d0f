"""The Keras ViewPooling layer computes exactly what the C++ core computes."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimedge import _core
from slimedge.model.pooling import ModelConfigError, ViewPooling

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def pooling_case(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    b = draw(st.integers(1, 6))
    v = draw(st.integers(1, 12))
    d = draw(st.integers(1, 24))
    mode = draw(st.sampled_from(["max", "mean", "weighted"]))
    per_frame_mask = draw(st.booleans())
    per_frame_weights = draw(st.booleans())
    # Features far from 0 on both sides: max must not be clipped at 0.
    x = (rng.normal(size=(b, v, d)) * 10 ** rng.uniform(-2, 2)).astype(np.float32)
    live_p = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    mask = rng.random((b, v) if per_frame_mask else (v,)) < live_p
    if per_frame_mask and b > 1:
        mask[0] = False  # always one all-dead row in a batch
    weights = None
    if mode == "weighted":
        weights = rng.uniform(0, 3, size=(b, v) if per_frame_weights else (v,))
        weights[rng.random(weights.shape) < 0.25] = 0.0  # zero weights: skipped views
        weights = weights.astype(np.float32)
    return x, mask, weights, mode


def keras_pool(x, mask, weights, mode):
    layer = ViewPooling(mode)
    return np.asarray(layer(x, mask, weights))


@SETTINGS
@given(pooling_case())
def test_matches_core_float(case):
    x, mask, weights, mode = case
    want, empty = _core.pool(x, mask, weights, mode=mode)
    got = keras_pool(x, mask, weights, mode)
    assert got.shape == want.shape
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(x).max())
    assert np.all(got[empty] == 0.0)


@SETTINGS
@given(pooling_case(), st.integers(0, 2**31 - 1))
def test_matches_core_int8(case, seed):
    _, mask, weights, mode = case
    rng = np.random.default_rng(seed)
    b, v, d = case[0].shape
    q = rng.integers(-128, 128, size=(b, v, d), dtype=np.int8)
    scale = rng.uniform(1e-3, 0.5, size=v).astype(np.float32)
    zero_point = rng.integers(-20, 20, size=v).astype(np.int32)
    # Dequantized in NumPy exactly as the core does: scale[v] * (q - zero_point[v]) in float32.
    x = (scale[None, :, None] * (q.astype(np.int32) - zero_point[None, :, None]).astype(np.float32))
    want, _ = _core.pool(q, mask, weights, mode=mode, scale=scale, zero_point=zero_point)
    got = keras_pool(x.astype(np.float32), mask, weights, mode)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5)


@pytest.mark.parametrize("mode", ["max", "mean", "weighted"])
def test_dead_views_never_leak(mode):
    x = np.full((2, 3, 4), -5.0, np.float32)
    x[:, 1] = np.inf  # garbage in the dead view
    x[:, 2] = np.nan
    mask = np.array([[1, 0, 0], [0, 0, 0]], np.float32)
    weights = np.array([2.0, 1.0, 1.0], np.float32) if mode == "weighted" else None
    got = keras_pool(x, mask, weights, mode)
    np.testing.assert_array_equal(got[0], -5.0)  # max of negatives stays negative
    np.testing.assert_array_equal(got[1], 0.0)


@pytest.mark.parametrize("mode", ["max", "mean", "weighted"])
def test_gradients_finite_with_dead_frames(mode):
    rng = np.random.default_rng(0)
    x = tf.Variable(rng.normal(size=(3, 4, 5)).astype(np.float32))
    mask = np.array([[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]], bool)
    # Live weights summing to zero: an unusable frame in weighted mode as well.
    weights = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 2, 0, 1]], np.float32)
    layer = ViewPooling(mode)
    with tf.GradientTape() as tape:
        y = layer(x, mask, weights if mode == "weighted" else None)
        loss = tf.reduce_sum(y * y) + tf.reduce_sum(y)
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[0], 0.0)  # dead frame: no gradient
    np.testing.assert_array_equal(grad[1][[1, 3]], 0.0)  # dead views: no gradient
    if mode == "weighted":
        np.testing.assert_array_equal(grad[1], 0.0)  # live weights sum to 0: unusable
        np.testing.assert_array_equal(grad[2][2], 0.0)  # weight 0: skipped
    else:
        assert np.any(grad[1][[0, 2]] != 0.0)


def test_weighted_uses_fixed_view_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 6)).astype(np.float32)
    mask = rng.random((4, 3)) < 0.7
    w = np.array([0.2, 1.0, 3.0], np.float32)
    got = np.asarray(ViewPooling("weighted", view_weights=w)(x, mask))
    want, _ = _core.pool(x, mask, w, mode="weighted")
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    # No weights at all: the live mean.
    got = np.asarray(ViewPooling("weighted")(x, mask))
    want, _ = _core.pool(x, mask, mode="mean")
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_symbolic_shapes_and_serialization():
    features = keras.Input((5, 7))
    mask = keras.Input((5,))
    layer = ViewPooling("weighted", view_weights=[1, 2, 3, 4, 5])
    out = layer(features, mask)
    assert tuple(out.shape) == (None, 7)
    clone = ViewPooling.from_config(layer.get_config())
    assert clone.mode == "weighted" and clone.view_weights == (1.0, 2.0, 3.0, 4.0, 5.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "median"}, "unknown pooling mode 'median'"),
        ({"mode": "weighted", "view_weights": [1.0, -1.0]}, "view_weights: entry 1"),
        ({"mode": "weighted", "view_weights": [1.0, float("nan")]}, "view_weights: entry 1"),
        ({"mode": "max", "view_weights": [1.0, 1.0]}, "only pooling mode 'weighted'"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ModelConfigError, match=match):
        ViewPooling(**kwargs)


def test_view_weights_length_checked():
    layer = ViewPooling("weighted", view_weights=[1.0, 1.0])
    with pytest.raises(ModelConfigError, match="2 weights for 3 views"):
        layer(np.zeros((1, 3, 2), np.float32), np.ones((1, 3), np.float32))
