"""Reading a .tflite without TensorFlow: the FlatBuffer reader agrees with LiteRT's own view of
the same files (op names in order, tensor types, shapes, shape signatures, I/O)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from slimedge.export import ExportError
from slimedge.export.tflite_ops import read_tflite


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from slimedge.convert import to_tflite

    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("tflite-ops")
    rep = np.random.default_rng(0).random((8, 16, 16, 1), dtype=np.float32)
    paths = {}
    for batch in (None, 1):
        model = keras.Sequential([
            keras.Input((16, 16, 1), batch_size=batch),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.DepthwiseConv2D(3, padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8),
        ])
        tag = "dyn" if batch is None else "b1"
        for fmt in ("int8", "float32", "float16"):
            paths[f"{fmt}_{tag}"] = out / f"{fmt}_{tag}.tflite"
            with warnings.catch_warnings():  # the converter asks for statistics it needs not
                warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
                paths[f"{fmt}_{tag}"].write_bytes(to_tflite(model, fmt, rep))
    return paths


def _litert(path: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No default delegate: XNNPACK would append DELEGATE nodes to the op list.
    return Interpreter(model_path=str(path),
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


@pytest.mark.parametrize("name", ["int8_dyn", "float32_dyn", "float16_dyn", "int8_b1"])
def test_reader_agrees_with_litert(models, name):
    path = models[name]
    info = read_tflite(path)
    it = _litert(path)
    assert info.op_names() == [op["op_name"] for op in it._get_ops_details()]
    for op, lite in zip(info.ops, it._get_ops_details(), strict=True):
        assert list(op.inputs) == [int(i) for i in lite["inputs"]]
        assert list(op.outputs) == [int(i) for i in lite["outputs"]]
    by_index = {t.index: t for t in info.tensors}
    details = it.get_tensor_details()
    assert details, "LiteRT listed no tensors"
    for d in details:
        t = by_index[d["index"]]
        assert t.name == d["name"]
        assert t.dtype == np.dtype(d["dtype"]).name
        assert list(t.shape) == [int(n) for n in d["shape"]]
        assert list(t.shape_signature) == [int(n) for n in d["shape_signature"]]
        scales = d["quantization_parameters"]["scales"]
        assert np.allclose(t.scales, scales) and len(t.scales) == len(scales)
    assert [t.index for t in info.input_details()] == [d["index"] for d in it.get_input_details()]
    assert [t.index for t in info.output_details()] == [
        d["index"] for d in it.get_output_details()]


def test_ops_types_and_static_shapes(models):
    int8 = read_tflite(models["int8_dyn"])
    assert int8.op_names() == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "MEAN",
                               "FULLY_CONNECTED"]
    assert {t.dtype for t in int8.tensors} == {"int8", "int32"}
    # Keras models keep a dynamic batch: the signature says -1 where the shape says 1.
    assert not int8.static_shapes
    first = int8.first_dynamic_tensor()
    assert first.index == int8.inputs[0] and first.shape_signature[0] == -1
    assert first.shape[0] == 1
    assert read_tflite(models["int8_b1"]).static_shapes
    f16 = read_tflite(models["float16_dyn"])
    assert f16.distinct_ops()[0] == "DEQUANTIZE"
    assert "float16" in {t.dtype for t in f16.tensors}
    # Weights are constants; activations are not.
    conv = int8.ops[0]
    assert int8.tensors[conv.inputs[1]].constant and not int8.tensors[conv.outputs[0]].constant
    assert int8.input_details()[0].quantized and int8.input_details()[0].zero_points == (-128,)


def test_activations_exclude_dequantized_weights(models):
    f16 = read_tflite(models["float16_dyn"])
    live = f16.activations()
    dequant_outputs = {o for op in f16.ops if op.name == "DEQUANTIZE" for o in op.outputs}
    assert dequant_outputs and not (dequant_outputs & live)
    assert f16.inputs[0] in live and f16.outputs[0] in live


def test_bytes_and_summary(models):
    data = models["int8_dyn"].read_bytes()
    info = read_tflite(data)
    assert info.source == "model bytes" and info.size_bytes == len(data)
    summary = info.to_dict()
    assert summary["ops"] == info.op_names() and summary["static_shapes"] is False
    assert summary["inputs"][0]["dtype"] == "int8"


def test_not_a_model(tmp_path):
    bad = tmp_path / "notes.tflite"
    bad.write_bytes(b"hello, this is not a flatbuffer")
    with pytest.raises(ExportError, match=r"notes\.tflite: not a TFLite model"):
        read_tflite(bad)
    with pytest.raises(ExportError, match=r"missing\.tflite: no such model file"):
        read_tflite(tmp_path / "missing.tflite")


def test_truncated_model(models, tmp_path):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(models["int8_dyn"].read_bytes()[:200])
    with pytest.raises(ExportError, match=r"cut\.tflite: corrupt TFLite FlatBuffer"):
        read_tflite(cut)
