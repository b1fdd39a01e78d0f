"""The reference the evaluator must equal: a ladder run the way the fleet runs it.

Each view's int8 TFLite branch at its level runs in LiteRT on that view's images (as a device
would), the int8 features are pooled by the C++ core (as the aggregator pools them) and the
pooled vectors are classified by the head's Keras classifier. Slow (it runs the branches);
used to check the evaluator's cached-feature predictions frame by frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from slimedge import _core
from slimedge.ladder.store import level_dir, read_manifest


class DevicePipeline:
    """Predictions of a ladder's device pipeline on ``images (N, V, H, W, C)`` uint8."""

    def __init__(self, ladder: str | os.PathLike, images: np.ndarray) -> None:
        from slimedge.model.head import head_classifier, load_head
        from slimedge.runtime.branch import BranchRunner

        self.manifest = read_manifest(ladder)
        self.images = images
        self.head = load_head(os.path.join(ladder, "head.keras"))
        self.classifier = head_classifier(self.head)
        self.runners = [BranchRunner(level_dir(ladder, i) / "branch_int8.tflite")
                        for i in range(len(self.manifest["levels"]))]
        self._features: dict[tuple[int, int], np.ndarray] = {}  # (level, view) -> int8

    def features(self, level: int, view: int) -> np.ndarray:
        """int8 features of every frame's ``view`` at ``level`` (run once, then kept)."""
        key = (int(level), int(view))
        if key not in self._features:
            self._features[key] = self.runners[key[0]].run(self.images[:, key[1]]).features
        return self._features[key]

    def predictions(self, levels: Sequence[int], live: np.ndarray) -> np.ndarray:
        """Predicted class per frame (-1 where no view is live), as the evaluator reports."""
        V = self.images.shape[1]
        feats = np.stack([self.features(levels[v], v) for v in range(V)], 1)
        quant = [self.runners[int(lv)].output_quantization for lv in levels]
        pooled, empty = _core.pool(feats, np.asarray(live), mode=self.manifest["pool_mode"],
                                   scale=np.array([q[0] for q in quant], np.float32),
                                   zero_point=np.array([q[1] for q in quant], np.int32))
        pred = np.argmax(self.classifier.predict(pooled, verbose=0), axis=1)
        pred[empty] = -1
        return pred
