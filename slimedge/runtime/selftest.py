"""The self-test a device runs on a staged model before it may serve it: the model loads, runs
a fixed input, and its tensors are what the signed manifest says (input shape and type, output
shape, type and quantization). On a TFLite Micro board it must also run within the board's
arena budget, in the TFLite Micro interpreter, as the firmware would. No TensorFlow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from slimedge.runtime.update import SELF_TEST, UpdateManifest, UpdateRefusedError


def fixed_image(shape: tuple[int, ...]) -> np.ndarray:
    """A deterministic uint8 test image (a diagonal ramp): the same on every device."""
    idx = np.indices(shape).sum(axis=0)
    return ((idx * 37 + 11) % 256).astype(np.uint8)


def self_test(model_path: Path, manifest: UpdateManifest) -> str:
    """A one-line summary when the model passes; UpdateRefusedError(SELF_TEST) says why not.
    The model runs in the runtime the device serves it with: TFLite Micro within the board's
    arena budget on a microcontroller board (`runtime.mcu`), LiteRT otherwise."""
    from slimedge.errors import SlimEdgeError

    def refuse(msg: str) -> UpdateRefusedError:
        return UpdateRefusedError(SELF_TEST, f"update {manifest.sequence} "
                                  f"({model_path.name}): {msg}")

    try:
        runner, where = _runner(model_path, manifest)
        out = runner.run(fixed_image(runner.image_shape))
    except SlimEdgeError as exc:
        raise refuse(str(exc)) from None
    want_in = manifest.input
    got_shape = (1, *runner.image_shape)
    if got_shape != want_in.shape or str(runner.input_dtype) != want_in.dtype:
        raise refuse(f"input is {got_shape} {runner.input_dtype}, the manifest says "
                     f"{want_in.shape} {want_in.dtype}")
    want = manifest.output
    dim = int(np.prod(want.shape[1:]))
    got_dtype = "float32" if runner.output_quantization is None else "int8"
    if runner.output_dim != dim or got_dtype != want.dtype:
        raise refuse(f"output is (1, {runner.output_dim}) {got_dtype}, the manifest says "
                     f"{want.shape} {want.dtype}")
    if runner.output_quantization is not None:
        scale, zp = runner.output_quantization
        if zp != want.zero_point or not math.isclose(scale, want.scale or 0.0, rel_tol=1e-6):
            raise refuse(f"output quantization is (scale {scale:.9g}, zero point {zp}), the "
                         f"manifest says ({want.scale:.9g}, {want.zero_point})")
    if not np.all(np.isfinite(out.dequantized())):
        raise refuse("the fixed input gives non-finite features")
    return f"{where}: fixed input -> {got_dtype} features (1, {dim}) as signed"


def _runner(model_path: Path, manifest: UpdateManifest) -> tuple[object, str]:
    if not manifest.is_mcu:
        from slimedge.runtime.branch import BranchRunner

        return BranchRunner(model_path), "LiteRT"
    # The arena is probed in a child process first: an arena far too small can crash
    # TFLite Micro, and a device must refuse an update, not crash on it.
    from slimedge.runtime.mcu import TflmRunner, check_arena

    budget = int(manifest.arena_budget_bytes or 0)
    used = check_arena(model_path, budget, device=manifest.device, board=manifest.board)
    return (TflmRunner(model_path, budget),
            f"TFLite Micro: runs in {used} bytes of arena, within the board budget of {budget}")
