"""Static Edge TPU readiness on real converted models: full int8 with static shapes is ready;
float, dynamic-batch and unsupported-op models are not, and the report names the culprit."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from slimedge.export.edgetpu import EDGETPU_OPS, EDGETPU_OPS_SOURCE, check_edgetpu
from slimedge.export.tflite_ops import read_tflite


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from slimedge.convert import to_tflite

    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("edgetpu")
    rep = np.random.default_rng(0).random((8, 16, 16, 1), dtype=np.float32)

    def branch(batch):
        return keras.Sequential([
            keras.Input((16, 16, 1), batch_size=batch),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8),
        ])

    # EXP is a TFLite builtin with an int8 kernel but not an Edge TPU operation.
    inp = keras.Input((16, 16, 1), batch_size=1)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Lambda(lambda t: tf.math.exp(t))(x)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    with_exp = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))

    cases = {
        "int8_b1": (branch(1), "int8"),
        "float32_b1": (branch(1), "float32"),
        "int8_dynamic": (branch(None), "int8"),
        "exp_int8_b1": (with_exp, "int8"),
    }
    paths = {}
    for name, (model, fmt) in cases.items():
        paths[name] = out / f"{name}.tflite"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            paths[name].write_bytes(to_tflite(model, fmt, rep))
    return paths


def test_int8_conv_model_is_ready(models):
    report = check_edgetpu(models["int8_b1"])
    assert report.ready, report.reasons
    assert report.first_unsupported is None and report.reasons == [] and report.cpu_ops == []
    assert report.ops == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "MEAN",
                          "FULLY_CONNECTED"]
    assert set(report.ops) <= EDGETPU_OPS
    summary = report.to_dict()
    assert summary["ready"] is True and summary["op_list_source"] == EDGETPU_OPS_SOURCE


def test_float_model_is_not_ready_and_names_the_float_tensor(models):
    info = read_tflite(models["float32_b1"])
    input_name = info.input_details()[0].name
    report = check_edgetpu(models["float32_b1"])
    assert not report.ready
    assert any(f"'{input_name}'" in r and "is float32" in r for r in report.reasons), report.reasons
    # A float op cannot map: the whole graph falls back from op 0.
    assert report.first_unsupported == (0, "CONV_2D")
    assert report.cpu_ops == report.ops


def test_unsupported_op_is_named_with_its_index(models):
    report = check_edgetpu(models["exp_int8_b1"])
    assert not report.ready
    assert report.ops == ["CONV_2D", "EXP", "CONV_2D", "MEAN"]
    assert report.first_unsupported == (1, "EXP")
    assert report.cpu_ops == ["EXP", "CONV_2D", "MEAN"]
    [reason] = report.reasons
    assert reason.startswith("op 1 EXP is not in the Edge TPU supported operations")
    assert "every op after it runs on the CPU too (2 CONV_2D, 3 MEAN)" in reason


def test_dynamic_batch_is_not_ready(models):
    report = check_edgetpu(models["int8_dynamic"])
    assert not report.ready
    assert report.first_unsupported is None  # every op maps; the shapes do not
    [reason] = report.reasons
    name = read_tflite(models["int8_dynamic"]).input_details()[0].name
    assert f"'{name}'" in reason and "dynamic dimension (-1)" in reason
    assert "batch_size=1" in reason


def test_accepts_bytes(models):
    assert check_edgetpu(models["int8_b1"].read_bytes()).ready


def test_op_list_is_builtin_names():
    from ai_edge_litert import schema_py_generated as schema

    builtins = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    assert EDGETPU_OPS <= builtins, EDGETPU_OPS - builtins
    assert "DEQUANTIZE" not in EDGETPU_OPS and "CONV_2D" in EDGETPU_OPS
