"""Slicing and levels: a pruned model computes what the original computes with the removed
channels zeroed where they are consumed; levels map to exact channel counts."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from slimedge.model.backbones import build_branch, list_backbones  # noqa: E402
from slimedge.model.costs import count_macs  # noqa: E402
from slimedge.prune import PruneError  # noqa: E402
from slimedge.prune.graph import analyze  # noqa: E402
from slimedge.prune.levels import (  # noqa: E402
    achieved_level,
    check_level,
    original_channels,
    prune_to_level,
    select_channels,
    target_channels,
)
from slimedge.prune.slicing import prune_model  # noqa: E402

L = keras.layers


def run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Eager forward pass in inference mode (predict() would trace a function per model)."""
    return np.asarray(model(x, training=False))


# --- the oracle ------------------------------------------------------------------------------

def zeroed_reference(model: keras.Model, keep: dict) -> keras.Model:
    """A copy of ``model`` whose consumers ignore the removed channels (input weights 0).

    Not "zero the producer": a BN-followed channel is not zero after BN, but it is gone from
    every consumer in the pruned model, which is what this reproduces.
    """
    graph = analyze(model)
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    for gid, kept in keep.items():
        group = graph.groups[gid]
        removed = np.setdiff1d(np.arange(group.channels), kept)
        for member in group.consumers:
            layer = ref.get_layer(member.layer)
            weights = layer.get_weights()
            rows = np.isin(_row_channels(group.channels, member.expansion), removed)
            weights[0][..., rows, :] = 0.0  # kernel input axis (Conv2D and Dense alike)
            layer.set_weights(weights)
    return ref


def _row_channels(channels: int, expansion: int) -> np.ndarray:
    """The channel each input row of a consumer reads, as Keras' own Flatten lays it out."""
    labels = np.broadcast_to(np.arange(channels, dtype="float32"), (1, expansion, 1, channels))
    return np.asarray(L.Flatten()(labels))[0].astype(int)


def randomize_bn(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial BN statistics, so slicing the wrong BN entry changes the output."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.5, 2.0, n)])


def random_keep(model: keras.Model, seed: int = 0, fraction: float = 0.5) -> dict:
    rng = np.random.default_rng(seed)
    keep = {}
    for group in analyze(model).prunable():
        count = max(1, int(round(group.channels * fraction)))
        keep[group.id] = np.sort(rng.choice(group.channels, count, replace=False))
    return keep


def assert_equivalent(model: keras.Model, keep: dict, seed: int = 0) -> keras.Model:
    pruned = prune_model(model, keep)
    x = np.random.default_rng(seed).random((4, *model.input_shape[1:])).astype("float32")
    expect = run(zeroed_reference(model, keep), x)
    got = run(pruned, x)
    assert got.shape == expect.shape
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)
    # And pruning did change something (the test could otherwise pass vacuously).
    assert not np.allclose(run(model, x), expect, atol=1e-5)
    return pruned


# --- edge-case models ------------------------------------------------------------------------

def _inp(shape=(8, 8, 1)):
    return keras.Input(shape, name="img")


def plain_stack():
    inp = _inp()
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.MaxPooling2D(name="mp")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(6, activation="relu", name="d1")(x)
    return keras.Model(inp, L.Dense(3, name="out")(x), name="plain")


def conv_bn():
    inp = _inp()
    x = L.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(8, 3, padding="same", name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, name="out")(x), name="bn")


def depthwise():
    inp = _inp()
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(name="dw_relu")(x)
    x = L.Conv2D(8, 1, name="pw")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inp, L.Dense(3, name="out")(x), name="dw")


def residual():
    inp = _inp()
    a = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    b = L.DepthwiseConv2D(3, padding="same", name="dw")(a)
    b = L.Conv2D(6, 1, name="pw")(b)
    b = L.BatchNormalization(name="bn")(b)
    s = L.Add(name="add")([a, b])
    s = L.ReLU(name="r")(s)
    x = L.GlobalAveragePooling2D(name="gap")(s)
    return keras.Model(inp, L.Dense(3, name="out")(x), name="res")


def flatten_dense():
    inp = _inp()
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.MaxPooling2D(name="mp")(x)
    x = L.Flatten(name="flat")(x)
    x = L.BatchNormalization(name="flat_bn")(x)  # per-position BN on the flattened axis
    x = L.Dropout(0.3, name="drop")(x)
    x = L.Dense(7, activation="relu", name="d1")(x)
    return keras.Model(inp, L.Dense(3, name="out")(x), name="flat")


PATTERNS = [plain_stack, conv_bn, depthwise, residual, flatten_dense]


@pytest.mark.parametrize("build", PATTERNS, ids=lambda f: f.__name__)
def test_pruned_equals_original_with_removed_channels_zeroed(build):
    keras.utils.set_random_seed(0)
    model = build()
    randomize_bn(model)
    keep = random_keep(model, seed=1)
    pruned = assert_equivalent(model, keep)

    assert pruned.name == model.name
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    assert [type(layer) for layer in pruned.layers] == [type(layer) for layer in model.layers]
    assert pruned.count_params() < model.count_params()
    assert analyze(pruned).channels() == {g: len(k) for g, k in keep.items()}


def test_flatten_dense_slices_rows_per_position():
    keras.utils.set_random_seed(0)
    model = flatten_dense()
    pruned = prune_model(model, {"c1": [1, 3]})
    # 4 x 4 positions x 2 kept channels.
    assert pruned.get_layer("d1").get_weights()[0].shape == (32, 7)
    assert pruned.get_layer("flat_bn").get_weights()[0].shape == (32,)


def test_residual_prunes_both_tied_producers_alike():
    keras.utils.set_random_seed(0)
    model = residual()
    pruned = prune_model(model, {"c1": [0, 2, 5]})
    assert pruned.get_layer("c1").filters == 3
    assert pruned.get_layer("pw").filters == 3
    assert pruned.get_layer("dw").get_weights()[0].shape == (3, 3, 3, 1)
    np.testing.assert_array_equal(pruned.get_layer("pw").get_weights()[0],
                                  model.get_layer("pw").get_weights()[0][:, :, [0, 2, 5]][
                                      ..., [0, 2, 5]])


def test_pruned_model_round_trips_through_keras_file(tmp_path):
    keras.utils.set_random_seed(0)
    model = conv_bn()
    randomize_bn(model)
    pruned = prune_model(model, {"c1": [0, 4], "c2": [1, 2, 7]})
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(run(loaded, x), run(pruned, x),
                               rtol=1e-6, atol=1e-6)
    assert loaded.get_layer("c1").filters == 2 and loaded.name == "bn"


@pytest.mark.parametrize("keep, match", [
    ({"nope": [0]}, r"no channel group 'nope'; prunable groups: c1, c2"),
    ({"out": [0]}, r"group 'out' cannot be pruned: model output"),
    ({"c1": []}, r"keep\['c1'\] is empty"),
    ({"c1": [0, 6]}, r"keep\['c1'\] has indices outside 0..5"),
    ({"c1": [1, 1]}, r"repeats"),
    ({"c1": [0.5]}, r"1-D array of channel indices"),
])
def test_bad_keep_is_an_error(keep, match):
    with pytest.raises(PruneError, match=match):
        prune_model(conv_bn(), keep)


# --- real backbones --------------------------------------------------------------------------

def _branch(name: str) -> keras.Model:
    model = build_branch(name, input_shape=(16, 16, 1), feature_dim=8, width=0.5, seed=3)
    randomize_bn(model, seed=4)
    return model


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_levels_equal_zeroed_original(name):
    model = _branch(name)
    original = original_channels(model)
    for level, criterion in ((0.5, "l1"), (0.75, "bn_scale")):
        result = prune_to_level(model, level, original, criterion, multiple=2)
        keep = result.keep
        assert set(keep) == set(original)
        pruned = assert_equivalent(model, keep)
        assert analyze(pruned).channels() == result.channels
        assert pruned.output_shape == model.output_shape  # D never pruned


@pytest.mark.parametrize("name", list_backbones())
def test_incremental_levels_compose(name):
    model = _branch(name)
    original = original_channels(model)
    first = prune_to_level(model, 0.25, original, "l1", multiple=2)
    second = prune_to_level(first.model, 0.5, original, "l1", multiple=2)
    # Indices of the second step refer to the first step's model: compose them.
    composed = {g: first.keep.get(g, np.arange(original[g]))[idx]
                for g, idx in second.keep.items()}
    x = np.random.default_rng(5).random((4, 16, 16, 1)).astype("float32")
    expect = run(zeroed_reference(model, composed), x)
    np.testing.assert_allclose(run(second.model, x), expect, rtol=1e-4, atol=1e-5)
    assert second.channels == target_channels(original, 0.5, multiple=2)
    assert count_macs(second.model) < count_macs(first.model) < count_macs(model)


def test_taylor_prunes_a_backbone():
    model = _branch("vgg")
    original = original_channels(model)
    x = np.random.default_rng(0).random((8, 16, 16, 1)).astype("float32")
    teacher = run(model, x) + 0.1  # a target the model does not already hit

    def distill(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_pred - y_true))

    result = prune_to_level(model, 0.5, original, "taylor", multiple=2,
                            calibration=[(x, teacher)], loss_fn=distill)
    assert_equivalent(model, result.keep)


# --- level semantics -------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "high", None])
def test_level_outside_range_is_an_error_naming_it(bad):
    with pytest.raises(PruneError, match=repr(bad).replace("(", r"\(")):
        check_level(bad)


def test_target_channels_rounding_rules():
    original = {"a": 16, "b": 64, "c": 10, "d": 3}
    # Level 0 keeps everything, even counts that are not a multiple.
    assert target_channels(original, 0.0, multiple=8) == original
    # 16 * 0.75 = 12 is a tie between 8 and 16: rounds up. 64 * 0.75 = 48. 10 * 0.75 = 7.5
    # -> 8. 3 is below one multiple: never grows.
    assert target_channels(original, 0.25, multiple=8) == {"a": 16, "b": 48, "c": 8, "d": 3}
    assert target_channels(original, 0.25, multiple=4) == {"a": 12, "b": 48, "c": 8, "d": 3}
    # Never below one multiple.
    assert target_channels(original, 0.99, multiple=4) == {"a": 4, "b": 4, "c": 4, "d": 3}
    # Never above the current count.
    current = {"a": 8, "b": 64, "c": 10, "d": 3}
    assert target_channels(original, 0.25, multiple=4, current=current)["a"] == 8
    with pytest.raises(PruneError, match="multiple must be a positive integer, got 0"):
        target_channels(original, 0.5, multiple=0)


def test_targets_shrink_with_level_and_achieved_is_reported():
    original = {"a": 16, "b": 32, "c": 64}
    previous = dict(original)
    for level in np.linspace(0, 0.95, 40):
        targets = target_channels(original, level, multiple=4)
        assert all(targets[g] <= previous[g] for g in original)
        assert abs(achieved_level(original, targets) - level) <= 4 * 3 / 112 + 1e-9 \
            or min(targets.values()) == 4
        previous = targets
    assert achieved_level(original, {"a": 8, "b": 16, "c": 32}) == 0.5


def test_select_channels_keeps_highest_and_breaks_ties_by_index():
    np.testing.assert_array_equal(select_channels(np.array([3.0, 1.0, 3.0, 0.0, 2.0]), 3),
                                  [0, 2, 4])
    np.testing.assert_array_equal(select_channels(np.array([1.0, 1.0, 1.0]), 2), [0, 1])


def test_prune_to_level_checks_the_original_counts():
    model = conv_bn()
    with pytest.raises(PruneError, match="same branch"):
        prune_to_level(model, 0.5, {"c1": 6}, "l1")
    with pytest.raises(PruneError, match="more than the original"):
        prune_to_level(model, 0.5, {"c1": 4, "c2": 8}, "l1")
    with pytest.raises(PruneError, match=r"level 1\.0 is outside"):
        prune_to_level(model, 1.0, original_channels(model), "l1")


def test_level_zero_returns_an_equal_copy():
    model = conv_bn()
    result = prune_to_level(model, 0.0, original_channels(model), "l1")
    assert result.model is not model and result.keep == {} and result.achieved == 0.0
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(run(result.model, x), run(model, x))
