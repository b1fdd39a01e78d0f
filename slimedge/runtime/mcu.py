"""An emulated microcontroller node: the branch runs in the TFLite Micro interpreter with the
board's arena budget (the manifest's `memory_budget_bytes`) as its arena, so it fails exactly
where the board would: a model that needs more arena than the board has is refused before it
runs, naming the bytes needed and available.

The arena need is probed in a child process first (`slimedge.profile.tflm`): TFLite Micro can
crash the whole process on an arena far too small, and an agent must refuse, not crash.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from slimedge.errors import SlimEdgeError
from slimedge.runtime.branch import BranchOutput, model_input

__all__ = ["ArenaTooSmallError", "TflmRunner", "check_arena"]


class ArenaTooSmallError(SlimEdgeError):
    """The model needs more TFLite Micro arena than the board's budget."""


def check_arena(model_path: str | os.PathLike, budget_bytes: int, *, device: str,
                board: str) -> int:
    """Bytes of arena the model uses within `budget_bytes`; ArenaTooSmallError (needed vs
    available) when it does not allocate and run within it."""
    from slimedge.profile.tflm import TFLMError, measure_arena, probe_arena

    if not isinstance(budget_bytes, int) or budget_bytes <= 0:
        raise ArenaTooSmallError(f"device {device} (board {board}): no arena budget in the "
                                 f"manifest (memory_budget_bytes = {budget_bytes!r})")
    probe = probe_arena(model_path, budget_bytes)
    if probe.ok and probe.total_bytes is not None:
        return probe.total_bytes
    try:
        need = f"{measure_arena(model_path)} bytes"
    except TFLMError as e:
        need = f"an unknown number of bytes ({e})"
    raise ArenaTooSmallError(
        f"device {device} (board {board}): {Path(model_path).name} needs {need} of TFLite "
        f"Micro arena, the board's budget is {budget_bytes} bytes (manifest "
        f"memory_budget_bytes): refusing to start, as the board would fail to allocate")


class TflmRunner:
    """Runs one view's branch in TFLite Micro, with the interface of `BranchRunner`
    (`run(image) -> BranchOutput`, `image_shape`, `output_dim`, `output_quantization`).

    Call `check_arena` first: constructing with an arena below the model's need can crash.
    """

    def __init__(self, model_path: str | os.PathLike, arena_bytes: int) -> None:
        from tflite_micro.python.tflite_micro import runtime

        self.model_path = Path(model_path)
        self.arena_bytes = int(arena_bytes)
        try:
            self._interp = runtime.Interpreter.from_file(str(self.model_path),
                                                         arena_size=self.arena_bytes)
        except Exception as e:  # noqa: BLE001 - the binding raises bare RuntimeError/ValueError
            raise SlimEdgeError(f"branch model {self.model_path}: TFLite Micro cannot load it "
                                f"with a {self.arena_bytes}-byte arena: {e}") from None
        inp, out = self._interp.get_input_details(0), self._interp.get_output_details(0)
        shape = tuple(int(n) for n in inp["shape"])
        if len(shape) != 4 or shape[0] != 1:
            raise SlimEdgeError(f"branch model {self.model_path}: input must be (1, H, W, C), "
                                f"got {shape}")
        self.image_shape: tuple[int, int, int] = shape[1:]
        self.input_dtype = np.dtype(inp["dtype"])
        self._in_quant = _quantization(inp) if self.input_dtype != np.float32 else None
        self._out_dtype = np.dtype(out["dtype"])
        self.output_dim = int(np.prod(out["shape"][1:]))
        self.output_quantization = (_quantization(out) if self._out_dtype != np.float32
                                    else None)
        if self._out_dtype == np.uint8 and self.output_quantization:
            s, zp = self.output_quantization
            self.output_quantization = (s, zp - 128)  # sent as int8, as BranchRunner does

    def run(self, image: np.ndarray) -> BranchOutput:
        """Features of one uint8 image (H, W, C)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != self.image_shape:
            raise SlimEdgeError(f"branch model {self.model_path}: expected a uint8 image of "
                                f"shape {self.image_shape}, got {image.dtype} {image.shape}")
        self._interp.set_input(model_input(image[None], self.input_dtype, self._in_quant), 0)
        self._interp.invoke()
        y = np.asarray(self._interp.get_output(0)).reshape(self.output_dim)
        if self._out_dtype == np.uint8:
            y = (y.astype(np.int16) - 128).astype(np.int8)
        scale, zp = self.output_quantization or (None, None)
        return BranchOutput(y.copy(), scale, zp)

    __call__ = run


def _quantization(details: dict) -> tuple[float, int]:
    q = details["quantization_parameters"]
    return float(q["scales"][0]), int(q["zero_points"][0])
