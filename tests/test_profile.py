"""Conversion to TFLite and the measurements taken from it, run for real (TF, LiteRT, TFLM)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from slimedge.convert import ConversionError, to_tflite  # noqa: E402
from slimedge.profile import litert, tflm  # noqa: E402


def tiny_branch(filters: int, size: int = 16) -> keras.Model:
    inp = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inp, out, name=f"tiny{filters}")


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(0).random((16, 16, 16, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory, calib):
    keras.utils.set_random_seed(0)
    out = {}
    for filters in (8, 32):
        path = tmp_path_factory.mktemp("m") / f"b{filters}.tflite"
        path.write_bytes(to_tflite(tiny_branch(filters), "int8", calib))
        out[filters] = path
    return out


def test_int8_model_runs_in_litert_with_image_quantization(int8_models):
    it = litert.interpreter(int8_models[8])
    d = it.get_input_details()[0]
    assert d["dtype"] == np.int8
    scale, zp = d["quantization"]
    assert zp == -128 and scale == pytest.approx(1 / 255, rel=1e-3)  # pixel p -> p - 128
    assert it.get_output_details()[0]["dtype"] == np.int8


def test_every_format_converts_and_runs(calib):
    model = tiny_branch(8)
    x = calib[:1]
    want = model.predict(x, verbose=0)
    sizes = {}
    for fmt in ("float32", "float16", "dynamic"):
        blob = to_tflite(model, fmt)
        sizes[fmt] = len(blob)
        it = litert.interpreter(blob)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * np.abs(want).max())
    assert sizes["float16"] < sizes["float32"]


def test_int8_needs_representative_data():
    with pytest.raises(ConversionError, match="needs a representative dataset"):
        to_tflite(tiny_branch(8), "int8")
    with pytest.raises(ConversionError, match="unknown TFLite format 'int4'"):
        to_tflite(tiny_branch(8), "int4")


def test_tflm_arena_is_measured_and_shrinks_with_filters(int8_models):
    small, large = (tflm.measure_arena(int8_models[f]) for f in (8, 32))
    assert 0 < small < large
    # The measured arena is sufficient and (within the 1 KiB search step) necessary.
    assert tflm.fits_in_sram(int8_models[8], small).ok
    assert not tflm.fits_in_sram(int8_models[8], small - 2048).ok


def test_tflm_too_small_arena_is_reported_not_crashing(int8_models):
    probe = tflm.fits_in_sram(int8_models[32], 1024)
    assert not probe.ok and probe.total_bytes is None


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(tflm.TFLMError, match="no such model file"):
        tflm.measure_arena(tmp_path / "absent.tflite")
    with pytest.raises(litert.LiteRTError, match="absent.tflite: LiteRT cannot load it"):
        litert.measure_latency(tmp_path / "absent.tflite")


def test_latency_and_activation_bytes(int8_models):
    lat = litert.measure_latency(int8_models[8], repeats=5, warmup=1)
    assert lat.median_ms > 0 and lat.p10_ms <= lat.median_ms <= lat.p90_ms
    # conv1: 16x16x1 in + 16x16x8 out, int8; maxpool: 16x16x8 in + 8x8x8 out
    assert litert.peak_activation_bytes(int8_models[8]) == 16 * 16 * 8 + 8 * 8 * 8


def test_kernel_sets_agree_and_unknown_is_named(int8_models):
    outs = {}
    for kernels in litert.KERNELS:
        it = litert.interpreter(int8_models[8], kernels=kernels)
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.arange(np.prod(d["shape"])).reshape(d["shape"])
                      .astype(np.int8))
        it.invoke()
        outs[kernels] = it.get_tensor(it.get_output_details()[0]["index"]).astype(int)
    # Same arithmetic up to rounding: XNNPACK and the builtin kernels may differ by 1 LSB.
    for kernels in ("xnnpack", "builtin"):
        assert np.abs(outs[kernels] - outs["reference"]).max() <= 1
    assert litert.measure_latency(int8_models[8], repeats=3, warmup=1,
                                  kernels="reference").median_ms > 0
    with pytest.raises(litert.LiteRTError, match="kernels: unknown kernel set 'gpu'"):
        litert.interpreter(int8_models[8], kernels="gpu")
