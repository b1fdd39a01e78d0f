"""The MVCNN head: masked view pooling followed by a classifier on the pooled vector.

The head is one Keras model for training (``features (V, D)`` + ``mask (V,)`` -> logits), made
of two parts that are also used apart: the pooling, which at evaluation and run time is the C++
core (`slimedge._core.pool`), and the ``classifier`` sub-model (pooled ``(D,)`` -> logits),
which the evaluator feeds with vectors pooled by the core and which is exported on its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from slimedge import _core
from slimedge.model.pooling import (
    ModelConfigError,
    ViewPooling,
    check_pool_mode,
    check_view_weights,
)

POOLING_LAYER = "view_pooling"
CLASSIFIER_LAYER = "classifier"


def build_head(views: int, feature_dim: int, n_classes: int, *, mode: str = "max",
               hidden: int | None = 128, dropout: float = 0.2, seed: int = 0,
               view_weights: Sequence[float] | None = None, name: str = "head") -> keras.Model:
    """Head model: inputs ``features (V, D)`` and ``mask (V,)`` (nonzero = live) -> logits.

    ``hidden=None`` makes the classifier a single linear layer. ``view_weights`` (weighted mode
    only) fixes the per-view weights the Keras pooling uses; at run time the core gets the
    plan's weights instead.
    """
    for field, value, low in (("views", views, 1), ("feature_dim", feature_dim, 1),
                              ("n_classes", n_classes, 2)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ModelConfigError(f"{field}: expected an integer >= {low}, got {value!r}")
    if hidden is not None and (not isinstance(hidden, (int, np.integer)) or hidden < 1):
        raise ModelConfigError(f"hidden: expected None or an integer >= 1, got {hidden!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ModelConfigError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
    check_pool_mode(mode, "mode")
    weights = check_view_weights(view_weights)
    if weights is not None and len(weights) != views:
        raise ModelConfigError(f"view_weights: {len(weights)} weights for {views} views")

    classifier = build_classifier(feature_dim, n_classes, hidden=hidden, dropout=dropout,
                                  seed=seed)
    features = keras.Input((views, feature_dim), name="features")
    mask = keras.Input((views,), name="mask")
    pooled = ViewPooling(mode, view_weights=weights, name=POOLING_LAYER)(features, mask)
    logits = classifier(pooled)
    return keras.Model([features, mask], logits, name=name)


def build_classifier(feature_dim: int, n_classes: int, *, hidden: int | None = 128,
                     dropout: float = 0.2, seed: int = 0) -> keras.Model:
    """Pooled ``(D,)`` -> logits ``(n_classes,)``."""
    pooled = keras.Input((feature_dim,), name="pooled")
    x = pooled
    if hidden is not None:
        x = keras.layers.Dense(hidden, activation="relu", name="hidden",
                               kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    logits = keras.layers.Dense(n_classes, name="logits",
                                kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    return keras.Model(pooled, logits, name=CLASSIFIER_LAYER)


def _layer(head: keras.Model, name: str, kind: type) -> Any:
    try:
        layer = head.get_layer(name)
    except ValueError:
        layer = None
    if not isinstance(layer, kind):
        raise ModelConfigError(
            f"head '{head.name}': no {kind.__name__} layer named '{name}' (not a slimedge head)"
        )
    return layer


def head_classifier(head: keras.Model) -> keras.Model:
    """The classifier sub-model (pooled ``(D,)`` -> logits), sharing the head's weights."""
    return _layer(head, CLASSIFIER_LAYER, keras.Model)


def head_pooling(head: keras.Model) -> ViewPooling:
    return _layer(head, POOLING_LAYER, ViewPooling)


def head_info(head: keras.Model) -> dict[str, Any]:
    """What the evaluator and the aggregator need to pool and classify like this head."""
    pooling = head_pooling(head)
    _, views, dim = head.inputs[0].shape
    return {
        "views": int(views),
        "feature_dim": int(dim),
        "n_classes": int(head.outputs[0].shape[-1]),
        "pooling": pooling.mode,
        "view_weights": None if pooling.view_weights is None else list(pooling.view_weights),
    }


def core_pool(head: keras.Model, features: np.ndarray, mask: np.ndarray,
              weights: np.ndarray | None = None, *, scale: np.ndarray | None = None,
              zero_point: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pool with the C++ core in the head's mode: ``(pooled (B, D), empty (B,))``.

    Weighted mode without ``weights`` uses the head's ``view_weights`` (uniform if none).
    """
    pooling = head_pooling(head)
    features = np.asarray(features)
    if pooling.mode == "weighted" and weights is None:
        views = features.shape[-2]
        weights = (np.ones(views, np.float32) if pooling.view_weights is None
                   else np.asarray(pooling.view_weights, np.float32))
    return _core.pool(features, mask, weights, mode=pooling.mode, scale=scale,
                      zero_point=zero_point)


def classify_pooled(head: keras.Model, pooled: np.ndarray, *, batch_size: int = 4096
                    ) -> np.ndarray:
    """Logits ``(B, n_classes)`` of pooled vectors ``(B, D)`` through the head's classifier."""
    classifier = head_classifier(head)
    pooled = np.asarray(pooled, np.float32)
    out = [np.asarray(classifier(pooled[i : i + batch_size], training=False))
           for i in range(0, len(pooled), batch_size)]
    if not out:
        return np.zeros((0, int(classifier.outputs[0].shape[-1])), np.float32)
    return np.concatenate(out)


def core_logits(head: keras.Model, features: np.ndarray, mask: np.ndarray,
                weights: np.ndarray | None = None, *, scale: np.ndarray | None = None,
                zero_point: np.ndarray | None = None) -> np.ndarray:
    """Logits as the fleet computes them: C++ core pooling, then the Keras classifier."""
    pooled, _ = core_pool(head, features, mask, weights, scale=scale, zero_point=zero_point)
    return classify_pooled(head, np.atleast_2d(pooled))


def load_head(path: str | os.PathLike) -> keras.Model:
    """Load a saved head and check it has the pooling and classifier parts."""
    head = keras.saving.load_model(path, compile=False)
    head_pooling(head)
    head_classifier(head)
    return head
