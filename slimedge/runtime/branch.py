"""One view's branch on its device: the view's `.tflite` file run in LiteRT, camera images
(uint8) in, feature vectors out. No TensorFlow: only `ai_edge_litert`.

Input convention (the one the branch was trained with): a uint8 pixel p is the real value
p / 255 in [0, 1]. For a model with a float32 input that value is fed as is; for an int8 (or
uint8) input it is quantized with the input tensor's own scale and zero point,
q = round(p / 255 / scale) + zero_point (round half away from zero, as TFLite's Quantize op),
clipped to the type's range.

Output: for a quantized model, the int8 features as computed with their `(scale, zero_point)`,
ready to send as they are (a uint8 output is shifted to int8 losslessly: q - 128 with
zero_point - 128); for a float model, float32 features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimedge.errors import SlimEdgeError

__all__ = ["BranchError", "BranchOutput", "BranchRunner", "model_input"]


class BranchError(SlimEdgeError):
    """A branch model that cannot be loaded or run, or an image it cannot take."""


@dataclass(frozen=True)
class BranchOutput:
    """Features of one image `(D,)` or a batch `(N, D)`.

    int8 with `scale` and `zero_point` (real value = scale * (q - zero_point)) for quantized
    models; float32 with both None for float models.
    """

    features: np.ndarray
    scale: float | None
    zero_point: int | None

    def dequantized(self) -> np.ndarray:
        """The features as float32 real values."""
        if self.scale is None:
            return self.features.astype(np.float32)
        q = self.features.astype(np.float32) - np.float32(self.zero_point)
        return np.float32(self.scale) * q


_INPUT_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def model_input(images: np.ndarray, dtype: np.dtype,
                quantization: tuple[float, int] | None) -> np.ndarray:
    """uint8 camera pixels -> a branch's input tensor of `dtype` (the convention in the module
    docstring); `quantization` is the input's (scale, zero_point), None for float32. Shared
    by every interpreter that runs a branch (LiteRT here, TFLite Micro in `runtime.mcu`)."""
    x = images.astype(np.float64) / 255.0
    if quantization is None:
        return x.astype(np.float32)
    scale, zp = quantization
    lo, hi = _INPUT_RANGES[np.dtype(dtype)]
    v = x / scale
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + zp  # half away from zero, as TFLite
    return np.clip(q, lo, hi).astype(dtype)


class BranchRunner:
    """Runs one view's branch `.tflite` file in the LiteRT interpreter.

    `reference_kernels=True` selects TFLite's reference kernels, bit-exact with TFLite Micro
    (the default XNNPACK kernels can differ by one quantization step). `delegates`: LiteRT
    delegates (e.g. the Edge TPU's, from `load_delegate`) the interpreter hands ops to.
    """

    def __init__(self, model_path: str | Path, num_threads: int = 1, *,
                 reference_kernels: bool = False, max_batch: int = 1,
                 delegates: Sequence[object] = ()) -> None:
        self.model_path = Path(model_path)
        # Images per invoke when run() gets a batch (needs a model with a dynamic batch axis);
        # per-image arithmetic is the same, only the call overhead is shared.
        self.max_batch = max(1, int(max_batch))
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise BranchError(f"branch model {self.model_path}: num_threads must be an "
                              f"integer >= 1, got {num_threads!r}")
        if not self.model_path.is_file():
            raise BranchError(f"branch model {self.model_path}: file not found")
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
        try:
            self._interp = Interpreter(model_path=str(self.model_path), num_threads=num_threads,
                                       experimental_op_resolver_type=resolver,
                                       experimental_delegates=list(delegates) or None)
        except (ValueError, RuntimeError) as e:
            raise BranchError(f"branch model {self.model_path}: LiteRT cannot load it: "
                              f"{e}") from None
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise self._error(f"a branch has one input and one output, this model has "
                              f"{len(inputs)} and {len(outputs)}")
        inp, out = inputs[0], outputs[0]
        shape = tuple(int(n) for n in inp["shape"])
        signature = tuple(int(n) for n in inp.get("shape_signature", inp["shape"]))
        if len(shape) != 4:
            raise self._error(f"input must be (1, H, W, C), got {shape}")
        if shape[0] != 1:
            if signature[0] != -1:
                raise self._error(f"input batch must be 1 or dynamic, got {shape[0]}")
            self._interp.resize_tensor_input(inp["index"], [1, *shape[1:]])
        if signature[0] != -1:
            self.max_batch = 1
        self._batch = 1
        try:
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise self._error(f"LiteRT cannot allocate its tensors: {e}") from None
        self._in_index = int(inp["index"])
        self._out_index = int(out["index"])

        self.image_shape: tuple[int, int, int] = shape[1:]  # (H, W, C)
        self.input_dtype = np.dtype(inp["dtype"])
        if self.input_dtype in _INPUT_RANGES:
            scale, zp = inp["quantization"]
            if not scale > 0:
                raise self._error(f"{self.input_dtype} input without a quantization scale")
            self._in_quant: tuple[float, int] | None = (float(scale), int(zp))
        elif self.input_dtype == np.float32:
            self._in_quant = None
        else:
            raise self._error(f"input dtype must be int8, uint8 or float32, "
                              f"got {self.input_dtype}")

        out_shape = tuple(int(n) for n in self._interp.get_output_details()[0]["shape"])
        self.output_dim = int(np.prod(out_shape[1:])) if len(out_shape) > 1 else 0
        if not out_shape or out_shape[0] != 1 or self.output_dim < 1:
            raise self._error(f"output must be (1, D) or (1, ...), got {out_shape}")
        self._out_dtype = np.dtype(out["dtype"])
        if self._out_dtype in _INPUT_RANGES:
            scale, zp = out["quantization"]
            if not scale > 0:
                raise self._error(f"{self._out_dtype} output without a quantization scale")
            shift = 128 if self._out_dtype == np.uint8 else 0
            self.output_quantization: tuple[float, int] | None = (float(scale), int(zp) - shift)
        elif self._out_dtype == np.float32:
            self.output_quantization = None
        else:
            raise self._error(f"output dtype must be int8, uint8 or float32, "
                              f"got {self._out_dtype}")

    def _error(self, msg: str) -> BranchError:
        return BranchError(f"branch model {self.model_path}: {msg}")

    def _model_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, C) -> the model's input tensor."""
        return model_input(images, self.input_dtype, self._in_quant)

    def _features(self, n: int) -> np.ndarray:
        y = self._interp.get_tensor(self._out_index).reshape(n, self.output_dim)
        if self._out_dtype == np.uint8:
            return (y.astype(np.int16) - 128).astype(np.int8)
        return y.copy()

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self._interp.resize_tensor_input(self._in_index, [n, *self.image_shape])
            self._interp.allocate_tensors()
            self._batch = n

    def run(self, images: np.ndarray) -> BranchOutput:
        """Features of one uint8 image `(H, W, C)` or a batch `(N, H, W, C)`."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise self._error(f"images must be uint8 (camera pixels), got dtype {images.dtype}")
        single = images.ndim == 3
        if images.shape[-3:] != self.image_shape or images.ndim not in (3, 4):
            raise self._error(f"images must be (H, W, C) = {self.image_shape} or "
                              f"(N, {', '.join(map(str, self.image_shape))}), "
                              f"got {images.shape}")
        batch = images[None] if single else images
        feats = np.empty((len(batch), self.output_dim),
                         np.int8 if self.output_quantization else np.float32)
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch]
            self._resize(len(chunk))
            self._interp.set_tensor(self._in_index, self._model_input(chunk))
            self._interp.invoke()
            feats[start : start + len(chunk)] = self._features(len(chunk))
        scale, zp = self.output_quantization or (None, None)
        return BranchOutput(feats[0] if single else feats, scale, zp)

    __call__ = run
