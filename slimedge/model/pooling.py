"""Masked view pooling as a Keras layer, with exactly the semantics of the C++ core.

The C++ core (`slimedge._core.pool`) is what the planner's evaluator and the runtime aggregator
run; this layer is the same computation in Keras so the head can be trained end to end through
it. Semantics (cpp/src/pool.cpp):

- ``max``: element-wise max over the live views (not clipped at 0);
- ``mean``: mean over the live views;
- ``weighted``: ``sum_v w_v x_v / sum_v w_v`` over the live views (the live weights are
  renormalized); a view with weight 0 is skipped;
- a frame with no usable view (no live view, or live weights summing to 0) pools to zeros.

Dead views never reach the result: their features are replaced before any arithmetic, so an
``inf``/``nan`` in a dead view cannot leak, and gradients stay finite for all-dead frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from slimedge.errors import SlimEdgeError

POOL_MODES: tuple[str, ...] = ("max", "mean", "weighted")


class ModelConfigError(SlimEdgeError, ValueError):
    """A model or training setting that cannot be used (names the field and the value)."""


def check_pool_mode(mode: str, where: str = "mode") -> str:
    if mode not in POOL_MODES:
        raise ModelConfigError(
            f"{where}: unknown pooling mode {mode!r} (expected one of {list(POOL_MODES)})"
        )
    return mode


def check_view_weights(weights: Sequence[float] | None, where: str = "view_weights"
                       ) -> tuple[float, ...] | None:
    """Per-view weights must be finite and >= 0, as the C++ core requires."""
    if weights is None:
        return None
    values = tuple(float(w) for w in np.asarray(weights, dtype=np.float64).reshape(-1))
    if not values:
        raise ModelConfigError(f"{where}: expected one weight per view, got none")
    for v, w in enumerate(values):
        if not math.isfinite(w) or w < 0:
            raise ModelConfigError(f"{where}: entry {v} is {w}; expected a finite value >= 0")
    return values


@keras.saving.register_keras_serializable(package="slimedge")
class ViewPooling(keras.layers.Layer):
    """Pool per-view features ``(B, V, D)`` over the live views into ``(B, D)``.

    Call as ``layer(features, mask)`` or ``layer(features, mask, weights)``:
    ``mask`` is ``(B, V)`` or ``(V,)``, nonzero = live; ``weights`` (weighted mode only) is
    ``(B, V)`` or ``(V,)``, finite and >= 0. Without ``weights`` the weighted mode uses the
    layer's fixed ``view_weights`` (uniform if none were given, i.e. the live mean).
    """

    def __init__(self, mode: str = "max", view_weights: Sequence[float] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = check_pool_mode(mode)
        self.view_weights = check_view_weights(view_weights)
        if self.view_weights is not None and self.mode != "weighted":
            raise ModelConfigError(
                f"view_weights: only pooling mode 'weighted' takes view weights (mode is "
                f"{self.mode!r})"
            )

    def call(self, features: Any, mask: Any, weights: Any = None) -> Any:
        x = ops.cast(features, self.compute_dtype)
        live = ops.cast(mask, "bool")  # nonzero = live, as in the core
        if self.mode == "max":
            return self._max(x, live)
        if self.mode == "mean":
            w = ops.cast(live, x.dtype)
        else:
            w = self._weights(x, weights)
            w = ops.where(live, w, ops.zeros_like(w))
        return self._weighted_mean(x, w)

    def _weights(self, x: Any, weights: Any) -> Any:
        if weights is not None:
            return ops.cast(weights, x.dtype)
        if self.view_weights is not None:
            views = x.shape[-2]
            if views is not None and views != len(self.view_weights):
                raise ModelConfigError(
                    f"view_weights: {len(self.view_weights)} weights for {views} views"
                )
            return ops.convert_to_tensor(np.asarray(self.view_weights, np.float32), x.dtype)
        return ops.ones_like(x[..., 0])

    @staticmethod
    def _max(x: Any, live: Any) -> Any:
        neg_inf = ops.full_like(x, -np.inf)
        masked = ops.where(ops.expand_dims(live, -1), x, neg_inf)
        pooled = ops.max(masked, axis=-2)
        any_live = ops.expand_dims(ops.any(live, axis=-1), -1)
        return ops.where(any_live, pooled, ops.zeros_like(pooled))

    @staticmethod
    def _weighted_mean(x: Any, w: Any) -> Any:
        # Views with weight 0 are skipped (not multiplied by 0), as in the core.
        used = ops.expand_dims(w > 0, -1)
        contrib = ops.where(used, x, ops.zeros_like(x)) * ops.expand_dims(w, -1)
        total = ops.sum(w, axis=-1, keepdims=True)
        usable = total > 0
        safe_total = ops.where(usable, total, ops.ones_like(total))
        pooled = ops.sum(contrib, axis=-2) / safe_total
        return ops.where(usable, pooled, ops.zeros_like(pooled))

    def compute_output_shape(self, features_shape: Any, mask_shape: Any = None,
                             weights_shape: Any = None) -> tuple:
        return tuple(features_shape[:-2]) + (features_shape[-1],)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(mode=self.mode,
                      view_weights=None if self.view_weights is None else list(self.view_weights))
        return config
