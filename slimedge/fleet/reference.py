"""What the evaluator predicts for the frames a fleet answered, with the live sets it used.

The planner's accuracy comes from `slimedge.ladder.evaluator.Evaluator` (cached features of
each level as each view's device computes them: int8 in LiteRT, int8 in TFLite Micro on a
microcontroller, float on a float16/float32 board; pooled by the C++ core, classified by the
head's classifier); a live fleet must give the same answer frame by frame. For each answered
frame this module asks the evaluator for the deployment's levels, that frame's live set and
the pooling the aggregator uses for it (the contingency row's weights for that failure set,
else the head's own pooling).

The deployment records its ladder by hash only (`provenance.ladder_sha256`). The ladder is
taken from `--ladder` or the work-folder sibling `<deploy>/../ladder`, and used only if its
manifest's hash matches. When no such ladder is reachable the same evaluator runs on the
deployment's own artifacts' features instead: each device's `.tflite` file on its views'
test images as its agent runs it (LiteRT; TFLite Micro for MCU boards), which is what the
ladder's cache holds when the export's static-vs-cached check passed. A ladder from before
feature variants were cached holds int8 LiteRT features only: the views it cannot model are
named in the reference's note.
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


def deployment_variants(dep: Deployment) -> list[str]:
    """Per view, the feature variant its device sends (int8 for a view no device owns)."""
    from slimedge.export.manifest import MCU_RUNTIME
    from slimedge.ladder.store import INT8, feature_variant

    out = [INT8] * dep.views
    for d in dep.manifest.devices:
        for v in dep.devices[d.device].views:
            out[v] = feature_variant(d.format, d.runtime == MCU_RUNTIME)
    return out


def _by_live_set(live: np.ndarray) -> list[list[int]]:
    """Row indices grouped by identical live mask (each group is scored in one call)."""
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(live):
        groups.setdefault(row.tobytes(), []).append(i)
    return list(groups.values())


@dataclass
class Reference:
    """The evaluator for a deployment's levels on the replayed split (`source` "ladder"), or
    the same pooling and classifier over features the deployment's artifacts compute
    (`source` "artifacts": `features` per view, None for a view no device sends)."""

    source: str
    note: str
    labels: np.ndarray
    evaluator: Any = None  # slimedge.ladder.evaluator.Evaluator ("ladder")
    levels: list[int] | None = None  # its level index per view
    features: list[Any] | None = None  # ViewFeatures per view ("artifacts")
    classifier: Any = None  # NumpyClassifier ("artifacts")

    def predictions(self, dep: Deployment, frames: Sequence[int], live: np.ndarray
                    ) -> np.ndarray:
        """The class for each frame (-1: no live view) given each frame's live mask `live`
        (n, V), pooled as the aggregator pools that live set."""
        frames = np.asarray(frames, np.int64)
        live = np.asarray(live, bool).reshape(len(frames), -1)
        out = np.full(len(frames), -1, np.int64)
        for rows in _by_live_set(live):
            mask = live[rows[0]]
            if mask.any():
                out[rows] = self._predict(dep, frames[rows], mask)
        return out

    def _predict(self, dep: Deployment, frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
        pooling = dep.pooling.for_live(mask)
        if self.evaluator is not None:
            ev = (self.evaluator if self.evaluator.mode == pooling.mode
                  else dataclasses.replace(self.evaluator, mode=pooling.mode))
            return ev.predictions(self.levels, mask, pooling.weights)[frames]
        from slimedge.export.agreement import ViewFeatures, pool_views

        views = [None if f is None or not mask[v] else
                 ViewFeatures(f.features[frames], f.scale, f.zero_point)
                 for v, f in enumerate(self.features)]
        pooled, empty = pool_views(views, pooling.mode, pooling.weights)
        pred = self.classifier.predict(pooled)
        pred[empty] = -1
        return pred


def make_reference(dep: Deployment, ladder: Path | None, note: str,
                   dataset: Path, frames: int | None = None) -> Reference:
    """The ladder's evaluator when `ladder` is given, else the artifacts' reference."""
    from slimedge.ladder.evaluator import Evaluator

    if ladder is not None:
        ev = Evaluator.from_ladder(ladder, SPLIT, variants=deployment_variants(dep))
        ev = dataclasses.replace(ev, mode=dep.head["pooling"])
        if ev.fallback:
            note = f"{note}; " + "; ".join(ev.fallback.values())
        ref = Reference("ladder", note, ev.labels, evaluator=ev, levels=view_levels(dep))
    else:
        ref = artifact_reference(dep, dataset, f"{note}: evaluator run on the deployment's "
                                 "artifacts' features", frames)
    _check_labels(ref, dataset)
    return ref


def artifact_reference(dep: Deployment, dataset: Path, note: str, frames: int | None = None
                       ) -> Reference:
    """Each device's artifact run on its views' replayed images (the first `frames` of the
    split, all by default) as the agent runs it (LiteRT; TFLite Micro within the board's
    arena budget for MCU boards: LiteRT's kernels, even its reference ones, differ from it on
    some features), int8 or float features as the artifact outputs them, pooled and classified
    as the evaluator does."""
    from slimedge.data.container import load_dataset
    from slimedge.export.artifacts import run_views
    from slimedge.export.manifest import MCU_RUNTIME
    from slimedge.ladder.classifier import NumpyClassifier

    images, labels = load_dataset(dataset).subset(SPLIT)
    images, labels = images[:frames], labels[:frames]
    features: list[Any] = [None] * dep.views
    for d in dep.manifest.devices:
        views = list(dep.devices[d.device].views)
        arena = d.memory_budget_bytes if d.runtime == MCU_RUNTIME else None
        for v, f in zip(views, run_views(dep.root / d.artifact, images, views, tflm_arena=arena),
                        strict=True):
            features[v] = f
    classifier = NumpyClassifier.load(dep.root / dep.head["classifier"])
    return Reference("artifacts", note, np.asarray(labels, np.int64), features=features,
                     classifier=classifier)


def _check_labels(ref: Reference, dataset: Path) -> None:
    from slimedge.data.container import load_dataset

    labels = load_dataset(dataset).subset(SPLIT)[1][:len(ref.labels)]
    if not np.array_equal(np.asarray(labels, np.int64), ref.labels):
        raise FleetUpError(f"{dataset}: the {SPLIT} split's labels differ from the "
                           f"evaluator's ({ref.source}); the ladder was built from another "
                           "dataset")

