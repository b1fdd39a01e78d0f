"""Sets of failed views, and which ones to measure accuracy under.

A failure set is a dead bitmask (bit v set = view v dead). `failure_subsets` picks the sets of
size k (all of them when there are few, else a seeded sample of distinct ones); the bitmask
helpers serve the evaluator, importance and the planner alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np


def failure_subsets(views: int, k: int, max_subsets: int, rng: np.random.Generator
                    ) -> list[tuple[int, ...]]:
    """All k-subsets of the views if there are at most ``max_subsets``, else that many
    distinct ones drawn at random (sorted)."""
    total = math.comb(views, k)
    if total <= max_subsets:
        return list(combinations(range(views), k))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < max_subsets:
        chosen.add(tuple(sorted(rng.choice(views, size=k, replace=False).tolist())))
    return sorted(chosen)


def bits(mask: int, views: int) -> np.ndarray:
    """(V,) bool, True where bit v of `mask` is set."""
    return ((int(mask) >> np.arange(views)) & 1).astype(bool)


def mask_of(views: Sequence[int]) -> int:
    out = 0
    for v in views:
        out |= 1 << int(v)
    return out


def views_of(mask: int) -> list[int]:
    return [v for v in range(int(mask).bit_length()) if mask >> v & 1]


def live_masks(masks: Sequence[int], views: int) -> np.ndarray:
    """(K, V) bool live masks of dead bitmasks."""
    m = np.asarray(masks, np.int64).reshape(-1)
    return ((m[:, None] >> np.arange(views)[None, :]) & 1) == 0


def sets_up_to(views: int, k: int) -> np.ndarray:
    """Dead bitmasks of every failure set of size 1..k, by size then value."""
    out = []
    for size in range(1, k + 1):
        out.extend(mask_of(c) for c in combinations(range(views), size))
    return np.array(out, np.int64)
