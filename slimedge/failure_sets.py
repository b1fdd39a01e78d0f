"""Which sets of views to fail when measuring accuracy under failures: every set of size k
when there are few, else a seeded sample of distinct ones. One definition for training
reports, the ladder's evaluator and the planner."""

from __future__ import annotations

import math
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


def live_masks(views: int, dead_sets: list[tuple[int, ...]]) -> np.ndarray:
    """(len(dead_sets), V) bool live masks."""
    masks = np.ones((len(dead_sets), views), bool)
    for i, dead in enumerate(dead_sets):
        masks[i, list(dead)] = False
    return masks
