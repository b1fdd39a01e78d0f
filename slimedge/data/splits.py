"""Carving a validation split out of the training objects: stratified per class, seeded.

Each class draws its validation objects from its own random stream, seeded by the run seed and
the class *name*, so adding or removing another class does not reshuffle this one.
"""

from __future__ import annotations

import zlib

import numpy as np

from slimedge.data.container import SPLITS
from slimedge.errors import DatasetError

TRAIN, VAL, TEST = (SPLITS.index(s) for s in ("train", "val", "test"))


def check_val_fraction(val_fraction: float) -> float:
    value = float(val_fraction)
    if not 0.0 <= value < 1.0:
        raise DatasetError(f"val_fraction: must lie in [0, 1), got {val_fraction}")
    return value


def n_val_for(n_train: int, val_fraction: float) -> int:
    """How many of a class's `n_train` training objects go to validation.

    At least one when the fraction is positive and the class has two or more training objects
    (so every class is validated), and never all of them (so every class is trained on).
    """
    if val_fraction <= 0.0 or n_train < 2:
        return 0
    return int(min(max(round(val_fraction * n_train), 1), n_train - 1))


def carve_val(
    split: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    val_fraction: float,
    seed: int,
) -> np.ndarray:
    """Return a copy of `split` with a stratified, seeded share of train objects moved to val.

    The result depends only on the seed, the class names and the order of objects within each
    class (callers list objects in a sorted, filesystem-independent order).
    """
    val_fraction = check_val_fraction(val_fraction)
    split = np.asarray(split, dtype=np.uint8)
    labels = np.asarray(labels)
    out = split.copy()
    for c, name in enumerate(class_names):
        train_idx = np.flatnonzero((split == TRAIN) & (labels == c))
        k = n_val_for(train_idx.size, val_fraction)
        if k == 0:
            continue
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])
        out[rng.choice(train_idx, size=k, replace=False)] = VAL
    return out
