"""System accuracy of a configuration, measured from the ladder's cached features.

A configuration is a ladder level per view, a live mask, and (for weighted pooling) weights.
Each view's features are the cached outputs of its level's TFLite branch as that view's device
computes them (its feature variant: int8 in LiteRT by default, int8 in TFLite Micro for a
microcontroller, float16 / dynamic / float32 for a board running a float format); they are
pooled by the C++ core (the same code the runtime aggregator runs) and classified by the frozen
head's classifier. Pooling follows `slimedge.export.agreement.pool_views`, the aggregator's:
when every live view is int8 the core pools int8 with per-view scale and zero point; when a
float view is live, every int8 view is dequantized by the core and the views are pooled as
float. A frame whose every view is dead has no prediction and counts as wrong.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from slimedge import _core
from slimedge.failure_sets import failure_subsets, live_masks, mask_of
from slimedge.ladder.classifier import NumpyClassifier
from slimedge.ladder.store import (
    INT8,
    TFLM,
    LadderError,
    features_file,
    ladder_variants,
    level_dir,
    load_labels,
    load_level_features,
    read_manifest,
)

MAX_BATCH_MASKS = 32  # live masks per classifier call (bounds memory at large N)


def dequantize(features: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 (N, D) -> float32 real values, dequantized by the core as the aggregator's
    `ViewFeatures.dequantized` does (pooling one live view is the identity)."""
    pooled, _ = _core.pool(np.ascontiguousarray(features[:, None, :]), np.ones(1, bool),
                           mode="max", scale=np.array([scale], np.float32),
                           zero_point=np.array([zero_point], np.int32))
    return np.asarray(pooled, np.float32)


@dataclass
class Evaluator:
    features: np.ndarray  # int8 (L, N, V, D): every level's features for every view
    scales: np.ndarray | None  # float32 (L,); None for float32 features
    zero_points: np.ndarray | None  # int32 (L,); None for float32 features
    labels: np.ndarray  # (N,)
    classifier: NumpyClassifier
    mode: str = "max"
    # Per view, the feature variant its device sends (None: int8 in LiteRT for every view).
    variants: tuple[str, ...] | None = None
    # float32 (L, N, V, D), present when some view sends float features: those views' float
    # features, every int8 view's dequantized by the core (the aggregator's mixed pooling).
    mixed: np.ndarray | None = field(default=None, repr=False)
    float_views: np.ndarray | None = None  # bool (V,): views whose variant is a float one
    # Views whose variant this ladder does not cache, read as int8 instead (older ladders):
    # view -> one line, said wherever the evaluator's figures are reported.
    fallback: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_ladder(cls, root: str | os.PathLike, split: str = "val", *,
                    manifest: dict | None = None,
                    variants: Sequence[str] | None = None) -> Evaluator:
        """`manifest`: already read (or, while a ladder is being built, not yet complete).
        `variants`: the feature variant per view (`slimedge.ladder.store.feature_variant`);
        None reads int8 (LiteRT) features for every view. A variant that a ladder built
        before variants were cached lacks is read as int8 and named in `fallback`."""
        manifest = read_manifest(root) if manifest is None else manifest
        L, V = len(manifest["levels"]), int(manifest["views"])
        per_level = [load_level_features(level_dir(root, i) / "features.npz", split)
                     for i in range(L)]
        shapes = {lf.features.shape for lf in per_level}
        if len(shapes) != 1:
            raise LadderError(f"{root}: cached features of split '{split}' differ in shape "
                              f"across levels: {sorted(shapes)}")
        features = np.stack([lf.features for lf in per_level])
        scales = np.array([lf.scale for lf in per_level], np.float32)
        zps = np.array([lf.zero_point for lf in per_level], np.int32)
        ev = cls(features=features, scales=scales, zero_points=zps,
                 labels=load_labels(root, split),
                 classifier=NumpyClassifier.load(os.path.join(root, "classifier.npz")),
                 mode=manifest["pool_mode"])
        if variants is None:
            return ev
        variants = tuple(str(x) for x in variants)
        if len(variants) != V:
            raise LadderError(f"variants: expected one feature variant per view ({V}), "
                              f"got {len(variants)}")
        cached = ladder_variants(manifest)
        fallback: dict[int, str] = {}
        used: list[str] = []
        for v, variant in enumerate(variants):
            features_file(variant)  # a known variant, or a clear error
            if variant in cached:
                used.append(variant)
                continue
            if "feature_variants" in manifest:
                raise LadderError(f"{root}: view {v}: the ladder does not cache "
                                  f"{variant!r} features (it caches {', '.join(cached)})")
            fallback[v] = (f"view {v}: {variant} features are not cached by this ladder "
                           "(built before feature variants were): int8 (LiteRT) features "
                           "used instead")
            used.append(INT8)
        ev.variants, ev.fallback = tuple(used), fallback
        ev.float_views = np.array([u not in (INT8, TFLM) for u in used], bool)
        load = {u: [load_level_features(level_dir(root, i) / features_file(u), split)
                    for i in range(L)] for u in set(used) - {INT8}}
        for v, u in enumerate(used):
            if u == TFLM:
                for i, lf in enumerate(load[u]):
                    if (np.float32(lf.scale), lf.zero_point) != (scales[i], zps[i]):
                        raise LadderError(f"{level_dir(root, i)}: {features_file(u)} has "
                                          "another output quantization than features.npz")
                ev.features[:, :, v] = np.stack([lf.features[:, v] for lf in load[u]])
        if ev.float_views.any():
            mixed = np.empty(features.shape, np.float32)
            for v, u in enumerate(used):
                for i in range(L):
                    mixed[i, :, v] = (load[u][i].features[:, v] if ev.float_views[v] else
                                      dequantize(ev.features[i, :, v], scales[i], zps[i]))
            ev.mixed = mixed
        return ev

    def uses_float(self, live: np.ndarray) -> bool:
        """Whether a live mask is pooled as float (a float view is live in it)."""
        return self.float_views is not None and bool(np.any(self.float_views & live))

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

    def gather(self, levels: Sequence[int], live: np.ndarray | Sequence[int] | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The (N, V, D) features a fleet at these levels would send, with per-view scale and
        zero point (None for float features). With a float view live in `live` (default: every
        view), every view comes as float32 (int8 views dequantized), as the aggregator pools
        such a frame."""
        lv = self._check_levels(levels)
        views = np.arange(self.n_views)
        mask = np.ones(self.n_views, bool) if live is None else np.asarray(live, bool)
        if self.mixed is not None and self.uses_float(mask):
            return np.ascontiguousarray(self.mixed[lv, :, views, :].transpose(1, 0, 2)), None, None
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
        mask = np.ones(self.n_views, bool) if live is None else np.asarray(live)
        feats, scale, zp = self.gather(levels, mask)
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
        """Accuracy for each live mask in `masks` (K, V): the level gather is done once (per
        pooling kind: int8, and float when a float view is live), the C++ pooling runs per mask
        and the classifier is batched over masks (what the planner calls, thousands of times).
        `weights`: None, (V,) for every mask, or (K, V) one row per mask."""
        live = np.asarray(masks, bool)
        quantized = self.gather(levels, np.zeros(self.n_views, bool))
        floats = self.gather(levels) if self.mixed is not None else quantized
        feats = quantized[0]
        K, (N, _, D) = len(live), feats.shape
        out = np.empty(K)
        w = None if weights is None else np.asarray(weights, np.float32)
        for start in range(0, K, MAX_BATCH_MASKS):
            stop = min(K, start + MAX_BATCH_MASKS)
            pooled = np.empty((stop - start, N, D), np.float32)
            empty = np.empty((stop - start, N), bool)
            for i in range(start, stop):
                wi = None if w is None else (w if w.ndim == 1 else w[i])
                feats, scale, zp = floats if self.uses_float(live[i]) else quantized
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
