"""`slimedge export`: a fleet, a ladder and a level per view -> a verified, signed deployment.

For each device, its branch at its level in the board's format (full int8 for MCU and Edge TPU
boards, the board's preferred format otherwise), rebuilt from the level's `branch.keras` with a
static batch of 1 (the ladder's files keep a dynamic batch axis, which the Edge TPU compiler
refuses and microcontrollers cannot plan for) and calibrated with the ladder's own
representative images, so its int8 outputs are the ladder's cached features.

Every artifact is checked before it is declared good:

- it runs in LiteRT (on the test images of its views); an MCU artifact also runs in TFLite
  Micro with the board's arena budget (SRAM x (1 - reserved)) as the arena limit, and its
  measured arena is recorded, with a firmware bundle (C arrays, arena constant, op resolver);
- an Edge TPU artifact is checked statically (`check_edgetpu`; the compiler itself cannot be
  installed here), the first op that would fall back to the CPU named;
- the system agrees with Keras: device artifacts -> core pooling -> exported head, against
  each view's float `branch.keras` -> core pooling -> Keras classifier, top-1 on the test
  split (>= 99%), with each device's feature error;
- the level fits the board (cost model before any work, then the measured artifact).

The deployment is built in a temporary directory, signed (`write_deployment_manifest`),
verified (`verify_deployment`) and only then swapped in whole: a failed export leaves the
previous deployment as it was.

Layout of a deployment::

    manifest.json, manifest.sig, public_key.pem
    devices/<device>.tflite
    firmware/<device>/<name>_model.h|.cc, <name>_arena.h, <name>_ops.h   (MCUs)
    aggregator/head.tflite       pooled features -> logits, float32
    aggregator/classifier.npz    the same classifier as NumPy arrays (the planner's)
    aggregator/head.json         pooling, views, classes, view -> device, export checks
    aggregator/contingency.json  the plan's contingency table (when exported from a plan)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.artifacts import atomic_dir, sha256_file, write_json
from slimedge.devices.catalog import EDGETPU, MCU
from slimedge.devices.fleet import Fleet
from slimedge.export import ExportError
from slimedge.export.agreement import (
    AGREEMENT_THRESHOLD,
    FeatureError,
    ViewFeatures,
    agreement,
    cache_equality,
    feature_error,
    pool_views,
    require_agreement,
)
from slimedge.export.assignment import (
    DeviceAssignment,
    PlanChoice,
    as_fleet,
    assign_devices,
    check_views,
    fleet_cost_table,
    least_pruned_levels,
    read_plan,
)
from slimedge.ladder.store import level_dir, load_level_features, read_manifest

DEVICES_DIR = "devices"
FIRMWARE_DIR = "firmware"
AGGREGATOR_DIR = "aggregator"
KEYS_DIR = "keys"  # beside the deployment: <out>/../keys
EDGETPU_COMPILER = "edgetpu_compiler"

__all__ = [
    "DeviceAssignment",
    "PlanChoice",
    "assign_devices",
    "export_deployment",
    "least_pruned_levels",
    "markdown_table",
    "read_plan",
    "summary_from_deployment",
]


# --------------------------------------------------------------------------- inputs


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[export] {msg}", file=sys.stderr, flush=True)


def _load_checked_dataset(dataset: Any, ladder_dir: Path, manifest: Mapping[str, Any]
                          ) -> tuple[Any, str]:
    """The dataset the ladder was built from (its content hash must match), and where it was
    found. Without one given, the work-folder sibling `<ladder>/../dataset` is tried."""
    from slimedge.data.container import Dataset, load_dataset, read_meta
    from slimedge.errors import DatasetError

    want = manifest["dataset_hash"]
    if dataset is None:
        sibling = ladder_dir.parent / "dataset"
        try:
            meta = read_meta(sibling)
        except DatasetError:
            meta = None
        if meta is None or meta.get("content_hash") != want:
            raise ExportError(
                f"{ladder_dir}: the ladder does not record its dataset's path and no dataset "
                f"{want[:12]} sits beside it: pass the dataset it was built from (--dataset)")
        dataset = sibling
    where = "dataset object" if isinstance(dataset, Dataset) else str(dataset)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    got = ds.content_hash()
    if got != want:
        raise ExportError(
            f"{where}: dataset content hash {got[:12]} does not match the ladder's "
            f"dataset_hash {want[:12]} ({ladder_dir / 'manifest.json'}): export checks "
            "agreement on the dataset the ladder was built from")
    return ds, where


def _check_out_dir(out: Path) -> None:
    """The output is replaced whole: refuse a directory that is not an earlier deployment."""
    from slimedge.export.manifest import MANIFEST_NAME

    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / MANIFEST_NAME).is_file())):
        raise ExportError(f"{out}: exists and is not a deployment directory (no "
                          f"{MANIFEST_NAME}); export replaces its output whole, so give a new "
                          "or an earlier deployment's directory")


@dataclass
class _Key:
    private: Path
    generate_in: Path | None  # a key pair is generated here at signing time
    given: bool


def _resolve_key(key_path: Any, out: Path) -> _Key:
    from slimedge.export import signing

    root = out.resolve()
    if key_path is not None:
        key = Path(key_path)
        if root == key.resolve() or root in key.resolve().parents:
            raise ExportError(f"{key}: the private key lives inside the deployment directory "
                              f"{out}, which export replaces whole: keep it elsewhere")
        signing.load_private_key(key)  # a wrong key fails before any work
        return _Key(key, None, True)
    keys = root.parent / KEYS_DIR
    private = keys / signing.PRIVATE_KEY_NAME
    if private.is_file():
        signing.load_private_key(private)
        return _Key(private, None, False)
    if (keys / signing.PUBLIC_KEY_NAME).exists():
        raise ExportError(f"{keys}: holds {signing.PUBLIC_KEY_NAME} but no "
                          f"{signing.PRIVATE_KEY_NAME}: pass the private key (--key)")
    return _Key(private, keys, False)


# --------------------------------------------------------------------------- artifacts


def _c_name(device: str) -> str:
    """A C identifier for a device's firmware symbols."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", device)
    return name if re.match(r"^[A-Za-z_]", name) else f"d_{name}"


def _measured_entry(entry: Mapping[str, Any], fmt: str, nbytes: int,
                    arena: int | None) -> dict[str, Any]:
    """The level's cost entry with the shipped artifact's own size (and measured arena)."""
    e = dict(entry)
    e["tflite_bytes"] = {**entry["tflite_bytes"], fmt: nbytes}
    if fmt == "int8":
        e["tflite_int8_bytes"] = nbytes
    if arena is not None:
        e["tflm_arena_bytes"] = arena
    return e


def _run_views(path: Path, images: np.ndarray, views: Sequence[int]) -> list[ViewFeatures]:
    """The artifact run in LiteRT (what the device runs) over every frame of each view."""
    from slimedge.runtime.branch import BranchRunner

    runner = BranchRunner(path)
    out = []
    for v in views:
        res = runner.run(np.ascontiguousarray(images[:, v]))
        out.append(ViewFeatures(res.features, res.scale, res.zero_point))
    return out


def _head_logits(path: Path, pooled: np.ndarray) -> np.ndarray:
    from slimedge.profile.litert import interpreter

    it = interpreter(path)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], [len(pooled), pooled.shape[1]])
    it.allocate_tensors()
    it.set_tensor(d["index"], np.ascontiguousarray(pooled, np.float32))
    it.invoke()
    return np.asarray(it.get_tensor(it.get_output_details()[0]["index"]))


def _edgetpu_compiler_note() -> str:
    found = shutil.which(EDGETPU_COMPILER)
    if found:
        return (f"{EDGETPU_COMPILER} found at {found} but not run by export: the artifact is "
                "the uncompiled full-int8 model, checked statically")
    return (f"the Edge TPU compiler ({EDGETPU_COMPILER}) is not available here: the artifact is "
            "the uncompiled full-int8 model, checked statically; compile it for the Edge TPU "
            "before deploying, or the delegate runs it on the CPU")


@dataclass
class _DeviceResult:
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


# --------------------------------------------------------------------------- export


def export_deployment(
    fleet_path: Fleet | str | os.PathLike,
    ladder_dir: str | os.PathLike,
    levels: Sequence[int] | None,
    out_dir: str | os.PathLike,
    *,
    dataset: Any = None,
    plan: str | os.PathLike | None = None,
    key_path: str | os.PathLike | None = None,
    allow_misfit: bool = False,
    progress: bool = True,
    formats: Mapping[str, str] | None = None,
    catalog: Any = None,
    min_agreement: float | None = None,
) -> dict[str, Any]:
    """Build, check, sign and verify the deployment of `fleet_path` (fleet file or name) at
    `levels` (a level index per view; None: `least_pruned_levels`, or the plan's) into
    `out_dir`. Returns the summary (see `markdown_table`). Raises ExportError (nothing written)
    when a level does not fit its device (unless `allow_misfit`), an artifact fails a check,
    the system disagrees with Keras, or the result does not verify.

    `formats`: device id -> format, replacing the board's preferred one (the board must accept
    it). `catalog`: a board catalog directory or mapping (default: the project's catalog).
    `min_agreement`: the top-1 agreement required (default `AGREEMENT_THRESHOLD`, 0.99); a
    lower one is recorded in the summary's warnings."""
    from slimedge.export.verify import verify_deployment

    t_start = time.perf_counter()
    ladder_dir, out = Path(ladder_dir), Path(out_dir)
    manifest = read_manifest(ladder_dir)
    fleet = as_fleet(fleet_path, catalog)
    check_views(fleet, manifest)
    if plan is not None and levels is not None:
        raise ExportError("give either levels or a plan, not both (the plan sets the levels)")
    if min_agreement is None:
        min_agreement = AGREEMENT_THRESHOLD
    if not 0.0 <= float(min_agreement) <= 1.0:
        raise ExportError(f"min_agreement: expected a fraction in [0, 1], got {min_agreement!r}")

    choice = read_plan(plan, fleet, manifest) if plan is not None else None
    level_source = "plan" if choice else ("given" if levels is not None else "least-pruned")
    if choice is not None:
        view_levels, placement = choice.levels, choice.placement
    else:
        view_levels = (list(levels) if levels is not None
                       else least_pruned_levels(fleet, manifest, formats=formats))
        placement = None
    assignments = assign_devices(fleet, manifest, view_levels, placement=placement,
                                 formats=formats)
    primary = _primary_devices(assignments, fleet.views)
    notes = _placement_notes(fleet, assignments, placement)

    # Fit by the cost model before any work: names device and bytes.
    table = fleet_cost_table(fleet, manifest, {a.device: a.fmt for a in assignments})
    misfits = [table.message(a.device, a.level_index) for a in assignments
               if not table.fits[table.device_index(a.device), a.level_index]]
    if misfits and not allow_misfit:
        raise ExportError("level does not fit its device: " + "; ".join(misfits)
                          + " (choose more pruned levels, or pass --allow-misfit)")

    _check_out_dir(out)
    ds, dataset_where = _load_checked_dataset(dataset, ladder_dir, manifest)
    key = _resolve_key(key_path, out)
    _say(progress, f"{len(assignments)} devices, levels {view_levels} ({level_source})")

    from slimedge.ladder.build import calibration_images

    cfg = manifest["config"]
    calib = calibration_images(ds, int(cfg["calibration_images"]), int(cfg["seed"]))
    test_idx = ds.indices("test")
    if test_idx.size == 0:
        raise ExportError(f"{dataset_where}: the test split holds no objects; export checks "
                          "agreement on it")
    images = np.asarray(ds.images[test_idx])
    labels = ds.labels[test_idx].astype(np.int64)
    warnings: list[str] = [f"levels: {m} (allowed by --allow-misfit)" for m in misfits]
    if min_agreement < AGREEMENT_THRESHOLD:
        warnings.append(f"agreement: required only {min_agreement:.0%} top-1 agreement with "
                        f"Keras (default {AGREEMENT_THRESHOLD:.0%})")

    with atomic_dir(out) as tmp:
        built = _build_artifacts(ladder_dir, manifest, assignments, calib, images, tmp,
                                 progress)
        results = _check_devices(manifest, assignments, built, images, tmp, allow_misfit,
                                 warnings, progress)
        head = _write_aggregator(ladder_dir, manifest, tmp, view_levels, primary, choice,
                                 fleet)
        system = _system_agreement(manifest, results, built, primary, head, labels,
                                   min_agreement)
        edgetpu_note = None
        if any(r.a.board.board_class == EDGETPU for r in results):
            edgetpu_note = _edgetpu_compiler_note()
            for r in results:
                if r.a.board.board_class == EDGETPU and not r.checks["edgetpu"]["ready"]:
                    warnings.append(f"{r.a.device} ({r.a.board.id}): not ready for the Edge "
                                    f"TPU: {r.checks['edgetpu']['reasons'][0]}")
        _write_head_json(tmp, head, system, built)
        require_agreement(system["result"], {r.a.device: r.error for r in results},
                          {r.a.device: r.alone_agreement for r in results})

        generated = False
        if key.generate_in is not None:
            from slimedge.export import signing

            signing.generate_keys(key.generate_in)
            generated = True
        deployment = _deployment_manifest(fleet, ladder_dir, manifest, choice, results, head)
        from slimedge.export.manifest import write_deployment_manifest

        written = write_deployment_manifest(tmp, deployment, key.private)
        report = verify_deployment(tmp)
        if not report.ok:
            raise ExportError(f"{out}: the deployment does not verify: "
                              + "; ".join(report.failures))
        _say(progress, f"verified ({len(report.devices)} devices), signed with "
                       f"{written.signing_key}")
    summary = _summary(out, fleet, manifest, results, system, written, key, generated,
                       view_levels, level_source, choice, dataset_where, warnings, built,
                       [n for n in (edgetpu_note,) if n] + notes)
    summary["seconds"] = round(time.perf_counter() - t_start, 3)
    return summary


def _placement_notes(fleet: Fleet, assignments: Sequence[DeviceAssignment],
                     placement: Mapping[int, str] | None) -> list[str]:
    """What a plan's view placement changes against the fleet file, and idle devices."""
    notes = []
    running = {a.device for a in assignments}
    idle = [d.id for d in fleet.devices if d.id not in running]
    if idle:
        notes.append(f"devices without a view to run (no artifact): {', '.join(idle)}")
    for v, dev in sorted((placement or {}).items()):
        seen = fleet.device(dev).views
        if v not in seen:
            notes.append(f"plan places view {v} on {dev}, whose camera sees views "
                         f"{list(seen)} in the fleet file")
    return notes


def _primary_devices(assignments: Sequence[DeviceAssignment], views: int) -> list[str | None]:
    """Per view, the device whose features the aggregator pools (the first that runs it)."""
    primary: list[str | None] = [None] * views
    for a in assignments:
        for v in a.views:
            if primary[v] is None:
                primary[v] = a.device
    return primary


@dataclass
class _Built:
    """Artifacts converted once per (level, format), and what was measured on them."""

    blobs: dict[tuple[int, str], bytes] = field(default_factory=dict)
    float_features: dict[int, np.ndarray] = field(default_factory=dict)  # level -> (N, V, D)
    cache: dict[int, dict[str, Any]] = field(default_factory=dict)  # int8 level -> equality
    arena: dict[tuple[int, str], int] = field(default_factory=dict)


def _build_artifacts(ladder_dir: Path, manifest: Mapping[str, Any],
                     assignments: Sequence[DeviceAssignment], calib: np.ndarray,
                     images: np.ndarray, tmp: Path, progress: bool) -> _Built:
    import keras

    from slimedge.convert import to_tflite
    from slimedge.model.mvcnn import branch_features
    from slimedge.runtime.branch import BranchRunner

    built = _Built()
    n, v = images.shape[:2]
    scratch = tmp / ".scratch"
    scratch.mkdir()
    for j in sorted({a.level_index for a in assignments}):
        path = level_dir(ladder_dir, j) / "branch.keras"
        model = keras.saving.load_model(path, compile=False)
        built.float_features[j] = branch_features(model, images)
        for fmt in sorted({a.fmt for a in assignments if a.level_index == j}):
            _say(progress, f"level {j} ({manifest['levels'][j]['level']:g}): {fmt}, "
                           "static batch 1")
            blob = to_tflite(model, fmt, calib if fmt == "int8" else None, static_batch=1)
            built.blobs[(j, fmt)] = blob
            if fmt != "int8":
                continue
            # The ladder's cached features came from its dynamic-batch int8 file: the static
            # artifact must reproduce them (same weights, same calibration).
            probe = scratch / f"L{j:02d}_{fmt}.tflite"
            probe.write_bytes(blob)
            res = BranchRunner(probe).run(images.reshape((n * v,) + images.shape[2:]))
            cached = load_level_features(level_dir(ladder_dir, j) / "features.npz", "test")
            built.cache[j] = cache_equality(res.features.reshape(n, v, -1), cached.features)
            built.cache[j]["quantization_equal"] = bool(
                np.isclose(res.scale, cached.scale) and res.zero_point == cached.zero_point)
    shutil.rmtree(scratch)
    return built


def _check_devices(manifest: Mapping[str, Any], assignments: Sequence[DeviceAssignment],
                   built: _Built, images: np.ndarray, tmp: Path, allow_misfit: bool,
                   warnings: list[str], progress: bool) -> list[_DeviceResult]:
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
        r = _DeviceResult(a, rel, len(blob))
        info = read_tflite(path)
        dynamic = info.first_dynamic_tensor()
        if dynamic is not None:
            raise ExportError(f"{path}: tensor {dynamic.describe()} is dynamic; device "
                              "artifacts must have static shapes")
        r.checks["static_shapes"] = True
        # LiteRT: the device's own file over every test frame of its views.
        r.features = _run_views(path, images, a.views)
        r.checks["litert"] = {"ok": True, "frames": int(images.shape[0]) * len(a.views)}
        want = [built.float_features[a.level_index][:, v] for v in a.views]
        r.error = feature_error(r.features, want)
        r.checks["feature_error"] = r.error.to_dict()
        if a.fmt == "int8":
            r.checks["static_vs_cached"] = built.cache[a.level_index]
        entry = manifest["levels"][a.level_index]
        if a.board.board_class == MCU:
            key = (a.level_index, a.fmt)
            if key not in built.arena:
                _say(progress, f"TFLite Micro arena of level {a.level_index}")
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
        r.assessment = assess(_measured_entry(entry, a.fmt, len(blob), r.arena), a.board,
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
            bundle = write_firmware_bundle(path, fw_dir, name=_c_name(a.device),
                                           arena_bytes=r.arena, board_id=a.board.id)
            r.firmware = tuple(FileEntry(f"{FIRMWARE_DIR}/{a.device}/{f['path']}",
                                         f["sha256"], f["bytes"]) for f in bundle["files"])
            r.checks["firmware"] = {"ops": bundle["ops"], "arena_bytes": bundle["arena_bytes"],
                                    "name": _c_name(a.device)}
        if a.board.board_class == EDGETPU:
            r.checks["edgetpu"] = edgetpu_check(path)
        results.append(r)
    return results


def _write_aggregator(ladder_dir: Path, manifest: Mapping[str, Any], tmp: Path,
                      view_levels: Sequence[int], primary: Sequence[str | None],
                      choice: PlanChoice | None, fleet: Fleet) -> dict[str, Any]:
    import keras

    from slimedge.convert import to_tflite
    from slimedge.ladder.classifier import NumpyClassifier
    from slimedge.model.head import head_classifier, head_info

    agg = tmp / AGGREGATOR_DIR
    agg.mkdir()
    head = keras.saving.load_model(ladder_dir / "head.keras", compile=False)
    info = head_info(head)
    if info["pooling"] != manifest["pool_mode"]:
        raise ExportError(f"{ladder_dir / 'head.keras'}: pools by {info['pooling']!r} but the "
                          f"ladder manifest says {manifest['pool_mode']!r}")
    classifier = head_classifier(head)
    (agg / "head.tflite").write_bytes(to_tflite(classifier, "float32"))
    shutil.copyfile(ladder_dir / "classifier.npz", agg / "classifier.npz")
    files = ["head.tflite", "classifier.npz", "head.json"]
    if choice is not None and choice.contingency is not None:
        write_json(agg / "contingency.json", choice.contingency)
    weights = info["view_weights"]
    if weights is None and info["pooling"] == "weighted":
        weights = [1.0] * int(manifest["views"])
    return {
        "keras_head": head,
        "tflite_path": agg / "head.tflite",
        "numpy_classifier": NumpyClassifier.load(ladder_dir / "classifier.npz"),
        "mode": info["pooling"],
        "weights": None if weights is None else np.asarray(weights, np.float32),
        "files": files,
        "contingency": choice is not None and choice.contingency is not None,
        "json": {
            "pooling": info["pooling"], "views": int(manifest["views"]),
            "feature_dim": int(manifest["feature_dim"]), "n_classes": info["n_classes"],
            "class_names": list(manifest.get("class_names", [])),
            "view_weights": weights,
            "view_device": [p for p in primary],
            "view_level_index": [int(x) for x in view_levels],
            "head_tflite": f"{AGGREGATOR_DIR}/head.tflite",
            "classifier": f"{AGGREGATOR_DIR}/classifier.npz",
            "contingency": (f"{AGGREGATOR_DIR}/contingency.json"
                            if choice is not None and choice.contingency is not None else None),
            "aggregator": {"kind": fleet.aggregator.kind, "name": fleet.aggregator.name},
        },
    }


def _system_agreement(manifest: Mapping[str, Any], results: Sequence[_DeviceResult],
                      built: _Built, primary: Sequence[str | None], head: dict[str, Any],
                      labels: np.ndarray, min_agreement: float) -> dict[str, Any]:
    """Device pipeline vs float Keras pipeline over the test frames, all deployed views live;
    also, per device, the system with only that device's features from its artifact."""
    from slimedge.model.head import classify_pooled

    by_device = {r.a.device: r for r in results}
    V = int(manifest["views"])
    view_level = {v: by_device[primary[v]].a.level_index for v in range(V)
                  if primary[v] is not None}
    float_views: list[ViewFeatures | None] = [
        ViewFeatures(built.float_features[view_level[v]][:, v]) if v in view_level else None
        for v in range(V)]
    device_views: list[ViewFeatures | None] = [None] * V
    for v in view_level:
        r = by_device[primary[v]]
        device_views[v] = r.features[r.a.views.index(v)]
    mode, weights = head["mode"], head["weights"]

    pooled_f, empty_f = pool_views(float_views, mode, weights)
    float_logits = classify_pooled(head["keras_head"], pooled_f)
    float_pred = np.argmax(float_logits, axis=1)
    float_pred[empty_f] = -1
    pooled_d, empty_d = pool_views(device_views, mode, weights)
    logits = _head_logits(head["tflite_path"], pooled_d)  # the exported head, in LiteRT
    device_pred = np.argmax(logits, axis=1)
    device_pred[empty_d] = -1
    npz_pred = head["numpy_classifier"].predict(pooled_d)
    npz_pred[empty_d] = -1
    keras_logits = classify_pooled(head["keras_head"], pooled_d)
    result = agreement(device_pred, float_pred, labels, threshold=min_agreement,
                       float_logits=float_logits[~empty_f])
    for r in results:
        views = list(float_views)
        for i, v in enumerate(r.a.views):
            views[v] = r.features[i]
        pooled, empty = pool_views(views, mode, weights)
        pred = head["numpy_classifier"].predict(pooled)
        pred[empty] = -1
        r.alone_agreement = float(np.mean(pred == float_pred))
        r.checks["agreement_alone"] = r.alone_agreement
    return {
        "result": result,
        "head": {"tflite_vs_keras_max_abs_logit": float(np.max(np.abs(logits - keras_logits))),
                 "tflite_vs_numpy_prediction_agreement": float(np.mean(npz_pred
                                                                       == device_pred))},
    }


def _write_head_json(tmp: Path, head: dict[str, Any], system: dict[str, Any],
                     built: _Built) -> None:
    doc = dict(head["json"])
    doc["export_checks"] = {
        "system_agreement": system["result"].to_dict(),
        "head": system["head"],
        "static_vs_cached": {str(j): c for j, c in sorted(built.cache.items())},
    }
    write_json(tmp / AGGREGATOR_DIR / "head.json", doc)


def _deployment_manifest(fleet: Fleet, ladder_dir: Path, manifest: Mapping[str, Any],
                         choice: PlanChoice | None, results: Sequence[_DeviceResult],
                         head: dict[str, Any]) -> Any:
    from slimedge import __version__
    from slimedge.export.manifest import (
        AggregatorEntry,
        DeploymentManifest,
        DeviceEntry,
        FileEntry,
        Provenance,
        utc_now,
    )

    created = utc_now()
    stamp = re.sub(r"[^0-9]", "", created)
    fleet_id = re.sub(r"[^A-Za-z0-9._-]", "-", fleet.name).strip("-.") or "fleet"
    devices = tuple(
        DeviceEntry(
            device=r.a.device, board=r.a.board.id, views=r.a.views,
            level=float(manifest["levels"][r.a.level_index]["level"]),
            level_index=r.a.level_index, format=r.a.fmt, runtime=r.a.board.runtime,
            artifact=r.artifact,
            predicted_latency_ms=r.assessment.total_ms,
            memory_budget_bytes=r.a.board.model_memory_bytes,
            memory_margin_bytes=r.assessment.ram_margin_bytes,
            tflm_arena_bytes=r.arena,
            firmware=r.firmware,
            checks=r.checks,
        ) for r in results)
    agg = fleet.aggregator
    aggregator = AggregatorEntry(
        pooling=head["mode"],
        head=tuple(FileEntry(f"{AGGREGATOR_DIR}/{f}") for f in head["files"]),
        board=agg.name if agg.kind == "board" else None,
        host=agg.name if agg.kind == "host" else None,
        contingency_table=(FileEntry(f"{AGGREGATOR_DIR}/contingency.json")
                           if head["contingency"] else None),
    )
    return DeploymentManifest(
        deployment_id=f"{fleet_id}-{stamp}",
        created=created,
        provenance=Provenance(sha256_file(ladder_dir / "manifest.json"),
                              manifest["dataset_hash"],
                              choice.sha256 if choice else None, __version__),
        aggregator=aggregator,
        devices=devices,
    )



# --------------------------------------------------------------------------- summary


def edgetpu_check(path: Path) -> dict[str, Any]:
    """The deployment's Edge TPU check of an artifact (static: the compiler is not run)."""
    from slimedge.export.edgetpu import check_edgetpu

    rep = check_edgetpu(path).to_dict()
    return {"ready": rep["ready"], "first_cpu_op": rep["first_unsupported"],
            "reasons": rep["reasons"], "notes": rep["notes"], "compiled": False}


def _edgetpu_cell(checks: Mapping[str, Any]) -> str | None:
    tpu = checks.get("edgetpu")
    if tpu is None:
        return None
    if tpu["ready"]:
        return "ready"
    first = tpu["first_cpu_op"]
    if first is not None:
        return f"CPU from op {first['index']} {first['op']}"
    return "not ready: " + tpu["reasons"][0]


def _row(r: _DeviceResult, manifest: Mapping[str, Any]) -> dict[str, Any]:
    a, s = r.a, r.assessment
    d = s.details
    mcu = a.board.board_class == MCU
    return {
        "device": a.device,
        "board": a.board.id,
        "class": a.board.board_class,
        "views": list(a.views),
        "level_index": a.level_index,
        "level": float(manifest["levels"][a.level_index]["level"]),
        "format": a.fmt,
        "runtime": a.board.runtime,
        "artifact": r.artifact,
        "artifact_bytes": r.nbytes,
        "tflm_arena_bytes": r.arena,
        "arena_budget_bytes": a.board.model_memory_bytes if mcu else None,
        "memory_kind": d["ram_kind"],
        "memory_needed_bytes": d["ram_needed_bytes"],
        "memory_budget_bytes": d["ram_budget_bytes"],
        "memory_margin_bytes": s.ram_margin_bytes,
        "storage_margin_bytes": s.storage_margin_bytes,
        "fits": s.fits,
        "host_latency_ms": float(manifest["levels"][a.level_index]["latency_ms"][a.fmt]),
        "predicted_inference_ms": s.inference_ms,
        "predicted_latency_ms": s.total_ms,
        "agreement": r.alone_agreement,
        "feature_error_mean": r.error.mean_rel if r.error else None,
        "feature_error_max": r.error.max_rel if r.error else None,
        "feature_error_max_lsb": r.error.max_lsb if r.error else None,
        "static_vs_cached_equal": (r.checks["static_vs_cached"]["equal_fraction"]
                                   if "static_vs_cached" in r.checks else None),
        "edgetpu": _edgetpu_cell(r.checks),
        "firmware_files": len(r.firmware) or None,
    }


def _summary(out: Path, fleet: Fleet, manifest: Mapping[str, Any],
             results: Sequence[_DeviceResult], system: dict[str, Any], written: Any, key: _Key,
             generated: bool, view_levels: Sequence[int], level_source: str,
             choice: PlanChoice | None, dataset_where: str, warnings: list[str],
             built: _Built, extra_notes: list[str]) -> dict[str, Any]:
    from slimedge.export.manifest import PUBLIC_KEY_NAME

    result = system["result"]
    if generated:
        key_note = (f"no key given and none in {key.private.parent}: generated a new key pair "
                    "there; provision its public_key.pem on the devices")
    elif key.given:
        key_note = "signed with the given private key"
    else:
        key_note = f"signed with the existing key pair in {key.private.parent}"
    notes = [key_note, *extra_notes]
    return {
        "deployment": str(out),
        "deployment_id": written.deployment_id,
        "fleet": fleet.name,
        "views": fleet.views,
        "levels": [int(x) for x in view_levels],
        "level_source": level_source,
        "plan": str(choice.path) if choice else None,
        "contingency": bool(choice is not None and choice.contingency is not None),
        "dataset": dataset_where,
        "devices": [_row(r, manifest) for r in results],
        "agreement": result.agreement,
        "agreement_detail": result.to_dict(),
        "head": system["head"],
        "static_vs_cached": {str(j): c for j, c in sorted(built.cache.items())},
        "verified": True,
        "key": {"private_key": str(key.private),
                "public_key": str(out / PUBLIC_KEY_NAME),
                "fingerprint": written.signing_key,
                "generated": generated},
        "warnings": list(warnings),
        "notes": notes,
    }


def _kib(n: int | None) -> str:
    if n is None:
        return "—"
    if abs(n) >= 10 * 2**20:
        return f"{n / 2**20:,.0f} MiB"
    return f"{n / 1024:,.1f} KiB"


def _ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The per-device table of an export summary, as Markdown (for the demo report)."""
    head = ("| device | board | views | level | format | artifact | TFLM arena / budget | "
            "host ms | predicted ms | memory margin | agreement | feature error mean / max | "
            "Edge TPU |")
    lines = [head, "|" + "---|" * 13]
    for r in summary["devices"]:
        arena = (f"{_kib(r['tflm_arena_bytes'])} / {_kib(r['arena_budget_bytes'])}"
                 if r["tflm_arena_bytes"] is not None else "—")
        margin = f"{_kib(r['memory_margin_bytes'])} {r['memory_kind']}"
        err = ("—" if r["feature_error_mean"] is None else
               f"{r['feature_error_mean']:.2%} / {r['feature_error_max']:.2%}")
        agree = "—" if r["agreement"] is None else f"{r['agreement']:.1%}"
        views = ",".join(str(v) for v in r["views"])
        lines.append(
            f"| {r['device']} | {r['board']} | {views} | {r['level_index']} ({r['level']:g}) | "
            f"{r['format']} | {_kib(r['artifact_bytes'])} | {arena} | "
            f"{_ms(r['host_latency_ms'])} | {_ms(r['predicted_latency_ms'])} | {margin} | "
            f"{agree} | {err} | {r['edgetpu'] or '—'} |")
    detail = summary.get("agreement_detail", {})
    lines.append("")
    lines.append(
        f"System top-1 agreement with the float Keras pipeline: {summary['agreement']:.2%} on "
        f"{detail.get('frames', '?')} test frames (device accuracy "
        f"{detail.get('device_accuracy', float('nan')):.2%}, float "
        f"{detail.get('float_accuracy', float('nan')):.2%}). Deployment "
        f"`{summary['deployment']}` {'verified' if summary['verified'] else 'NOT verified'}, "
        f"signed with {summary['key']['fingerprint']}.")
    lines.append("")
    lines.append("Per-device agreement: the system with only that device's features from its "
                 "artifact (all others float). Feature error: |dequantized − float| relative to "
                 "the largest |float feature| of the device's views. Predicted ms: cost-model "
                 "inference + transfer on the board; host ms: the ladder's LiteRT measurement.")
    for w in summary.get("warnings", []):
        lines.append(f"\n- warning: {w}")
    return "\n".join(lines) + "\n"


def summary_from_deployment(deploy_dir: str | os.PathLike) -> dict[str, Any]:
    """The export summary's table fields, read back from a deployment's signed manifest and
    its aggregator/head.json (signature and file hashes verified first; models not loaded)."""
    from slimedge.export.verify import verify_deployment

    root = Path(deploy_dir)
    report = verify_deployment(root, load_artifacts=False)
    report.raise_if_failed()
    m = report.manifest
    head = json.loads((root / AGGREGATOR_DIR / "head.json").read_text())
    system = head.get("export_checks", {}).get("system_agreement", {})
    rows = []
    for d in m.devices:
        c = d.checks
        mem, err, cost = c.get("memory", {}), c.get("feature_error", {}), c.get("cost_model", {})
        rows.append({
            "device": d.device, "board": d.board, "views": list(d.views),
            "level_index": d.level_index, "level": d.level, "format": d.format,
            "runtime": d.runtime, "artifact": d.artifact, "artifact_bytes": d.bytes,
            "tflm_arena_bytes": d.tflm_arena_bytes,
            "arena_budget_bytes": d.memory_budget_bytes if d.is_mcu else None,
            "memory_kind": mem.get("ram_kind"),
            "memory_margin_bytes": d.memory_margin_bytes,
            "host_latency_ms": cost.get("host_latency_ms"),
            "predicted_latency_ms": d.predicted_latency_ms,
            "agreement": c.get("agreement_alone"),
            "feature_error_mean": err.get("mean_rel"), "feature_error_max": err.get("max_rel"),
            "edgetpu": _edgetpu_cell(c),
        })
    return {"deployment": str(root), "deployment_id": m.deployment_id, "devices": rows,
            "agreement": system.get("agreement"), "agreement_detail": system,
            "verified": True, "key": {"fingerprint": m.signing_key}, "warnings": []}
