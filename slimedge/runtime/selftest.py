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
    """A one-line summary when the model passes; UpdateRefusedError(SELF_TEST) says why not."""
    from slimedge.runtime.branch import BranchError, BranchRunner

    def refuse(msg: str) -> UpdateRefusedError:
        return UpdateRefusedError(SELF_TEST, f"update {manifest.sequence} ({model_path.name}): "
                                  f"{msg}")

    try:
        runner = BranchRunner(model_path)
        out = runner.run(fixed_image(runner.image_shape))
    except BranchError as exc:
        raise refuse(f"does not load or run in LiteRT: {exc}") from None
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
    summary = (f"LiteRT: fixed input -> {got_dtype} features (1, {dim}) as signed")
    if manifest.is_mcu:
        summary += "; " + _tflm_check(model_path, manifest, refuse)
    return summary


def _tflm_check(model_path: Path, manifest: UpdateManifest, refuse) -> str:  # noqa: ANN001
    """The model runs in TFLite Micro with the board's arena budget as the arena limit (in a
    child process: an arena far too small can crash the interpreter)."""
    from slimedge.profile.tflm import GENEROUS_ARENA, TFLMError, probe_arena

    budget = int(manifest.arena_budget_bytes or 0)
    try:
        probe = probe_arena(model_path, budget)
        if probe.ok:
            return (f"TFLite Micro: runs in {probe.total_bytes} bytes of arena, within the "
                    f"board budget of {budget}")
        need = probe_arena(model_path, GENEROUS_ARENA)
    except TFLMError as exc:
        raise refuse(f"TFLite Micro cannot run it: {exc}") from None
    needed = f"needs {need.total_bytes} bytes" if need.ok else f"does not run ({need.message})"
    raise refuse(f"TFLite Micro: {needed} of arena, board {manifest.board}'s budget is "
                 f"{budget} bytes ({probe.message})")
