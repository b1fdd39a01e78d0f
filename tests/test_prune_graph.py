"""Channel-dependency analysis: one small model per graph edge case."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from slimedge.prune import PruneError  # noqa: E402
from slimedge.prune.graph import Member, analyze  # noqa: E402

L = keras.layers


def _input(shape=(8, 8, 1)):
    return keras.Input(shape, name="img")


def _conv(filters, name, **kw):
    return L.Conv2D(filters, 3, padding="same", name=name, **kw)


def test_plain_conv_stack():
    inp = _input()
    x = _conv(4, "c1")(inp)
    x = L.ReLU(name="r1")(x)
    x = L.MaxPooling2D(name="mp")(x)
    x = _conv(6, "c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, name="d")(x)
    graph = analyze(keras.Model(inp, out, name="plain"))

    assert list(graph.groups) == ["input:img", "c1", "c2", "d"]
    assert graph.model_name == "plain"
    c1 = graph.groups["c1"]
    assert c1.channels == 4 and c1.producers == ("c1",) and c1.prunable
    assert c1.consumers == (Member("c2", 1),)
    assert c1.passthroughs == ("r1", "mp")
    assert graph.groups["input:img"].consumers == (Member("c1", 1),)
    assert graph.channels() == {"c1": 4, "c2": 6}


def test_input_and_output_groups_are_not_prunable():
    inp = _input()
    x = L.Rescaling(1 / 255, name="scale")(inp)  # before the first conv: input group
    x = _conv(4, "c1")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(5, name="features")(x)
    graph = analyze(keras.Model(inp, out))

    assert not graph.groups["input:img"].prunable
    assert "model input 'img'" in graph.groups["input:img"].reason
    assert graph.groups["input:img"].passthroughs == ("scale",)
    assert not graph.groups["features"].prunable
    assert "model output" in graph.groups["features"].reason
    assert [g.id for g in graph.prunable()] == ["c1"]


def test_conv_bn_follows_the_conv():
    inp = _input()
    x = _conv(4, "c1", use_bias=False)(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Activation("relu", name="act")(x)
    x = _conv(4, "c2")(x)
    graph = analyze(keras.Model(inp, x))

    c1 = graph.groups["c1"]
    assert c1.followers == (Member("bn1", 1),)
    assert c1.passthroughs == ("act",)
    assert c1.consumers == (Member("c2", 1),)


def test_depthwise_follows_its_input_and_adds_no_group():
    inp = _input()
    x = _conv(4, "c1")(inp)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.Conv2D(8, 1, name="pw")(x)
    graph = analyze(keras.Model(inp, x))

    assert list(graph.groups) == ["input:img", "c1", "pw"]
    assert graph.groups["c1"].followers == (Member("dw", 1), Member("dw_bn", 1))
    assert graph.groups["c1"].consumers == (Member("pw", 1),)


def test_depth_multiplier_above_one_is_an_error():
    inp = _input()
    x = _conv(4, "c1")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw2")(x)
    with pytest.raises(PruneError, match=r"layer 'dw2' \(DepthwiseConv2D\).*depth_multiplier"):
        analyze(keras.Model(inp, x))


def test_residual_add_ties_both_branches():
    inp = _input()
    a = _conv(4, "c1")(inp)
    a = L.ReLU(name="r1")(a)
    b = _conv(4, "c2")(a)
    b = L.BatchNormalization(name="bn2")(b)
    s = L.Add(name="add")([a, b])
    c = _conv(4, "c3")(s)
    s2 = L.Add(name="add2")([s, c])
    x = L.GlobalAveragePooling2D(name="gap")(s2)
    out = L.Dense(3, name="d")(x)
    graph = analyze(keras.Model(inp, out))

    assert list(graph.groups) == ["input:img", "c1", "d"]
    tied = graph.groups["c1"]
    assert tied.producers == ("c1", "c2", "c3")
    assert tied.ties == ("add", "add2")
    assert tied.followers == (Member("bn2", 1),)
    # c2 and c3 read the stream; the Dense reads its pooled end.
    assert set(tied.consumers) == {Member("c2", 1), Member("c3", 1), Member("d", 1)}
    assert tied.prunable


def test_residual_with_the_model_input_is_not_prunable():
    inp = _input((8, 8, 3))
    x = _conv(3, "c1")(inp)
    x = L.Add(name="add")([inp, x])
    x = _conv(4, "c2")(x)
    graph = analyze(keras.Model(inp, x))
    group = graph.groups["input:img"]
    assert group.producers == ("c1",) and not group.prunable


def test_gap_then_dense_last_conv_prunable_dense_output_kept():
    inp = _input()
    x = _conv(4, "c1")(inp)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    x = L.Dense(6, name="features")(x)
    out = L.ReLU(name="features_relu")(x)
    graph = analyze(keras.Model(inp, out))

    last = graph.groups["c1"]
    assert last.prunable
    assert last.consumers == (Member("features", 1),)
    assert last.passthroughs == ("gmp",)
    features = graph.groups["features"]
    assert not features.prunable
    assert "layer 'features_relu'" in features.reason


def test_flatten_then_dense_expands_by_spatial_positions():
    inp = _input()
    x = _conv(4, "c1")(inp)
    x = L.MaxPooling2D(name="mp")(x)  # 4 x 4 x 4
    x = L.Flatten(name="flat")(x)
    x = L.Dropout(0.5, name="drop")(x)
    x = L.Dense(6, name="d1")(x)
    out = L.Dense(2, name="d2")(x)
    graph = analyze(keras.Model(inp, out))

    assert graph.groups["c1"].consumers == (Member("d1", 16),)
    assert graph.groups["c1"].passthroughs == ("mp", "flat", "drop")
    # A Dense output is an ordinary group again (expansion 1).
    assert graph.groups["d1"].consumers == (Member("d2", 1),)
    assert graph.groups["d1"].prunable


def test_softmax_across_channels_blocks_the_group():
    inp = _input()
    x = _conv(4, "c1")(inp)
    x = L.Softmax(name="sm")(x)
    x = _conv(4, "c2")(x)
    y = _conv(4, "c3", activation="softmax")(x)
    out = _conv(2, "c4")(y)
    graph = analyze(keras.Model(inp, out))
    assert not graph.groups["c1"].prunable
    assert "layer 'sm' applies softmax" in graph.groups["c1"].reason
    assert graph.groups["c2"].prunable
    assert not graph.groups["c3"].prunable
    assert "layer 'c3' applies softmax" in graph.groups["c3"].reason


def test_unsupported_layer_is_an_error_naming_it():
    inp = _input()
    x = _conv(4, "c1")(inp)
    x = L.LayerNormalization(name="foo")(x)
    with pytest.raises(PruneError) as err:
        analyze(keras.Model(inp, x))
    assert str(err.value) == ("layer 'foo' (LayerNormalization) is not supported by the "
                              "channel-dependency analysis")


def test_concatenate_is_an_error():
    inp = _input()
    a = _conv(4, "c1")(inp)
    b = _conv(4, "c2")(inp)
    x = L.Concatenate(name="cat")([a, b])
    with pytest.raises(PruneError, match=r"layer 'cat' \(Concatenate\)"):
        analyze(keras.Model(inp, x))


def test_shared_layer_is_an_error():
    inp = _input()
    shared = _conv(1, "shared")
    x = shared(shared(inp))
    with pytest.raises(PruneError, match=r"layer 'shared' \(Conv2D\).*called 2 times"):
        analyze(keras.Model(inp, x))


def test_grouped_conv_is_an_error():
    inp = _input((8, 8, 4))
    x = L.Conv2D(4, 3, groups=2, name="gconv")(inp)
    with pytest.raises(PruneError, match=r"layer 'gconv' \(Conv2D\).*groups=2"):
        analyze(keras.Model(inp, x))


def test_raw_op_is_an_error():
    inp = _input()
    a = _conv(4, "c1")(inp)
    b = _conv(4, "c2")(inp)
    x = a + b  # a keras.ops call, not a layer
    with pytest.raises(PruneError, match=r"raw keras.ops"):
        analyze(keras.Model(inp, x))


def test_sequential_and_nested_models_are_errors():
    seq = keras.Sequential([keras.Input((8, 8, 1)), _conv(2, "c1")], name="seq")
    with pytest.raises(PruneError, match=r"model 'seq' \(Sequential\) is not a functional"):
        analyze(seq)
    inp = _input()
    out = seq(inp)
    with pytest.raises(PruneError, match=r"layer 'seq' \(Sequential\).*nested"):
        analyze(keras.Model(inp, out))


def test_a_branch_used_inside_a_bigger_model_is_analysed_on_its_own_graph():
    inp = _input()
    x = _conv(4, "c1")(inp)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    branch = keras.Model(inp, L.Dense(3, name="features")(x), name="branch")
    views = [keras.Input((8, 8, 1)) for _ in range(3)]
    pooled = L.Maximum()([branch(v) for v in views])  # as the MVCNN calls it, once per view
    keras.Model(views, pooled)
    graph = analyze(branch)
    assert graph.channels() == {"c1": 4}
    assert graph.groups["c1"].consumers == (Member("features", 1),)
