"""What the evaluator predicts for the frames a fleet answered, with the live sets it used.

The planner's accuracy comes from `slimedge.ladder.evaluator.Evaluator` (cached int8 features
of each level, pooled by the C++ core, classified by the head's classifier); a live fleet must
give the same answer frame by frame. For each answered frame this module asks the evaluator
for the deployment's levels, that frame's live set and the pooling the aggregator uses for it
(the contingency row's weights for that failure set, else the head's own pooling).

The deployment records its ladder by hash only (`provenance.ladder_sha256`). The ladder is
taken from `--ladder` or the work-folder sibling `<deploy>/../ladder`, and used only if its
manifest's hash matches. When no such ladder is reachable the same evaluator runs on the
deployment's own artifacts' features instead: each device's `.tflite` file on its views'
test images (LiteRT; reference kernels for MCU boards, bit-exact with TFLite Micro), which is
what the ladder's cache holds when the export's static-vs-cached check passed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimedge.artifacts import sha256_file
from slimedge.fleet.schedule import FleetUpError

if TYPE_CHECKING:
    from slimedge.runtime.aggregator_deployment import AggregatorDeployment as Deployment

SPLIT = "test"  # the split a local fleet replays


def load_deployment(deploy: str | os.PathLike, public_key: str | os.PathLike | None
                    ) -> Deployment:
    """The deployment as the aggregator reads it, verified (signature and every file's hash)
    with the provisioned public key."""
    from slimedge.export.manifest import MANIFEST_NAME
    from slimedge.runtime.aggregator_deployment import load_aggregator_deployment

    root = Path(deploy)
    if not (root / MANIFEST_NAME).is_file():
        raise FleetUpError(f"{root}: not a deployment (no {MANIFEST_NAME}); build one with "
                           "`slimedge export` or `slimedge demo`")
    return load_aggregator_deployment(root, public_key)


def device_ids(dep: Deployment) -> list[str]:
    return [d.device for d in dep.manifest.devices]


def view_levels(dep: Deployment) -> list[int]:
    """Ladder level index per view (a view no device owns: 0; it is never live)."""
    return [0 if j is None else int(j) for j in dep.head["view_level_index"]]


def find_dataset(dep: Deployment, given: str | os.PathLike | None) -> Path:
    """The dataset the deployment was built from: `given`, else `<deploy>/../dataset`; its
    content hash must be the one the manifest records."""
    from slimedge.data.container import read_meta
    from slimedge.errors import DatasetError

    want = dep.manifest.provenance.dataset_sha256
    path = Path(given) if given is not None else dep.root.parent / "dataset"
    try:
        meta = read_meta(path)
    except DatasetError as exc:
        hint = "" if given is not None else " (pass the deployment's dataset with --dataset)"
        raise FleetUpError(f"{exc}{hint}") from exc
    if want is not None and meta["content_hash"] != want:
        raise FleetUpError(f"{path}: dataset {meta['content_hash'][:12]} is not the one "
                           f"deployment {dep.manifest.deployment_id} was built from "
                           f"({want[:12]}); pass the right one with --dataset")
    return path


def find_ladder(dep: Deployment, given: str | os.PathLike | None) -> tuple[Path | None, str]:
    """(the deployment's ladder or None, why) — matched by the manifest's ladder hash."""
    want = dep.manifest.provenance.ladder_sha256
    path = Path(given) if given is not None else dep.root.parent / "ladder"
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return None, f"no ladder at {path}"
    if sha256_file(manifest) != want:
        return None, f"the ladder at {path} is not the deployment's (manifest hash differs)"
    return path, f"ladder {path} (manifest hash matches the deployment's)"


@dataclass
class Reference:
    """The evaluator for a deployment's levels on the replayed split."""

    evaluator: Any  # slimedge.ladder.evaluator.Evaluator
    levels: list[int]  # the evaluator's level index per view
    source: str  # "ladder" | "artifacts"
    note: str

    @property
    def labels(self) -> np.ndarray:
        return self.evaluator.labels

    def predictions(self, dep: Deployment, frames: Sequence[int], live: np.ndarray
                    ) -> np.ndarray:
        """The evaluator's class for each frame (-1: no live view) given each frame's live
        mask `live` (n, V); frames with one live set are scored in one call."""
        frames = np.asarray(frames, np.int64)
        live = np.asarray(live, bool).reshape(len(frames), -1)
        out = np.full(len(frames), -1, np.int64)
        groups: dict[bytes, list[int]] = {}
        for i, row in enumerate(live):
            groups.setdefault(row.tobytes(), []).append(i)
        for rows in groups.values():
            mask = live[rows[0]]
            pooling = dep.pooling.for_live(mask)
            ev = (self.evaluator if self.evaluator.mode == pooling.mode
                  else dataclasses.replace(self.evaluator, mode=pooling.mode))
            pred = ev.predictions(self.levels, mask, pooling.weights)
            out[rows] = pred[frames[rows]]
        return out


def make_reference(dep: Deployment, ladder: Path | None, note: str,
                   dataset: Path) -> Reference:
    from slimedge.ladder.evaluator import Evaluator

    if ladder is not None:
        ev = Evaluator.from_ladder(ladder, SPLIT)
        ev = dataclasses.replace(ev, mode=dep.head["pooling"])
        ref = Reference(ev, view_levels(dep), "ladder", note)
    else:
        ref = _artifact_reference(dep, dataset, note)
    _check_labels(ref, dataset)
    return ref


def _artifact_reference(dep: Deployment, dataset: Path, why: str) -> Reference:
    """The evaluator over the deployment's artifacts' features. Pseudo-level v holds view v's
    features from its device's artifact, so levels = [0 .. V-1] gathers each view's own."""
    from slimedge.data.container import load_dataset
    from slimedge.export.manifest import MCU_RUNTIME
    from slimedge.ladder.classifier import NumpyClassifier
    from slimedge.ladder.evaluator import Evaluator
    from slimedge.runtime.branch import BranchRunner

    ds = load_dataset(dataset)
    images, labels = ds.subset(SPLIT)
    V, N, D = dep.views, len(labels), int(dep.head["feature_dim"])
    feats = np.zeros((V, N, V, D), np.int8)
    scales, zps = np.ones(V, np.float32), np.zeros(V, np.int32)
    for d in dep.manifest.devices:
        runner = BranchRunner(dep.root / d.artifact, reference_kernels=d.runtime == MCU_RUNTIME)
        if runner.output_quantization is None:
            raise FleetUpError(f"{d.artifact}: float features; the evaluator comparison needs "
                               "int8 artifacts or the deployment's ladder (--ladder)")
        for v in d.views:
            feats[v, :, v, :] = runner.run(images[:, v]).features
            scales[v], zps[v] = runner.output_quantization
    ev = Evaluator(feats, scales, zps, labels.astype(np.int64),
                   NumpyClassifier.load(dep.root / dep.head["classifier"]),
                   mode=dep.head["pooling"])
    note = f"{why}: evaluator run on the deployment's artifacts' features"
    return Reference(ev, list(range(V)), "artifacts", note)


def _check_labels(ref: Reference, dataset: Path) -> None:
    from slimedge.data.container import load_dataset

    labels = load_dataset(dataset).subset(SPLIT)[1]
    if not np.array_equal(np.asarray(labels, np.int64), ref.labels):
        raise FleetUpError(f"{dataset}: the {SPLIT} split's labels differ from the "
                           f"evaluator's ({ref.source}); the ladder was built from another "
                           "dataset")

