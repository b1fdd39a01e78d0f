"""The reference the evaluator must equal: a ladder run the way the fleet runs it.

Each view's TFLite branch at its level, in the file of the feature variant its device sends,
runs on that view's images as a device would (LiteRT; TFLite Micro for "int8-tflm"), the
features are pooled as the aggregator pools them (`slimedge.export.agreement.pool_views`:
int8 by the core with per-view scale and zero point, or as float once a float view is live)
and the pooled vectors are classified by the head's Keras classifier. Slow (it runs the
branches); used to check the evaluator's cached-feature predictions frame by frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from slimedge.ladder.store import INT8, TFLM, level_dir, read_manifest


class DevicePipeline:
    """Predictions of a ladder's device pipeline on ``images (N, V, H, W, C)`` uint8;
    `variants`: the feature variant per view (None: int8 in LiteRT everywhere)."""

    def __init__(self, ladder: str | os.PathLike, images: np.ndarray,
                 variants: Sequence[str] | None = None) -> None:
        from slimedge.model.head import head_classifier, load_head
        from slimedge.runtime.branch import BranchRunner

        self.manifest = read_manifest(ladder)
        self.ladder = ladder
        self.images = images
        self.variants = list(variants) if variants is not None else [INT8] * images.shape[1]
        self.head = load_head(os.path.join(ladder, "head.keras"))
        self.classifier = head_classifier(self.head)
        self.runners = [BranchRunner(level_dir(ladder, i) / "branch_int8.tflite")
                        for i in range(len(self.manifest["levels"]))]
        self._features: dict[tuple[int, int], object] = {}  # (level, view) -> ViewFeatures

    def _run(self, level: int, view: int) -> object:
        from slimedge.export.agreement import ViewFeatures
        from slimedge.ladder.build import variant_file
        from slimedge.runtime.branch import BranchRunner

        variant = self.variants[view]
        imgs = self.images[:, view]
        if variant == INT8:
            out = self.runners[level].run(imgs)
            return ViewFeatures(out.features, out.scale, out.zero_point)
        path = variant_file(level_dir(self.ladder, level), variant)
        if variant == TFLM:
            from slimedge.profile.tflm import measure_arena
            from slimedge.runtime.mcu import TflmRunner

            runner = TflmRunner(path, 2 * measure_arena(path))
            scale, zp = runner.output_quantization
            return ViewFeatures(np.stack([runner.run(im).features for im in imgs]), scale, zp)
        return ViewFeatures(BranchRunner(path).run(imgs).features)

    def features(self, level: int, view: int) -> np.ndarray:
        """Features of every frame's ``view`` at ``level`` (run once, then kept)."""
        return self.view_features(level, view).features

    def view_features(self, level: int, view: int) -> object:
        key = (int(level), int(view))
        if key not in self._features:
            self._features[key] = self._run(*key)
        return self._features[key]

    def predictions(self, levels: Sequence[int], live: np.ndarray) -> np.ndarray:
        """Predicted class per frame (-1 where no view is live), as the evaluator reports."""
        from slimedge.export.agreement import pool_views

        V = self.images.shape[1]
        live = np.asarray(live, bool)
        views = [self.view_features(levels[v], v) if live[v] else None for v in range(V)]
        pooled, empty = pool_views(views, self.manifest["pool_mode"])
        pred = np.argmax(self.classifier.predict(pooled, verbose=0), axis=1)
        pred[empty] = -1
        return pred
