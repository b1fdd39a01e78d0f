"""The aggregator's files of a deployment: the head's classifier as float32 TFLite, the same
classifier as NumPy arrays (the planner's), and head.json (pooling, views, view -> device and
level, the export's checks)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.artifacts import write_json
from slimedge.devices.fleet import Fleet
from slimedge.export import ExportError
from slimedge.export.assignment import PlanChoice

AGGREGATOR_DIR = "aggregator"


def head_logits(path: Path, pooled: np.ndarray) -> np.ndarray:
    """Logits of pooled vectors through the shipped head.tflite, in LiteRT (as the aggregator
    runs it)."""
    from slimedge.profile.litert import interpreter

    it = interpreter(path)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], [len(pooled), pooled.shape[1]])
    it.allocate_tensors()
    it.set_tensor(d["index"], np.ascontiguousarray(pooled, np.float32))
    it.invoke()
    return np.asarray(it.get_tensor(it.get_output_details()[0]["index"]))


def write_aggregator(ladder_dir: Path, manifest: Mapping[str, Any], tmp: Path,
                     view_levels: Sequence[int], primary: Sequence[str | None],
                     choice: PlanChoice | None, fleet: Fleet) -> dict[str, Any]:
    """The aggregator's files in `tmp`; returns what the system checks need (Keras head,
    head.tflite path, classifier, pooling mode and weights) and head.json's content."""
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



def write_head_json(tmp: Path, head: Mapping[str, Any], system: Mapping[str, Any],
                    static_vs_cached: Mapping[str, Any]) -> None:
    """head.json with the export's system checks (`system`: "gate", "agreement", "head"),
    which the summary of a signed deployment is read back from."""
    doc = dict(head["json"])
    doc["export_checks"] = {
        "gate": system["gate"],
        "system_agreement": system["agreement"],
        "head": system["head"],
        "static_vs_cached": dict(static_vs_cached),
    }
    write_json(tmp / AGGREGATOR_DIR / "head.json", doc)
