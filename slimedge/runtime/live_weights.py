"""How the aggregator pools a frame, given which views arrived: the plan's contingency table.

The rule is the planner's (`slimedge.plan.figures.split_accuracies`, what every reported
accuracy was measured with), read from the deployment's own files:

- a failure set whose contingency row was `fitted` is pooled in the table's `rows_pool_mode`
  with that row's weights;
- any other live set is pooled in the head's mode with the head's base weights, which the core
  renormalizes over the live views (for max pooling weights do not matter).

A live set with no row at all (more failures than the table's k, or a deployment exported
without a plan) is *outside the table*: it is still pooled by renormalization, and reported as
needing a replan. The predicted accuracy of a live set is the plan's figure for it: the row's
accuracy on the test split (the frames a replay sends), or on val where test was not measured;
for the full set, the export's measured accuracy of the deployed system on the test split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimedge import _core
from slimedge.errors import SlimEdgeError
from slimedge.failure_sets import views_of

__all__ = ["LiveSetPooling", "Pooling", "PoolingError"]


class PoolingError(SlimEdgeError):
    """head.json / contingency.json that cannot drive the aggregator; names file and field."""


@dataclass(frozen=True)
class Pooling:
    dead_mask: int
    mode: str
    weights: np.ndarray | None  # (V,) float32, or None (max / mean pooling)
    source: str  # "head" (all views), "table" (a fitted row), "renormalize"
    in_table: bool  # the plan has a row for this failure set (or it is the full set)
    predicted_accuracy: float | None

    @property
    def needs_replan(self) -> bool:
        return not self.in_table


def _accuracy(row: Mapping[str, Any]) -> float | None:
    acc = row.get("accuracy")
    if isinstance(acc, Mapping):
        for split in ("test", "val"):
            if isinstance(acc.get(split), (int, float)):
                return float(acc[split])
    return None


class LiveSetPooling:
    """Dead-view bitmask -> `Pooling`, computed once per mask and cached."""

    def __init__(self, views: int, head_mode: str, base_weights: np.ndarray | None,
                 contingency: Mapping[str, Any] | None, full_accuracy: float | None,
                 source: str = "contingency.json") -> None:
        self.views = views
        self.head_mode = head_mode
        self.base_weights = (None if base_weights is None
                             else np.asarray(base_weights, np.float32))
        self.full_accuracy = full_accuracy
        self.rows: dict[int, Mapping[str, Any]] = {}
        self.rows_pool_mode = head_mode
        self._fitted: dict[int, np.ndarray] = {}
        if contingency is not None:
            self._read(contingency, source)
        self._cache: dict[int, Pooling] = {}

    def _read(self, doc: Mapping[str, Any], source: str) -> None:
        rows = doc.get("rows")
        if not isinstance(rows, list):
            raise PoolingError(f"{source}: field 'rows': expected a list")
        self.rows_pool_mode = doc.get("rows_pool_mode", self.head_mode)
        if self.rows_pool_mode not in ("max", "mean", "weighted"):
            raise PoolingError(f"{source}: field 'rows_pool_mode': {self.rows_pool_mode!r}")
        full = (1 << self.views) - 1
        for i, row in enumerate(rows):
            mask = row.get("dead_mask") if isinstance(row, Mapping) else None
            if isinstance(mask, bool) or not isinstance(mask, int) or not 0 < mask < full:
                raise PoolingError(f"{source}: rows[{i}].dead_mask: expected 1..{full - 1}, "
                                   f"got {mask!r}")
            self.rows[mask] = row
            if row.get("policy") == "fitted":
                w = np.asarray(row.get("weights"), np.float32)
                if w.shape != (self.views,) or not np.all(np.isfinite(w) & (w >= 0)):
                    raise PoolingError(f"{source}: rows[{i}].weights: expected {self.views} "
                                       "finite weights >= 0")
                if np.any(w[views_of(mask)] != 0):
                    raise PoolingError(f"{source}: rows[{i}].weights: weight on a dead view")
                self._fitted[mask] = w

    def for_dead_mask(self, dead: int) -> Pooling:
        got = self._cache.get(dead)
        if got is None:
            got = self._cache[dead] = self._resolve(dead)
        return got

    def for_live(self, live: np.ndarray) -> Pooling:
        return self.for_dead_mask(_core.dead_mask(live))

    def _resolve(self, dead: int) -> Pooling:
        if dead == 0:
            return Pooling(0, self.head_mode, self.base_weights, "head", True,
                           self.full_accuracy)
        row = self.rows.get(dead)
        if dead in self._fitted:
            return Pooling(dead, self.rows_pool_mode, self._fitted[dead], "table", True,
                           _accuracy(row or {}))
        return Pooling(dead, self.head_mode, self.base_weights, "renormalize", row is not None,
                       None if row is None else _accuracy(row))
