"""`slimedge export`: a fleet, a ladder and a level per view -> a verified, signed deployment.

For each device, its branch at its level in the board's format (full int8 for MCU and Edge TPU
boards, the board's preferred format otherwise), rebuilt from the level's `branch.keras` with a
static batch of 1 (the ladder's files keep a dynamic batch axis, which the Edge TPU compiler
refuses and microcontrollers cannot plan for) and calibrated with the ladder's own
representative images, so its int8 outputs are the ladder's cached features.

Every artifact is checked before it is declared good (`slimedge.export.artifacts`):

- it runs in LiteRT (on the test images of its views); an MCU artifact also runs in TFLite
  Micro with the board's arena budget (SRAM x (1 - reserved)) as the arena limit, and its
  measured arena is recorded, with a firmware bundle (C arrays, arena constant, op resolver);
- an Edge TPU artifact is checked statically (`check_edgetpu`; the compiler itself cannot be
  installed here), the first op that would fall back to the CPU named;
- the level fits the board (cost model before any work, then the measured artifact).

Then the system passes the deploy gate (`slimedge.export.gate`): exactness against the
evaluator, and int8 against the float Keras pipeline (accuracy within a tolerance by a paired
interval; every frame whose float top-2 margin exceeds delta agrees). Raw top-1 agreement is
reported, and checked only when a floor is asked for (`min_agreement`, informational).

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

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.artifacts import atomic_dir
from slimedge.devices.catalog import EDGETPU, MCU
from slimedge.devices.fleet import Fleet
from slimedge.export import ExportError
from slimedge.export.aggregator_files import (
    AGGREGATOR_DIR,
    head_logits,
    write_aggregator,
    write_head_json,
)
from slimedge.export.agreement import ViewFeatures, agreement, pool_views
from slimedge.export.artifacts import (
    DEVICES_DIR,
    FIRMWARE_DIR,
    Built,
    DeviceResult,
    build_artifacts,
    check_devices,
    edgetpu_check,
    edgetpu_compiler_note,
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
from slimedge.export.entries import deployment_manifest
from slimedge.export.gate import DeployedView, GateReference, run_gate
from slimedge.export.inputs import (
    KEYS_DIR,
    check_out_dir,
    load_checked_dataset,
    resolve_key,
    say,
)
from slimedge.export.summary import build_summary, markdown_table, summary_from_deployment
from slimedge.ladder.store import read_manifest

__all__ = [
    "AGGREGATOR_DIR",
    "DEVICES_DIR",
    "FIRMWARE_DIR",
    "KEYS_DIR",
    "DeviceAssignment",
    "PlanChoice",
    "assign_devices",
    "edgetpu_check",
    "export_deployment",
    "least_pruned_levels",
    "markdown_table",
    "read_plan",
    "summary_from_deployment",
]


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
    the system fails the deploy gate (`slimedge.export.gate`), or the result does not verify.

    `formats`: device id -> format, replacing the board's preferred one (the board must accept
    it). `catalog`: a board catalog directory or mapping (default: the project's catalog).
    `min_agreement` (deprecated: the gate decides): a raw top-1 agreement floor that is only
    reported; raw agreement below it adds a warning to the summary, never a failure, since a
    few near-tie frames decide it by chance."""
    from slimedge.export.verify import verify_deployment

    t_start = time.perf_counter()
    ladder_dir, out = Path(ladder_dir), Path(out_dir)
    manifest = read_manifest(ladder_dir)
    fleet = as_fleet(fleet_path, catalog)
    check_views(fleet, manifest)
    if plan is not None and levels is not None:
        raise ExportError("give either levels or a plan, not both (the plan sets the levels)")
    if min_agreement is not None and not 0.0 <= float(min_agreement) <= 1.0:
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

    check_out_dir(out)
    ds, dataset_where = load_checked_dataset(dataset, ladder_dir, manifest)
    key = resolve_key(key_path, out)
    say(progress, f"{len(assignments)} devices, levels {view_levels} ({level_source})")

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

    with atomic_dir(out) as tmp:
        built = build_artifacts(ladder_dir, manifest, assignments, calib, images, tmp,
                                progress)
        results = check_devices(manifest, assignments, built, images, tmp, allow_misfit,
                                warnings, progress)
        head = write_aggregator(ladder_dir, manifest, tmp, view_levels, primary, choice,
                                fleet)
        say(progress, "deploy gate: exactness, int8 vs float")
        system = _system_checks(ladder_dir, results, built, primary, head, labels)
        raw = system["agreement"]["agreement"]
        if min_agreement is not None and raw < min_agreement:
            warnings.append(f"agreement: raw top-1 agreement with float {raw:.2%} is below "
                            f"--min-agreement {min_agreement:.2%} (informational: the deploy "
                            "gate decides)")
        edgetpu_note = None
        if any(r.a.board.board_class == EDGETPU for r in results):
            edgetpu_note = edgetpu_compiler_note()
            for r in results:
                if r.a.board.board_class == EDGETPU and not r.checks["edgetpu"]["ready"]:
                    warnings.append(f"{r.a.device} ({r.a.board.id}): not ready for the Edge "
                                    f"TPU: {r.checks['edgetpu']['reasons'][0]}")
        write_head_json(tmp, head, system, built.cache_report())
        system["gate_result"].raise_if_failed()

        generated = False
        if key.generate_in is not None:
            from slimedge.export import signing

            signing.generate_keys(key.generate_in)
            generated = True
        deployment = deployment_manifest(fleet, ladder_dir, manifest, choice, results, head)
        from slimedge.export.manifest import write_deployment_manifest

        written = write_deployment_manifest(tmp, deployment, key.private)
        report = verify_deployment(tmp)
        if not report.ok:
            raise ExportError(f"{out}: the deployment does not verify: "
                              + "; ".join(report.failures))
        say(progress, f"verified ({len(report.devices)} devices), signed with "
                      f"{written.signing_key}")
    summary = build_summary(out, fleet, manifest, results, system, written, key, generated,
                            view_levels, level_source, choice, dataset_where, warnings, built,
                            [n for n in (edgetpu_note,) if n] + notes)
    summary["seconds"] = round(time.perf_counter() - t_start, 3)
    return summary


def _system_checks(ladder_dir: Path, results: Sequence[DeviceResult], built: Built,
                   primary: Sequence[str | None], head: Mapping[str, Any],
                   labels: np.ndarray) -> dict[str, Any]:
    """The deploy gate over the artifacts' test features (views live where a device runs
    them), raw agreement with float, and per device the system with only that device's
    features from its artifact (the others float), to say which device a problem comes from."""
    from slimedge.ladder.classifier import NumpyClassifier
    from slimedge.ladder.store import INT8, feature_variant

    by_device = {r.a.device: r for r in results}
    views = []
    variants = [INT8] * len(primary)  # what each view's device sends (MCU: TFLite Micro's)
    for v, dev in enumerate(primary):
        if dev is not None:
            r = by_device[dev]
            views.append(DeployedView(v, dev, r.a.level_index, r.features[r.a.views.index(v)]))
            variants[v] = feature_variant(r.a.fmt, r.a.board.board_class == MCU)
    ref = GateReference.from_ladder(ladder_dir, built.float_features, head["keras_head"],
                                    head["weights"], variants=variants)
    if not np.array_equal(ref.labels, labels):
        raise ExportError(f"{ladder_dir}: the ladder's test labels are not the dataset's")
    shipped = NumpyClassifier.load(Path(head["tflite_path"]).parent / "classifier.npz")
    gate = run_gate(views, ref, lambda pooled: head_logits(head["tflite_path"], pooled),
                    shipped)
    raw = agreement(gate.predictions, gate.float_predictions, labels,
                    float_logits=gate.float_logits)
    V = len(primary)
    float_views: list[ViewFeatures | None] = [None] * V
    for d in views:
        float_views[d.view] = ViewFeatures(built.float_features[d.level_index][:, d.view])
    for r in results:
        mixed = list(float_views)
        for i, v in enumerate(r.a.views):
            if primary[v] == r.a.device:
                mixed[v] = r.features[i]
        pooled, empty = pool_views(mixed, head["mode"], head["weights"])
        pred = head["numpy_classifier"].predict(pooled)
        pred[empty] = -1
        r.alone_agreement = float(np.mean(pred == gate.float_predictions))
        r.checks["agreement_alone"] = r.alone_agreement
    return {"gate": gate.to_dict(), "gate_result": gate, "agreement": raw.to_dict(),
            "head": {"tflite_vs_classifier_max_abs_logit":
                     gate.exactness["head_max_abs_logit"]}}


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

