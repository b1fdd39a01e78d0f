"""The ladder on disk: one directory with a manifest, per-level models and cached features.

    manifest.json            format, version, provenance hashes, per-level measured costs
    classifier.npz           the frozen head's classifier (NumpyClassifier)
    labels.npz               labels of the cached splits (val, test)
    levels/LNN/branch.keras  the level's pruned, fine-tuned branch
    levels/LNN/branch_int8.tflite
    levels/LNN/features.npz  int8 features of every view of the cached splits, (N, V, D) per
                             split, with the level's output scale and zero point: what a Linux
                             board running the int8 artifact in LiteRT sends
    levels/LNN/features_<variant>.npz
                             the same for every other feature variant a device may send
                             (`FEATURE_VARIANTS`): "int8-tflm" (the int8 artifact in TFLite
                             Micro, what a microcontroller sends: LiteRT's kernels differ from
                             it by a step or two on some features), "float16", "dynamic",
                             "float32" (float32 arrays, no scale: the static batch-1 file of
                             that format in LiteRT, the file export ships)

A ladder built before the variants were cached has `features.npz` only and no manifest field
`feature_variants`; it stays readable (`ladder_variants` says what it holds).
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
INT8 = "int8"
TFLM = "int8-tflm"  # the int8 artifact as TFLite Micro computes it (microcontroller boards)
FLOAT_VARIANTS: tuple[str, ...] = ("float16", "dynamic", "float32")
# Every kind of features a device may send: what the evaluator pools per view.
FEATURE_VARIANTS: tuple[str, ...] = (INT8, TFLM, *FLOAT_VARIANTS)

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


def feature_variant(fmt: str, tflm: bool = False) -> str:
    """The features a device sends that runs a `fmt` artifact (in TFLite Micro when `tflm`)."""
    if fmt == INT8:
        return TFLM if tflm else INT8
    if fmt in FLOAT_VARIANTS:
        if tflm:
            raise LadderError(f"format {fmt!r}: TFLite Micro runs int8 artifacts only")
        return fmt
    raise LadderError(f"format {fmt!r}: no such feature variant (known: "
                      f"{', '.join(FEATURE_VARIANTS)})")


def features_file(variant: str) -> str:
    """File name, inside a level directory, of a variant's cached features."""
    if variant not in FEATURE_VARIANTS:
        raise LadderError(f"feature variant {variant!r}: unknown (known: "
                          f"{', '.join(FEATURE_VARIANTS)})")
    return "features.npz" if variant == INT8 else f"features_{variant}.npz"


def ladder_variants(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The feature variants a ladder caches (a ladder from before variants: int8 only)."""
    return tuple(manifest.get("feature_variants", (INT8,)))


@dataclass
class LevelFeatures:
    """One level's cached features for one split: int8 with scale and zero point, or float32
    (scale and zero point None)."""

    features: np.ndarray  # int8 or float32 (N, V, D)
    scale: float | None
    zero_point: int | None


def save_level_features(
    path: str | os.PathLike, per_split: dict[str, np.ndarray], scale: float | None = None,
    zero_point: int | None = None
) -> None:
    """int8 features with their `scale`/`zero_point`, or float32 features with neither."""
    want = np.dtype(np.float32) if scale is None else np.dtype(np.int8)
    for split, arr in per_split.items():
        if arr.dtype != want or arr.ndim != 3:
            raise LadderError(f"{path}: features of split '{split}' must be {want} (N, V, D), "
                              f"got {arr.dtype} {arr.shape}")
    quant = {} if scale is None else {"scale": np.float32(scale),
                                      "zero_point": np.int32(zero_point)}
    with open(path, "wb") as fh:
        np.savez(fh, **quant, **per_split)


def load_level_features(path: str | os.PathLike, split: str) -> LevelFeatures:
    path = Path(path)
    if not path.is_file():
        raise LadderError(f"{path}: missing cached features")
    try:
        with np.load(path) as z:
            if split not in z.files:
                raise LadderError(f"{path}: no cached features for split '{split}' "
                                  f"(has {[f for f in z.files if f in CACHED_SPLITS]})")
            if "scale" not in z.files:
                return LevelFeatures(z[split].astype(np.float32, copy=False), None, None)
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
