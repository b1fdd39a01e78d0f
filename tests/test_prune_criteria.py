"""Importance criteria: every one ranks a planted dead filter last; Taylor is checked exactly."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from slimedge.prune import PruneError  # noqa: E402
from slimedge.prune.criteria import (  # noqa: E402
    calibration_batches,
    get_criterion,
    list_criteria,
    score,
)
from slimedge.prune.graph import analyze  # noqa: E402

L = keras.layers


def run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Eager forward pass in inference mode (predict() would trace a function per model)."""
    return np.asarray(model(x, training=False))
DEAD = 2  # the planted dead channel of group "c1"


def _plain_model(dead: bool = True, seed: int = 0) -> keras.Model:
    """input -> c1 (6) -> relu -> c2 (5) -> relu -> GAP -> Dense(3); c1 channel DEAD zeroed."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1), name="img")
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(5, 3, padding="same", name="c2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(3, name="out")(x)
    model = keras.Model(inp, out)
    c1 = model.get_layer("c1")
    kernel, bias = c1.get_weights()
    kernel = np.abs(kernel)  # inputs are >= 0, so every other channel is alive after the ReLU
    bias[:] = 0.1
    if dead:
        kernel[..., DEAD] = 0.0
        bias[DEAD] = 0.0
    c1.set_weights([kernel, bias])
    return model


def _bn_model() -> keras.Model:
    """c1 -> BN -> ReLU -> c2 -> GAP -> Dense; BN gamma = beta = 0 on channel DEAD."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1), name="img")
    x = L.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(4, 3, padding="same", name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(3, name="out")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for name in ("bn1", "bn2"):
        bn = model.get_layer(name)
        n = bn.gamma.shape[0]
        gamma, beta = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.0, n)  # mostly alive
        if name == "bn1":
            gamma[DEAD] = beta[DEAD] = 0.0
        bn.set_weights([gamma, beta, rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n)])
    return model


def _data(n: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 8, 8, 1)).astype("float32")


def _sum_loss(y_true, y_pred):
    return keras.ops.sum(y_pred)


def _ranks_dead_last(scores: np.ndarray) -> None:
    assert scores.shape == (6,)
    assert np.argmin(scores) == DEAD
    assert scores[DEAD] < 0.5 * np.delete(scores, DEAD).min()


def test_registry():
    assert list_criteria() == ["bn_scale", "l1", "taylor"]
    with pytest.raises(PruneError, match=r"unknown pruning criterion 'l2'.*bn_scale, l1, taylor"):
        get_criterion("l2")


def test_l1_ranks_dead_filter_last_and_matches_kernel_norms():
    model = _plain_model()
    scores = score("l1", model)
    assert set(scores) == {"c1", "c2"}
    _ranks_dead_last(scores["c1"])
    assert scores["c1"][DEAD] == 0.0
    kernel = model.get_layer("c2").get_weights()[0]
    np.testing.assert_allclose(scores["c2"], np.abs(kernel).sum(axis=(0, 1, 2)), rtol=1e-6)


def test_l1_sums_over_tied_producers():
    inp = keras.Input((8, 8, 2), name="img")
    a = L.Conv2D(3, 1, name="a")(inp)
    b = L.Conv2D(3, 1, name="b")(inp)
    s = L.Add(name="add")([a, b])
    out = L.Dense(2, name="out")(L.GlobalAveragePooling2D(name="gap")(s))
    model = keras.Model(inp, out)
    scores = score("l1", model)
    expect = sum(np.abs(model.get_layer(n).get_weights()[0]).sum(axis=(0, 1, 2)) for n in "ab")
    np.testing.assert_allclose(scores["a"], expect, rtol=1e-6)


def test_bn_scale_ranks_zero_gamma_last():
    model = _bn_model()
    scores = score("bn_scale", model)
    _ranks_dead_last(scores["c1"])
    np.testing.assert_allclose(scores["c2"], np.abs(model.get_layer("bn2").get_weights()[0]))


def test_bn_scale_without_batchnorm_is_an_error():
    with pytest.raises(PruneError, match=r"group 'c1' has no BatchNormalization"):
        score("bn_scale", _plain_model())


def test_taylor_ranks_dead_filter_last():
    x = _data()
    for model in (_plain_model(), _bn_model()):
        scores = score("taylor", model, calibration=calibration_batches(x, batch_size=8),
                       loss_fn=_sum_loss)
        _ranks_dead_last(scores["c1"])
        assert scores["c1"][DEAD] == 0.0


def test_taylor_is_exact_where_the_loss_is_linear_in_the_activation():
    # After c2's ReLU the graph is linear (GAP, Dense) and the loss is the outputs' sum, so
    # a * dL/da summed over positions IS the loss change when channel c is zeroed there.
    model = _plain_model(dead=False)
    x = _data(10, seed=3)
    scores = score("taylor", model, calibration=[(x[:6], None), x[6:]], loss_fn=_sum_loss)
    base = run(model, x).sum(axis=1)
    dense = model.get_layer("out")
    kernel, bias = dense.get_weights()
    expect = []
    for c in range(5):
        zeroed = kernel.copy()
        zeroed[c] = 0.0
        dense.set_weights([zeroed, bias])
        expect.append(np.abs(base - run(model, x).sum(axis=1)).mean())
        dense.set_weights([kernel, bias])
    np.testing.assert_allclose(scores["c2"], expect, rtol=1e-4, atol=1e-6)


def test_taylor_uses_targets_from_the_calibration_batches():
    model = _plain_model(dead=False)
    x = _data(8)
    target = run(model, x)

    def distill(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_pred - y_true))

    # At the teacher's own outputs the distillation gradient is zero, so every score is 0.
    scores = score("taylor", model, calibration=calibration_batches(x, target, batch_size=4),
                   loss_fn=distill)
    assert all(np.all(s < 1e-9) for s in scores.values())
    shifted = calibration_batches(x, target + 1.0, batch_size=4)
    assert score("taylor", model, calibration=shifted, loss_fn=distill)["c2"].max() > 0


def test_taylor_needs_calibration_and_loss():
    with pytest.raises(PruneError, match="calibration batches and a loss_fn"):
        score("taylor", _plain_model(), calibration=None, loss_fn=_sum_loss)
    with pytest.raises(PruneError, match="empty calibration"):
        score("taylor", _plain_model(), calibration=[], loss_fn=_sum_loss)


def test_custom_criterion_output_is_checked():
    model = _plain_model()
    groups = analyze(model).prunable()

    def short(model, groups, *, calibration=None, loss_fn=None):
        return {g.id: np.ones(g.channels - 1) for g in groups}

    with pytest.raises(PruneError, match=r"gave no 6 scores for group 'c1'"):
        score(short, model, groups)
