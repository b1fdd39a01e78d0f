"""System accuracy of a configuration, measured from the ladder's cached features.

A configuration is a ladder level per view, a live mask, and (for weighted pooling) weights.
Each view's features are the cached int8 outputs of its level's TFLite branch; they are pooled
by the C++ core (the same code the runtime aggregator runs) and classified by the frozen head's
classifier. A frame whose every view is dead has no prediction and counts as wrong.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slimedge import _core
from slimedge.failure_sets import failure_subsets, live_masks, mask_of
from slimedge.ladder.classifier import NumpyClassifier
from slimedge.ladder.store import (
    LadderError,
    level_dir,
    load_labels,
    load_level_features,
    read_manifest,
)

MAX_BATCH_MASKS = 32  # live masks per classifier call (bounds memory at large N)


@dataclass
class Evaluator:
    features: np.ndarray  # int8 (L, N, V, D): every level's features for every view
    scales: np.ndarray | None  # float32 (L,); None for float32 features
    zero_points: np.ndarray | None  # int32 (L,); None for float32 features
    labels: np.ndarray  # (N,)
    classifier: NumpyClassifier
    mode: str = "max"

    @classmethod
    def from_ladder(cls, root: str | os.PathLike, split: str = "val", *,
                    manifest: dict | None = None) -> Evaluator:
        """`manifest`: already read (or, while a ladder is being built, not yet complete)."""
        manifest = read_manifest(root) if manifest is None else manifest
        per_level = [load_level_features(level_dir(root, i) / "features.npz", split)
                     for i in range(len(manifest["levels"]))]
        shapes = {lf.features.shape for lf in per_level}
        if len(shapes) != 1:
            raise LadderError(f"{root}: cached features of split '{split}' differ in shape "
                              f"across levels: {sorted(shapes)}")
        return cls(
            features=np.stack([lf.features for lf in per_level]),
            scales=np.array([lf.scale for lf in per_level], np.float32),
            zero_points=np.array([lf.zero_point for lf in per_level], np.int32),
            labels=load_labels(root, split),
            classifier=NumpyClassifier.load(os.path.join(root, "classifier.npz")),
            mode=manifest["pool_mode"],
        )

    @property
    def n_levels(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.features.shape[2])

    def _check_levels(self, levels: Sequence[int]) -> np.ndarray:
        lv = np.asarray(levels, dtype=np.int64)
        if lv.shape != (self.n_views,):
            raise LadderError(f"levels: expected one level index per view ({self.n_views}), "
                              f"got {len(lv)}")
        bad = (lv < 0) | (lv >= self.n_levels)
        if bad.any():
            v = int(np.flatnonzero(bad)[0])
            raise LadderError(f"levels: view {v} has level index {int(lv[v])}; the ladder has "
                              f"indices 0..{self.n_levels - 1}")
        return lv

    def gather(self, levels: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None,
                                                      np.ndarray | None]:
        """The (N, V, D) features a fleet at these levels would send, with per-view scale and
        zero point (None for float features)."""
        lv = self._check_levels(levels)
        views = np.arange(self.n_views)
        feats = np.ascontiguousarray(self.features[lv, :, views, :].transpose(1, 0, 2))
        if self.scales is None or self.zero_points is None:
            return feats, None, None
        return feats, self.scales[lv], self.zero_points[lv]

    def predictions(
        self,
        levels: Sequence[int],
        live: np.ndarray | Sequence[int] | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Predicted class per frame (-1 where no view is usable)."""
        feats, scale, zp = self.gather(levels)
        mask = np.ones(self.n_views, bool) if live is None else np.asarray(live)
        pooled, empty = _core.pool(feats, mask, weights, mode=self.mode, scale=scale,
                                   zero_point=zp)
        pred = self.classifier.predict(pooled)
        pred[empty] = -1
        return pred

    def accuracy(self, levels: Sequence[int], live=None, weights=None) -> float:
        return float(np.mean(self.predictions(levels, live, weights) == self.labels))

    def accuracy_over_masks(
        self, levels: Sequence[int], masks: np.ndarray, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """Accuracy for each live mask in `masks` (K, V): the level gather is done once, the
        C++ pooling runs per mask and the classifier is batched over masks (what the planner
        calls, thousands of times). `weights`: None, (V,) for every mask, or (K, V) one row per
        mask."""
        feats, scale, zp = self.gather(levels)
        live = np.asarray(masks, bool)
        K, (N, _, D) = len(live), feats.shape
        out = np.empty(K)
        w = None if weights is None else np.asarray(weights, np.float32)
        for start in range(0, K, MAX_BATCH_MASKS):
            stop = min(K, start + MAX_BATCH_MASKS)
            pooled = np.empty((stop - start, N, D), np.float32)
            empty = np.empty((stop - start, N), bool)
            for i in range(start, stop):
                wi = None if w is None else (w if w.ndim == 1 else w[i])
                pooled[i - start], empty[i - start] = _core.pool(
                    feats, live[i], wi, mode=self.mode, scale=scale, zero_point=zp)
            pred = self.classifier.predict(pooled.reshape(-1, D)).reshape(stop - start, N)
            pred[empty] = -1
            out[start:stop] = (pred == self.labels[None, :]).mean(axis=1)
        return out

    def accuracy_vs_failed(
        self, levels: Sequence[int], *, max_subsets: int = 1000, seed: int = 0
    ) -> list[dict[str, float | int | bool]]:
        """Accuracy with k = 0 … V−1 failed views: mean and worst over failure sets, exact where
        there are at most `max_subsets` sets of size k, otherwise over a seeded sample."""
        V = self.n_views
        rng = np.random.default_rng(seed)
        rows = []
        for k in range(V):
            exact = math.comb(V, k) <= max_subsets
            dead_sets = failure_subsets(V, k, max_subsets, rng)
            acc = self.accuracy_over_masks(levels, live_masks([mask_of(d) for d in dead_sets], V))
            rows.append({"k": k, "mean": float(acc.mean()), "worst": float(acc.min()),
                         "subsets": len(dead_sets), "exact": exact})
        return rows
