"""The ladder on disk: one directory with a manifest, per-level models and cached features.

    manifest.json            format, version, provenance hashes, per-level measured costs
    classifier.npz           the frozen head's classifier (NumpyClassifier)
    labels.npz               labels of the cached splits (val, test)
    levels/LNN/branch.keras  the level's pruned, fine-tuned branch
    levels/LNN/branch_int8.tflite
    levels/LNN/features.npz  int8 features of every view of the cached splits, (N, V, D) per
                             split, with the level's output scale and zero point — exactly what
                             a device running this level would send
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.artifacts import read_versioned_json
from slimedge.errors import SlimEdgeError

LADDER_FORMAT = "slimedge-ladder"
LADDER_VERSION = 1
CACHED_SPLITS: tuple[str, ...] = ("val", "test")

# Keys every level entry carries (users' scripts read them via `slimedge ladder info --json`).
LEVEL_KEYS: tuple[str, ...] = (
    "level", "params", "macs", "tflite_int8_bytes", "tflm_arena_bytes", "latency_ms_int8",
    "val_accuracy",
)


class LadderError(SlimEdgeError):
    """A ladder directory that is missing, damaged, or built from other inputs."""


def level_dir(root: str | os.PathLike, index: int) -> Path:
    return Path(root) / "levels" / f"L{index:02d}"


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    root = Path(root)
    path = root / "manifest.json"
    if not root.exists():
        raise LadderError(f"{root}: no such ladder (path does not exist)")
    if not path.is_file():
        raise LadderError(f"{root}: not a ladder directory (no manifest.json)")
    manifest = read_versioned_json(path, fmt=LADDER_FORMAT, version=LADDER_VERSION,
                                   error=LadderError, remedy="rebuild the ladder")
    levels = manifest.get("levels")
    if not isinstance(levels, list) or not levels:
        raise LadderError(f"{path}: field 'levels' must be a non-empty list")
    for i, entry in enumerate(levels):
        for key in LEVEL_KEYS:
            if key not in entry:
                raise LadderError(f"{path}: levels[{i}] is missing field '{key}'")
    for key in ("views", "feature_dim", "pool_mode", "dataset_hash", "model_hash"):
        if key not in manifest:
            raise LadderError(f"{path}: missing field '{key}'")
    return manifest


@dataclass
class LevelFeatures:
    """One level's cached int8 features for one split."""

    features: np.ndarray  # int8 (N, V, D)
    scale: float
    zero_point: int


def save_level_features(
    path: str | os.PathLike, per_split: dict[str, np.ndarray], scale: float, zero_point: int
) -> None:
    for split, arr in per_split.items():
        if arr.dtype != np.int8 or arr.ndim != 3:
            raise LadderError(f"{path}: features of split '{split}' must be int8 (N, V, D), "
                              f"got {arr.dtype} {arr.shape}")
    with open(path, "wb") as fh:
        np.savez(fh, scale=np.float32(scale), zero_point=np.int32(zero_point), **per_split)


def load_level_features(path: str | os.PathLike, split: str) -> LevelFeatures:
    path = Path(path)
    if not path.is_file():
        raise LadderError(f"{path}: missing cached features")
    try:
        with np.load(path) as z:
            if split not in z.files:
                raise LadderError(f"{path}: no cached features for split '{split}' "
                                  f"(has {[f for f in z.files if f in CACHED_SPLITS]})")
            return LevelFeatures(z[split], float(z["scale"]), int(z["zero_point"]))
    except (OSError, ValueError, KeyError) as exc:
        raise LadderError(f"{path}: unreadable cached features ({exc})") from exc


def load_labels(root: str | os.PathLike, split: str) -> np.ndarray:
    path = Path(root) / "labels.npz"
    try:
        with np.load(path) as z:
            return z[split].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise LadderError(f"{path}: no labels for split '{split}' ({exc})") from exc
