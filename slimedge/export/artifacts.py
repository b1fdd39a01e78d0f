"""Per-device artifacts of an export: each (level, format) converted once with a static batch
of 1, checked against the ladder's cached features, written per device and checked on its
board (LiteRT on the test frames, TFLite Micro within the arena budget, firmware bundle, Edge
TPU static check, memory fit of the measured artifact)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.devices.catalog import EDGETPU, MCU
from slimedge.export import ExportError
from slimedge.export.agreement import FeatureError, ViewFeatures, cache_equality, feature_error
from slimedge.export.assignment import DeviceAssignment
from slimedge.export.inputs import say
from slimedge.ladder.store import features_file, level_dir, load_level_features

DEVICES_DIR = "devices"
FIRMWARE_DIR = "firmware"
EDGETPU_COMPILER = "edgetpu_compiler"


def c_name(device: str) -> str:
    """A C identifier for a device's firmware symbols."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", device)
    return name if re.match(r"^[A-Za-z_]", name) else f"d_{name}"


def measured_entry(entry: Mapping[str, Any], fmt: str, nbytes: int,
                    arena: int | None) -> dict[str, Any]:
    """The level's cost entry with the shipped artifact's own size (and measured arena)."""
    e = dict(entry)
    e["tflite_bytes"] = {**entry["tflite_bytes"], fmt: nbytes}
    if fmt == "int8":
        e["tflite_int8_bytes"] = nbytes
    if arena is not None:
        e["tflm_arena_bytes"] = arena
    return e


def run_views(path: Path, images: np.ndarray, views: Sequence[int],
              tflm_arena: int | None = None) -> list[ViewFeatures]:
    """The artifact run as the device runs it over every frame of each view: in LiteRT, or,
    given a microcontroller's arena budget `tflm_arena`, in TFLite Micro within that arena (an
    MCU's features are TFLite Micro's: LiteRT's kernels differ from them on some features)."""
    from slimedge.runtime.branch import BranchOutput, BranchRunner

    if tflm_arena is None:
        runner = BranchRunner(path)
        run = runner.run
    else:
        from slimedge.runtime.mcu import TflmRunner, check_arena

        check_arena(path, tflm_arena, device=path.stem, board="mcu")  # refuses, not crashes
        tflm = TflmRunner(path, tflm_arena)

        def run(imgs: np.ndarray) -> BranchOutput:
            q = tflm.output_quantization or (None, None)
            return BranchOutput(np.stack([tflm.run(im).features for im in imgs]), *q)
    out = []
    for v in views:
        res = run(np.ascontiguousarray(images[:, v]))
        out.append(ViewFeatures(res.features, res.scale, res.zero_point))
    return out



def edgetpu_compiler_note() -> str:
    found = shutil.which(EDGETPU_COMPILER)
    if found:
        return (f"{EDGETPU_COMPILER} found at {found} but not run by export: the artifact is "
                "the uncompiled full-int8 model, checked statically")
    return (f"the Edge TPU compiler ({EDGETPU_COMPILER}) is not available here: the artifact is "
            "the uncompiled full-int8 model, checked statically; compile it for the Edge TPU "
            "before deploying, or the delegate runs it on the CPU")



def edgetpu_check(path: Path) -> dict[str, Any]:
    """The deployment's Edge TPU check of an artifact (static: the compiler is not run)."""
    from slimedge.export.edgetpu import check_edgetpu

    rep = check_edgetpu(path).to_dict()
    return {"ready": rep["ready"], "first_cpu_op": rep["first_unsupported"],
            "reasons": rep["reasons"], "notes": rep["notes"], "compiled": False}


@dataclass
class DeviceResult:
    """One device's artifact and what was measured on it (features on its views' test frames,
    arena, checks recorded in the manifest, feature error against float)."""

    a: DeviceAssignment
    artifact: str
    nbytes: int
    features: list[ViewFeatures] = field(default_factory=list)
    arena: int | None = None
    assessment: Any = None
    firmware: tuple[Any, ...] = ()
    checks: dict[str, Any] = field(default_factory=dict)
    error: FeatureError | None = None
    alone_agreement: float | None = None



@dataclass
class Built:
    """Artifacts converted once per (level, format), and what was measured on them."""

    blobs: dict[tuple[int, str], bytes] = field(default_factory=dict)
    float_features: dict[int, np.ndarray] = field(default_factory=dict)  # level -> (N, V, D)
    # (level, format) -> equality of the static artifact's features with the ladder's cache
    cache: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    arena: dict[tuple[int, str], int] = field(default_factory=dict)

    def cache_report(self) -> dict[str, dict[str, Any]]:
        """`cache` keyed for JSON: "<level>" for int8 (as before float formats were checked),
        "<level>/<format>" for the others."""
        return {(str(j) if fmt == "int8" else f"{j}/{fmt}"): c
                for (j, fmt), c in sorted(self.cache.items())}


def build_artifacts(ladder_dir: Path, manifest: Mapping[str, Any],
                     assignments: Sequence[DeviceAssignment], calib: np.ndarray,
                     images: np.ndarray, tmp: Path, progress: bool) -> Built:
    import keras

    from slimedge.convert import to_tflite
    from slimedge.model.mvcnn import branch_features
    from slimedge.runtime.branch import BranchRunner

    built = Built()
    n, v = images.shape[:2]
    scratch = tmp / ".scratch"
    scratch.mkdir()
    for j in sorted({a.level_index for a in assignments}):
        path = level_dir(ladder_dir, j) / "branch.keras"
        model = keras.saving.load_model(path, compile=False)
        built.float_features[j] = branch_features(model, images)
        for fmt in sorted({a.fmt for a in assignments if a.level_index == j}):
            say(progress, f"level {j} ({manifest['levels'][j]['level']:g}): {fmt}, "
                           "static batch 1")
            blob = to_tflite(model, fmt, calib if fmt == "int8" else None, static_batch=1)
            built.blobs[(j, fmt)] = blob
            cached_path = level_dir(ladder_dir, j) / features_file(fmt)
            if not cached_path.is_file():
                continue  # a ladder from before float features were cached: int8 only
            # The ladder's cached features came from its own file of this format (int8: its
            # dynamic-batch file): the static artifact must reproduce them (same weights, same
            # calibration; float files are converted as the ladder converted them).
            probe = scratch / f"L{j:02d}_{fmt}.tflite"
            probe.write_bytes(blob)
            res = BranchRunner(probe).run(images.reshape((n * v,) + images.shape[2:]))
            cached = load_level_features(cached_path, "test")
            built.cache[(j, fmt)] = cache_equality(res.features.reshape(n, v, -1),
                                                   cached.features)
            built.cache[(j, fmt)]["quantization_equal"] = bool(
                (res.scale is None and cached.scale is None)
                or (res.scale is not None and cached.scale is not None
                    and np.isclose(res.scale, cached.scale)
                    and res.zero_point == cached.zero_point))
    shutil.rmtree(scratch)
    return built


def check_devices(manifest: Mapping[str, Any], assignments: Sequence[DeviceAssignment],
                   built: Built, images: np.ndarray, tmp: Path, allow_misfit: bool,
                   warnings: list[str], progress: bool) -> list[DeviceResult]:
    from slimedge.devices.cost import assess
    from slimedge.export.firmware import write_firmware_bundle
    from slimedge.export.manifest import FileEntry
    from slimedge.export.tflite_ops import read_tflite
    from slimedge.profile.tflm import TFLMError, fits_in_sram, measure_arena

    D = int(manifest["feature_dim"])
    (tmp / DEVICES_DIR).mkdir()
    results = []
    for a in assignments:
        rel = f"{DEVICES_DIR}/{a.device}.tflite"
        path = tmp / rel
        blob = built.blobs[(a.level_index, a.fmt)]
        path.write_bytes(blob)
        r = DeviceResult(a, rel, len(blob))
        info = read_tflite(path)
        dynamic = info.first_dynamic_tensor()
        if dynamic is not None:
            raise ExportError(f"{path}: tensor {dynamic.describe()} is dynamic; device "
                              "artifacts must have static shapes")
        r.checks["static_shapes"] = True
        # LiteRT: the device's own file over every test frame of its views.
        r.features = run_views(path, images, a.views)
        r.checks["litert"] = {"ok": True, "frames": int(images.shape[0]) * len(a.views)}
        if (a.level_index, a.fmt) in built.cache:
            r.checks["static_vs_cached"] = built.cache[(a.level_index, a.fmt)]
        entry = manifest["levels"][a.level_index]
        if a.board.board_class == MCU:
            key = (a.level_index, a.fmt)
            if key not in built.arena:
                say(progress, f"TFLite Micro arena of level {a.level_index}")
                try:
                    built.arena[key] = measure_arena(path)
                except TFLMError as exc:
                    raise ExportError(f"device {a.device}: {exc}") from None
            r.arena = built.arena[key]
            budget = a.board.model_memory_bytes
            probe = fits_in_sram(path, budget)
            r.checks["tflite_micro"] = {"ok": probe.ok, "arena_bytes": r.arena,
                                        "arena_limit_bytes": budget,
                                        "recorded_total_bytes": probe.total_bytes,
                                        "message": probe.message}
            if not probe.ok:
                # Even with --allow-misfit: a device cannot run it, and verification (which
                # runs TFLite Micro with this limit) would reject the deployment.
                raise ExportError(
                    f"device {a.device} ({a.board.id}): level {a.level_index} "
                    f"({entry['level']:g}) needs a {r.arena:,} B TFLite Micro arena, the "
                    f"board's arena budget is {budget:,} B: it does not run there "
                    f"({probe.message or 'allocation failed'})")
            # What the board sends: its file in TFLite Micro within its arena budget.
            r.features = run_views(path, images, a.views, tflm_arena=budget)
        want = [built.float_features[a.level_index][:, v] for v in a.views]
        r.error = feature_error(r.features, want)
        r.checks["feature_error"] = r.error.to_dict()
        r.assessment = assess(measured_entry(entry, a.fmt, len(blob), r.arena), a.board,
                              feature_dim=D, fmt=a.fmt, device_id=a.device)
        r.checks["memory"] = {
            "fits": r.assessment.fits, "binding": r.assessment.binding,
            "ram_kind": r.assessment.details["ram_kind"],
            "ram_needed_bytes": r.assessment.details["ram_needed_bytes"],
            "ram_budget_bytes": r.assessment.details["ram_budget_bytes"],
            "storage_kind": r.assessment.details["storage_kind"],
            "storage_needed_bytes": r.assessment.details["storage_needed_bytes"],
            "storage_budget_bytes": r.assessment.details["storage_budget_bytes"]}
        if not r.assessment.fits:
            msg = r.assessment.details["message"]
            if not allow_misfit:
                raise ExportError(f"level does not fit its device (measured artifact): {msg}")
            warnings.append(f"measured: {msg} (allowed by --allow-misfit)")
        r.checks["cost_model"] = {"inference_ms": r.assessment.inference_ms,
                                  "transfer_ms": r.assessment.transfer_ms,
                                  "host_latency_ms": entry["latency_ms"][a.fmt]}
        if a.board.board_class == MCU:
            fw_dir = tmp / FIRMWARE_DIR / a.device
            bundle = write_firmware_bundle(path, fw_dir, name=c_name(a.device),
                                           arena_bytes=r.arena, board_id=a.board.id)
            r.firmware = tuple(FileEntry(f"{FIRMWARE_DIR}/{a.device}/{f['path']}",
                                         f["sha256"], f["bytes"]) for f in bundle["files"])
            r.checks["firmware"] = {"ops": bundle["ops"], "arena_bytes": bundle["arena_bytes"],
                                    "name": c_name(a.device)}
        if a.board.board_class == EDGETPU:
            r.checks["edgetpu"] = edgetpu_check(path)
        results.append(r)
    return results

