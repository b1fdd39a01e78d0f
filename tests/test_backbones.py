"""Branch backbone registry (every entry built, checked and converted to full-int8 TFLite) and
the MAC/parameter counter."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from slimedge.errors import SlimEdgeError  # noqa: E402
from slimedge.model.backbones import (  # noqa: E402
    BackboneError,
    build_branch,
    list_backbones,
    register_backbone,
)
from slimedge.model.costs import count_macs, count_params, layer_macs  # noqa: E402
from slimedge.prune.graph import analyze  # noqa: E402
from slimedge.prune.levels import original_channels, prune_to_level  # noqa: E402

L = keras.layers


def run(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Eager forward pass in inference mode (predict() would trace a function per model)."""
    return np.asarray(model(x, training=False))
SMALL = {"input_shape": (16, 16, 1), "feature_dim": 8}


def _images(n: int, shape=(16, 16, 1), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape)).astype("float32")


def _count(model: keras.Model, kind: type) -> int:
    return sum(type(layer) is kind for layer in model.layers)


def test_registry_lists_both_backbones():
    assert {"vgg", "mobilenet"} <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(BackboneError, match=r"unknown backbone 'resnet'; known: .*mobilenet.*vgg"):
        build_branch("resnet")
    assert issubclass(BackboneError, SlimEdgeError)


def test_bad_options_are_errors():
    with pytest.raises(BackboneError, match=r"backbone 'vgg' has no option\(s\) dilation"):
        build_branch("vgg", dilation=2)
    with pytest.raises(BackboneError, match=r"depth must be an integer in 1..8, got 9"):
        build_branch("mobilenet", depth=9)
    with pytest.raises(BackboneError, match="width must be a positive number"):
        build_branch("vgg", width=0)
    with pytest.raises(BackboneError, match="feature_dim must be a positive integer"):
        build_branch("vgg", feature_dim=0)
    with pytest.raises(BackboneError, match=r"input_shape must be \(H, W, C\)"):
        build_branch("vgg", input_shape=(16, 16))
    with pytest.raises(BackboneError, match="already registered"):
        register_backbone("vgg")(lambda x, **kw: x)


@pytest.mark.parametrize("name", list_backbones())
def test_branch_contract(name):
    model = build_branch(name, **SMALL)
    assert model.name == name
    assert model.input_shape == (None, 16, 16, 1)
    assert model.output_shape == (None, 8)
    assert model.layers[-2].name == "features" and type(model.layers[-2]) is L.Dense
    features = run(model, _images(5))
    assert features.dtype == np.float32 and np.all(features >= 0) and features.max() > 0
    # Every registered backbone is prunable: the analysis understands all its layers, and the
    # feature width D is never a prunable group.
    graph = analyze(model)
    assert graph.prunable() and "features" not in graph.channels()


@pytest.mark.parametrize("name", list_backbones())
def test_weights_are_deterministic_from_the_seed(name):
    a, b, c = (build_branch(name, seed=s, **SMALL) for s in (7, 7, 8))
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


@pytest.mark.parametrize("name", list_backbones())
def test_width_scales_the_trunk(name):
    narrow = build_branch(name, width=0.5, **SMALL)
    wide = build_branch(name, width=1.0, **SMALL)
    assert count_macs(narrow) < count_macs(wide)
    filters = [layer.filters for layer in narrow.layers if type(layer) is L.Conv2D]
    assert all(f % 4 == 0 and f >= 4 for f in filters)


def test_vgg_structure():
    model = build_branch("vgg", depth=3, **SMALL)
    assert _count(model, L.Conv2D) == 3
    assert _count(model, L.BatchNormalization) == 3
    assert _count(model, L.MaxPooling2D) == 2  # after conv0 and conv2
    # Conv -> BN -> ReLU order.
    names = [layer.name for layer in model.layers]
    i = names.index("conv1")
    assert [type(layer) for layer in model.layers[i:i + 3]] == [L.Conv2D, L.BatchNormalization,
                                                              L.ReLU]
    default = build_branch("vgg")
    assert default.input_shape == (None, 48, 48, 1) and default.output_shape == (None, 128)
    assert [la.filters for la in default.layers if type(la) is L.Conv2D] == [16, 32, 32, 64, 64]


def test_mobilenet_structure():
    model = build_branch("mobilenet", **SMALL)
    assert _count(model, L.DepthwiseConv2D) == 5
    assert _count(model, L.Add) == 3
    add = model.get_layer("block1_add")
    assert add.input[0].shape == add.input[1].shape
    assert _count(build_branch("mobilenet", depth=1, **SMALL), L.Add) == 0


def _to_int8(model: keras.Model, calibration: np.ndarray) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i:i + 1]]
                                                for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.mark.parametrize("name, level", [*((n, 0.0) for n in list_backbones()),
                                         ("mobilenet", 0.9)])
def test_converts_to_full_int8_tflite_and_runs_in_litert(name, level):
    model = build_branch(name, **SMALL)
    if level:  # a deep ladder level (4-channel layers, sliced residual) converts as well
        model = prune_to_level(model, level, original_channels(model), "l1").model
    calibration = _images(16)
    calibration[0], calibration[1] = 0.0, 1.0  # the whole [0, 1] input range
    interpreter = Interpreter(model_content=_to_int8(model, calibration))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    scale, zero = inp["quantization"]
    # The documented input contract: int8 = uint8 pixel - 128.
    assert zero == -128 and scale == pytest.approx(1 / 255, rel=1e-3)
    # Full integer: no float tensor left anywhere in the graph.
    float_tensors = [t["name"] for t in interpreter.get_tensor_details()
                     if t["dtype"] == np.float32]
    assert not float_tensors

    x = _images(4, seed=1)
    expect = run(model, x)
    out_scale, out_zero = out["quantization"]
    for i in range(len(x)):
        q = np.clip(np.round(x[i:i + 1] / scale) + zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        got = (interpreter.get_tensor(out["index"]).astype(np.float32) - out_zero) * out_scale
        err = np.abs(got - expect[i:i + 1]).max()
        assert err <= 0.1 * np.abs(expect).max() + 4 * out_scale


def test_count_macs_by_hand():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="c")(inp)  # 8*8 * 3*3*3 * 4 = 6912
    x = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)  # 4*4 * 3*3 * 4 = 576
    x = L.BatchNormalization(name="bn")(x)  # not counted
    x = L.SeparableConv2D(5, 3, padding="valid", name="sep")(x)  # 2*2 * (36 + 4*5) = 224
    x = L.Flatten()(x)
    x = L.Dense(6, name="d")(x)  # 20 * 6 = 120
    model = keras.Model(inp, x)
    assert layer_macs(model) == {"c": 6912, "dw": 576, "sep": 224, "d": 120}
    assert count_macs(model) == 6912 + 576 + 224 + 120
    assert count_params(model) == model.count_params()
    # A nested model is counted through.
    outer_in = keras.Input((8, 8, 3))
    outer = keras.Model(outer_in, L.Dense(2, name="head")(model(outer_in)))
    assert count_macs(outer) == count_macs(model) + 12


def test_default_branch_cost_fits_the_training_budget():
    # Measured on a 2-core CPU: a 4-conv branch at 32 px trains 1,600 x 12 views in ~30-40 s
    # per epoch, a 6-conv one at 64 px over 100 s; the defaults must stay in the first class (tens of MMACs at 48 px), not the 64 px 6-conv one.
    assert count_macs(build_branch("vgg")) < 20_000_000
    assert count_macs(build_branch("mobilenet")) < 20_000_000
