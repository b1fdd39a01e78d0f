"""The dataset container every stage reads: multi-view images, labels, classes, splits, provenance.

On disk a dataset is a directory:

    meta.json    format name + version, class names, split names, per-object names,
                 cameras, the parameters that made it, and the content hash
    images.npy   uint8 (N, V, H, W, 1)
    labels.npy   int32 (N,) index into class_names
    split.npy    uint8 (N,) index into SPLITS

`images.npy` is memory-mapped on load, so large sets do not need to fit in memory twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.artifacts import atomic_dir, read_versioned_json
from slimedge.errors import DatasetError

FORMAT_NAME = "slimedge-dataset"
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class Dataset:
    images: np.ndarray  # uint8 (N, V, H, W, 1)
    labels: np.ndarray  # int32 (N,)
    class_names: list[str]
    split: np.ndarray  # uint8 (N,) index into SPLITS
    params: dict[str, Any] = field(default_factory=dict)  # what made it (generator/importer)
    cameras: list[dict[str, float]] = field(default_factory=list)  # per view: azimuth, elevation
    object_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    # -- shape facts ---------------------------------------------------------------
    @property
    def n_objects(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def split_counts(self) -> dict[str, int]:
        counts = np.bincount(self.split, minlength=len(SPLITS))
        return {name: int(counts[i]) for i, name in enumerate(SPLITS)}

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise DatasetError(f"split: unknown split '{split}' (expected one of {list(SPLITS)})")
        return np.flatnonzero(self.split == SPLITS.index(split))

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split (images copied out of the memory map)."""
        idx = self.indices(split)
        return np.asarray(self.images[idx]), self.labels[idx]

    # -- integrity -----------------------------------------------------------------
    def validate(self, where: str = "dataset") -> None:
        im = self.images
        if im.dtype != np.uint8 or im.ndim != 5 or im.shape[-1] != 1:
            raise DatasetError(
                f"{where}: images must be uint8 (N, V, H, W, 1), got {im.dtype} {tuple(im.shape)}"
            )
        n = im.shape[0]
        if n == 0:
            raise DatasetError(f"{where}: dataset holds no objects")
        if self.labels.shape != (n,):
            raise DatasetError(f"{where}: labels shape {self.labels.shape}, expected ({n},)")
        if self.split.shape != (n,):
            raise DatasetError(f"{where}: split shape {self.split.shape}, expected ({n},)")
        if not self.class_names:
            raise DatasetError(f"{where}: class_names is empty")
        if len(set(self.class_names)) != len(self.class_names):
            raise DatasetError(f"{where}: class_names has duplicates")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DatasetError(
                f"{where}: labels must lie in 0..{len(self.class_names) - 1}, "
                f"got {int(self.labels.min())}..{int(self.labels.max())}"
            )
        if self.split.max() >= len(SPLITS):
            raise DatasetError(f"{where}: split codes must lie in 0..{len(SPLITS) - 1}")
        if self.cameras and len(self.cameras) != im.shape[1]:
            raise DatasetError(
                f"{where}: {len(self.cameras)} cameras for {im.shape[1]} views"
            )
        if self.object_names and len(self.object_names) != n:
            raise DatasetError(f"{where}: {len(self.object_names)} object names for {n} objects")

    def content_hash(self) -> str:
        """SHA-256 of what the dataset holds (not of how it was made)."""
        h = hashlib.sha256()
        h.update(f"{FORMAT_NAME}/{FORMAT_VERSION}".encode())
        h.update(json.dumps([list(self.images.shape), self.class_names, list(SPLITS)]).encode())
        images = np.ascontiguousarray(self.images)
        step = max(1, (64 << 20) // max(1, images[0].nbytes))
        for start in range(0, images.shape[0], step):
            h.update(memoryview(np.ascontiguousarray(images[start : start + step])).cast("B"))
        h.update(self.labels.astype("<i4").tobytes())
        h.update(self.split.astype(np.uint8).tobytes())
        return h.hexdigest()

    # -- persistence -----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write atomically to directory `path`; returns the content hash."""
        self.validate()
        digest = self.content_hash()
        with atomic_dir(path) as tmp:
            np.save(tmp / "images.npy", np.ascontiguousarray(self.images))
            np.save(tmp / "labels.npy", self.labels.astype(np.int32))
            np.save(tmp / "split.npy", self.split.astype(np.uint8))
            meta = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "content_hash": digest,
                "objects": self.n_objects,
                "views": self.n_views,
                "image_size": list(self.image_size),
                "class_names": list(self.class_names),
                "splits": list(SPLITS),
                "cameras": self.cameras,
                "object_names": self.object_names,
                "params": self.params,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        return digest

    def summary(self) -> dict[str, Any]:
        """The `slimedge data info --json` object."""
        return {
            "objects": self.n_objects,
            "views": self.n_views,
            "classes": list(self.class_names),
            "splits": self.split_counts(),
            "image_size": list(self.image_size),
            "content_hash": self.content_hash(),
            "params": self.params,
        }


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a dataset's meta.json (cheap: no arrays are loaded)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset (path does not exist)")
    meta_path = path / "meta.json"
    if not path.is_dir() or not meta_path.is_file():
        raise DatasetError(f"{path}: not a slimedge dataset directory (no meta.json)")
    meta = read_versioned_json(meta_path, fmt=FORMAT_NAME, version=FORMAT_VERSION,
                               error=DatasetError,
                               remedy="regenerate or re-import the dataset")
    for key in ("class_names", "splits", "content_hash"):
        if key not in meta:
            raise DatasetError(f"{meta_path}: missing field '{key}'")
    if list(meta["splits"]) != list(SPLITS):
        raise DatasetError(
            f"{meta_path}: field 'splits' is {meta['splits']}, expected {list(SPLITS)}"
        )
    return meta


def load_dataset(path: str | os.PathLike, *, verify: bool = False, mmap: bool = True) -> Dataset:
    """Load a dataset directory. `verify` recomputes the content hash and compares."""
    path = Path(path)
    meta = read_meta(path)
    arrays = {}
    for name in ("images", "labels", "split"):
        f = path / f"{name}.npy"
        if not f.is_file():
            raise DatasetError(f"{f}: missing array file")
        try:
            arrays[name] = np.load(f, mmap_mode="r" if (mmap and name == "images") else None)
        except (ValueError, OSError) as exc:
            raise DatasetError(f"{f}: unreadable array ({exc})") from exc
    try:
        ds = Dataset(
            images=arrays["images"],
            labels=np.asarray(arrays["labels"], dtype=np.int32),
            class_names=list(meta["class_names"]),
            split=np.asarray(arrays["split"], dtype=np.uint8),
            params=meta.get("params", {}),
            cameras=meta.get("cameras", []),
            object_names=meta.get("object_names", []),
        )
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    if verify and ds.content_hash() != meta["content_hash"]:
        raise DatasetError(
            f"{path}: content hash does not match meta.json (files changed or corrupt)"
        )
    return ds
