"""BranchRunner against real LiteRT runs of a tiny converted branch (int8, uint8, float32)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from slimedge.errors import SlimEdgeError
from slimedge.runtime.branch import BranchError, BranchOutput, BranchRunner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("device_smoke", ROOT / "tools/device_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    return smoke.make_branch_model(tmp_path_factory.mktemp("branch"),
                                   flavors=("int8", "uint8", "f32"))


@pytest.fixture(scope="module")
def reference(models) -> tuple[np.ndarray, np.ndarray]:
    ref = np.load(models["reference"])
    return ref["images"], ref["keras"]


def _litert_by_hand(path: Path, images: np.ndarray) -> np.ndarray:
    """The model run directly in LiteRT, with the input quantized by the TFLite formula."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    info = np.iinfo(inp["dtype"])
    outs = []
    for image in images:
        q = np.round(image.astype(np.float64) / 255.0 / scale) + zp
        interp.set_tensor(inp["index"], np.clip(q, info.min, info.max).astype(inp["dtype"])[None])
        interp.invoke()
        outs.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(outs)


def test_int8_model_is_quantized_as_litert_expects(models, reference):
    images, keras_out = reference
    runner = BranchRunner(models["int8"])
    assert runner.image_shape == (16, 16, 1) and runner.output_dim == 8
    assert runner.input_dtype == np.int8
    out = runner.run(images)
    assert isinstance(out, BranchOutput)
    assert out.features.dtype == np.int8 and out.features.shape == (len(images), 8)
    assert (out.scale, out.zero_point) == runner.output_quantization
    assert out.scale > 0 and -128 <= out.zero_point <= 127
    assert np.array_equal(out.features, _litert_by_hand(models["int8"], images))
    # Within a few quantization steps of the float Keras model.
    assert np.abs(out.dequantized() - keras_out).max() <= 4 * out.scale


def test_uint8_model_output_is_shifted_to_int8_losslessly(models, reference):
    images, _ = reference
    int8 = BranchRunner(models["int8"]).run(images)
    runner = BranchRunner(models["uint8"])
    assert runner.input_dtype == np.uint8
    out = runner(images)
    raw = _litert_by_hand(models["uint8"], images)
    assert raw.dtype == np.uint8 and out.features.dtype == np.int8
    assert np.array_equal(out.features.astype(int), raw.astype(int) - 128)
    # Same real values as the int8 model's output.
    assert out.scale == pytest.approx(int8.scale)
    np.testing.assert_allclose(out.dequantized(), int8.dequantized(), atol=1.01 * out.scale)


def test_float_model_matches_keras(models, reference):
    images, keras_out = reference
    runner = BranchRunner(models["f32"], num_threads=2)
    assert runner.input_dtype == np.float32 and runner.output_quantization is None
    out = runner.run(images)
    assert out.features.dtype == np.float32 and out.scale is None and out.zero_point is None
    np.testing.assert_allclose(out.features, keras_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out.dequantized(), out.features)


def test_single_image_equals_batch_row(models, reference):
    images, _ = reference
    runner = BranchRunner(models["int8"], reference_kernels=True)
    batch = runner.run(images[:3])
    one = runner.run(images[2])
    assert one.features.shape == (8,)
    assert np.array_equal(one.features, batch.features[2])


@pytest.mark.parametrize("flavor", ["int8", "f32"])
def test_batched_invokes_equal_one_image_at_a_time(models, reference, flavor):
    images, _ = reference
    many = np.concatenate([images] * 3)
    one_by_one = BranchRunner(models[flavor]).run(many)
    batched = BranchRunner(models[flavor], max_batch=4).run(many)
    assert np.array_equal(one_by_one.features, batched.features)


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((16, 16, 1), np.float32), "images must be uint8"),
        (np.zeros((16, 16), np.uint8), r"images must be \(H, W, C\) = \(16, 16, 1\)"),
        (np.zeros((2, 8, 8, 1), np.uint8), "got \\(2, 8, 8, 1\\)"),
        (np.zeros((16, 16, 3), np.uint8), "got \\(16, 16, 3\\)"),
        (np.zeros((1, 1, 16, 16, 1), np.uint8), "images must be"),
    ],
)
def test_bad_images_name_the_model(models, images, match):
    runner = BranchRunner(models["int8"])
    with pytest.raises(BranchError, match=match) as e:
        runner.run(images)
    assert str(models["int8"]) in str(e.value)


def test_bad_model_files(tmp_path, models):
    missing = tmp_path / "view3.tflite"
    with pytest.raises(BranchError, match=f"{missing}: file not found"):
        BranchRunner(missing)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(BranchError, match=f"{garbage}: LiteRT cannot load it"):
        BranchRunner(garbage)
    for threads in (0, -1, 1.5, True):
        with pytest.raises(BranchError, match="num_threads"):
            BranchRunner(models["int8"], num_threads=threads)
    assert issubclass(BranchError, SlimEdgeError)
