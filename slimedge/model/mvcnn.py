"""The whole MVCNN for training, and its evaluation as the fleet computes it.

Training model: images ``(B, V, H, W, 1)`` float32 in [0, 1] + live mask ``(B, V)`` -> logits.
Every view goes through the one shared ``branch`` (folded into the batch: ``(B·V, H, W, 1)``),
the features are unfolded to ``(B, V, D)`` and the ``head`` pools the live ones and classifies.

Evaluation runs the branch once per view and then pools with the C++ core and classifies with
the head's classifier, which is exactly what the planner's evaluator and the aggregator do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from slimedge.data.container import Dataset
from slimedge.model.head import core_logits, head_info
from slimedge.model.pooling import ModelConfigError


def to_branch_input(images: Any) -> np.ndarray:
    """uint8 pixels -> the branch's input: float32 in [0, 1] (see `backbones`' input contract)."""
    return np.asarray(images, dtype=np.float32) * np.float32(1.0 / 255.0)


@keras.saving.register_keras_serializable(package="slimedge")
class FoldViews(keras.layers.Layer):
    """``(B, V, ...)`` -> ``(B·V, ...)``: every view becomes one branch input."""

    def call(self, x: Any) -> Any:
        return ops.reshape(x, (-1,) + tuple(x.shape[2:]))

    def compute_output_shape(self, shape: Any) -> tuple:
        return (None,) + tuple(shape[2:])


@keras.saving.register_keras_serializable(package="slimedge")
class UnfoldViews(keras.layers.Layer):
    """``(B·V, D)`` -> ``(B, V, D)``."""

    def __init__(self, views: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.views = int(views)

    def call(self, x: Any) -> Any:
        return ops.reshape(x, (-1, self.views) + tuple(x.shape[1:]))

    def compute_output_shape(self, shape: Any) -> tuple:
        return (None, self.views) + tuple(shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "views": self.views}


def build_mvcnn(branch: keras.Model, head: keras.Model, views: int, *,
                frozen_head: bool = False, with_features: bool = False) -> keras.Model:
    """Training model ``[images (V, H, W, C), mask (V,)] -> logits``; shares the weights of
    ``branch`` and ``head`` (training it trains them).

    ``frozen_head``: the head always runs in inference mode (no dropout, no updates), as when
    fine-tuning a pruned branch against it. ``with_features``: also output the ``(B, V, D)``
    branch features."""
    info = head_info(head)
    feature_dim = int(branch.output_shape[-1])
    if info["views"] != views:
        raise ModelConfigError(f"views: head '{head.name}' takes {info['views']} views, "
                               f"asked for {views}")
    if info["feature_dim"] != feature_dim:
        raise ModelConfigError(
            f"feature_dim: branch '{branch.name}' outputs {feature_dim} features, head "
            f"'{head.name}' takes {info['feature_dim']}"
        )
    image_shape = tuple(branch.input_shape[1:])
    images = keras.Input((views,) + image_shape, name="images")
    mask = keras.Input((views,), name="mask")
    per_view = FoldViews(name="fold_views")(images)
    features = UnfoldViews(views, name="unfold_views")(branch(per_view))
    if frozen_head:
        head.trainable = False
        logits = head([features, mask], training=False)
    else:
        logits = head([features, mask])
    outputs = [logits, features] if with_features else logits
    return keras.Model([images, mask], outputs, name="mvcnn")


def branch_features(branch: keras.Model, images: np.ndarray, *, batch_size: int = 512,
                    scaled: bool = False) -> np.ndarray:
    """Features ``(N, V, D)`` float32 of uint8 images ``(N, V, H, W, C)``, inference mode.
    ``scaled=True``: the images are already the branch's float input (e.g. augmented)."""
    images = np.asarray(images)
    n, v = images.shape[:2]
    flat = images.reshape((n * v,) + images.shape[2:])
    out = np.empty((n * v, int(branch.output_shape[-1])), np.float32)
    for start in range(0, n * v, batch_size):
        part = flat[start : start + batch_size]
        chunk = np.asarray(part, np.float32) if scaled else to_branch_input(part)
        out[start : start + len(chunk)] = np.asarray(branch(chunk, training=False))
    return out.reshape(n, v, -1)


def dead_to_live(dead_views: Any, n: int, views: int) -> np.ndarray:
    """Live mask ``(n, V)`` from ``None`` (all live), view indices dead in every frame, or a
    bool ``(n, V)`` / ``(V,)`` array of dead views."""
    if dead_views is None:
        return np.ones((n, views), bool)
    arr = np.asarray(dead_views)
    if arr.dtype == bool:
        if arr.shape not in ((views,), (n, views)):
            raise ModelConfigError(f"dead_views: bool mask of shape {arr.shape}, expected "
                                   f"({views},) or ({n}, {views})")
        return np.broadcast_to(~arr, (n, views)).copy()
    idx = arr.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= views):
        raise ModelConfigError(f"dead_views: view indices must lie in 0..{views - 1}, got "
                               f"{idx.tolist()}")
    live = np.ones((n, views), bool)
    live[:, idx] = False
    return live


def accuracy_from_features(head: keras.Model, features: np.ndarray, labels: np.ndarray,
                           live: np.ndarray | None = None, *, weights: np.ndarray | None = None,
                           scale: np.ndarray | None = None,
                           zero_point: np.ndarray | None = None) -> float:
    """Accuracy of per-view features ``(N, V, D)`` (float32, or int8 with per-view
    ``scale``/``zero_point``) pooled by the C++ core and classified by the head."""
    n, v = features.shape[:2]
    live = np.ones((n, v), bool) if live is None else live
    logits = core_logits(head, features, live, weights, scale=scale, zero_point=zero_point)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def evaluate(branch: keras.Model, head: keras.Model, dataset: Dataset, split: str, *,
             dead_views: Any = None) -> float:
    """Accuracy on ``split`` with ``dead_views`` failed (see `dead_to_live`)."""
    images, labels = dataset.subset(split)
    if len(labels) == 0:
        raise ModelConfigError(f"split: '{split}' holds no objects")
    features = branch_features(branch, images)
    live = dead_to_live(dead_views, len(labels), dataset.n_views)
    return accuracy_from_features(head, features, labels, live)


def accuracy_vs_failed_views_from_features(
        head: keras.Model, features: np.ndarray, labels: np.ndarray, *,
        ks: Sequence[int] | None = None, max_subsets: int = 32, seed: int = 0
) -> dict[int, float]:
    """k failed views -> accuracy averaged over failure sets of size k (k = 0 … V-1), measured
    by the planner's evaluator (C++ pooling + the head's classifier) on float features."""
    from slimedge.ladder.classifier import NumpyClassifier
    from slimedge.ladder.evaluator import Evaluator
    from slimedge.model.head import head_classifier

    v = features.shape[1]
    ks = list(range(v)) if ks is None else list(ks)
    for k in ks:
        if not 0 <= k < v:
            raise ModelConfigError(f"ks: k must lie in 0..{v - 1}, got {k}")
    ev = Evaluator(np.asarray(features, np.float32)[None], None, None, np.asarray(labels),
                   NumpyClassifier.from_keras(head_classifier(head)), head_info(head)["pooling"])
    rows = ev.accuracy_vs_failed([0] * v, max_subsets=max_subsets, seed=seed)
    return {int(r["k"]): r["mean"] for r in rows if r["k"] in ks}


def accuracy_vs_failed_views(branch: keras.Model, head: keras.Model, dataset: Dataset,
                             split: str, *, ks: Sequence[int] | None = None,
                             max_subsets: int = 32, seed: int = 0) -> dict[int, float]:
    """Accuracy on ``split`` with k views failed in every frame, for k = 0 … V-1: the mean over
    every failure set of size k (or ``max_subsets`` random distinct ones when there are more)."""
    images, labels = dataset.subset(split)
    if len(labels) == 0:
        raise ModelConfigError(f"split: '{split}' holds no objects")
    features = branch_features(branch, images)
    return accuracy_vs_failed_views_from_features(head, features, labels, ks=ks,
                                                  max_subsets=max_subsets, seed=seed)
