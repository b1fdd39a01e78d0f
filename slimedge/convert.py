"""Keras → TFLite conversion in the formats devices run. One implementation for the ladder
(which measures int8 costs) and for export (which ships each device its format).

Paths that work with Keras 3 (tensorflow 2.21, the pinned version): `TFLiteConverter.
from_keras_model`; `from_concrete_functions` keeps READ_VARIABLE ops and int8 calibration then
fails. Full int8 needs a representative dataset, TFLITE_BUILTINS_INT8 only (no Flex ops:
microcontrollers and the Edge TPU cannot run them) and int8 input/output types.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from slimedge.errors import SlimEdgeError

FORMATS: tuple[str, ...] = ("int8", "float16", "dynamic", "float32")


class ConversionError(SlimEdgeError):
    """A model that cannot be converted to the asked format."""


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def to_tflite(
    model: Any,
    fmt: str,
    representative: np.ndarray | None = None,
    *,
    max_calibration: int = 200,
    static_batch: int | None = None,
) -> bytes:
    """Convert `model` (a single-input Keras model) to TFLite bytes in format `fmt`.

    `representative` (float32, the model's input layout with a leading batch axis) calibrates
    int8 activations; required for "int8". Its value range sets the input quantization: images
    scaled to [0, 1] give scale 1/255 and zero point -128, so a uint8 pixel p maps to p - 128.

    `static_batch`: None keeps the model's batch axis as it is (dynamic for a model built with
    `keras.Input(shape)`); a number fixes it (`with_static_batch`), as device artifacts need:
    the Edge TPU compiler refuses dynamic shapes and microcontrollers plan memory statically.
    The weights and the calibration are the same, so the arithmetic per image is too.
    """
    if fmt not in FORMATS:
        raise ConversionError(f"format: unknown TFLite format '{fmt}' (expected one of {FORMATS})")
    tf = _tf()
    if static_batch is not None:
        model = with_static_batch(model, static_batch)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt == "int8":
        if representative is None or len(representative) == 0:
            raise ConversionError(
                f"model '{model.name}': int8 conversion needs a representative dataset"
            )
        calib = np.asarray(representative[:max_calibration], dtype=np.float32)

        def gen() -> Iterator[list[np.ndarray]]:
            for i in range(calib.shape[0]):
                yield [calib[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    elif fmt == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        # Keras' export step prints its endpoints to stdout; keep --json output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return bytes(converter.convert())
    except Exception as exc:  # the converter raises assorted types; name the model
        raise ConversionError(f"model '{model.name}': {fmt} conversion failed: {exc}") from exc


def with_static_batch(model: Any, batch: int = 1) -> Any:
    """A copy of single-input `model` whose input has a fixed batch size (same layers, same
    weights)."""
    import keras

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConversionError(f"model '{model.name}': static batch must be an integer >= 1, "
                              f"got {batch!r}")
    if len(model.inputs) != 1:
        raise ConversionError(f"model '{model.name}': a static batch needs a single-input "
                              f"model, it has {len(model.inputs)} inputs")
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ConversionError(f"model '{model.name}': input shape {shape} has unknown "
                              "dimensions besides the batch axis")
    try:
        # The source input's own name: an unnamed Input takes Keras' process-wide counter
        # (keras_tensor_<n>), which the converter writes into the signature, so the same model
        # converted twice would give different bytes (and a different model hash).
        clone = keras.models.clone_model(
            model, input_tensors=keras.Input(shape, batch_size=batch,
                                             dtype=model.inputs[0].dtype,
                                             name=model.inputs[0].name))
        clone.set_weights(model.get_weights())
    except Exception as exc:  # Keras raises assorted types for models it cannot clone
        raise ConversionError(f"model '{model.name}': cannot rebuild it with a static batch "
                              f"of {batch}: {exc}") from exc
    return clone
