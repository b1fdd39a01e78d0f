"""Ladder levels: what "level p" means in channels, and one incremental pruning step.

Level semantics (exact):

- A level p in [0, 1) removes a fraction p of the prunable filters, **per channel group**,
  counted against the ORIGINAL (unpruned) model: group g keeps
  ``round_to_multiple(original_g * (1 - p))``, rounded to the nearest multiple of ``multiple``
  (a tie rounds up, keeping more), then at least one multiple and at most the model's current
  count (so a step never grows a group, and a group already below one multiple stays as is).
  Level 0 keeps every channel, with no rounding.
- Per group, not one global ranking: criterion scores are not comparable across layers (L1
  grows with fan-in and kernel size, Taylor with each layer's activation scale), so a global
  ranking needs a normalization that is itself a free choice and tends to empty whole layers.
  Per group, every layer keeps working, and a level is one architecture: its channel counts,
  params and MACs depend only on the level, not on the trained weights, so every branch's
  level p costs the same on a device.
- ``achieved`` = 1 - sum(kept_g) / sum(original_g) over the prunable groups (filters counted,
  not params or MACs); it differs from p by the rounding.
- Incremental: ``prune_to_level`` takes the previous level's (pruned, fine-tuned) model and
  removes more channels, ranked by a criterion on that model, to reach this level's counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from slimedge.prune import PruneError
from slimedge.prune.criteria import Criterion, LossFn, score
from slimedge.prune.graph import ChannelGraph, analyze
from slimedge.prune.slicing import prune_model

DEFAULT_MULTIPLE = 4


def check_level(level: float) -> float:
    """``level`` as a float, or PruneError naming the value if it is outside [0, 1)."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise PruneError(f"pruning level {level!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise PruneError(f"pruning level {level!r} is outside [0, 1)")
    return value


def _check_multiple(multiple: int) -> int:
    if int(multiple) != multiple or multiple < 1:
        raise PruneError(f"channel multiple must be a positive integer, got {multiple!r}")
    return int(multiple)


def original_channels(model: keras.Model | ChannelGraph) -> dict[str, int]:
    """Channel count of every prunable group (store the unpruned model's with the ladder)."""
    graph = model if isinstance(model, ChannelGraph) else analyze(model)
    return graph.channels()


def target_channels(original: Mapping[str, int], level: float, *,
                    multiple: int = DEFAULT_MULTIPLE,
                    current: Mapping[str, int] | None = None) -> dict[str, int]:
    """Channels each group keeps at ``level`` (see the module docstring for the rule)."""
    level = check_level(level)
    multiple = _check_multiple(multiple)
    current = original if current is None else current
    targets = {}
    for gid, orig in original.items():
        now = int(current[gid])
        if level == 0.0:
            targets[gid] = now
            continue
        # The epsilon keeps exact halves (e.g. 12/8 = 1.5) from rounding down by float error.
        rounded = math.floor(orig * (1.0 - level) / multiple + 0.5 + 1e-9) * multiple
        targets[gid] = min(now, max(multiple, rounded))
    return targets


def achieved_level(original: Mapping[str, int], channels: Mapping[str, int]) -> float:
    """Fraction of the original prunable filters removed: 1 - sum(kept) / sum(original)."""
    total = sum(original.values())
    if total == 0:
        return 0.0
    return 1.0 - sum(int(channels[g]) for g in original) / total


@dataclass(frozen=True)
class LevelResult:
    """One ladder step: the pruned model and what it kept."""

    model: keras.Model
    level: float  # requested
    achieved: float  # realized, see achieved_level
    channels: dict[str, int]  # kept channels per prunable group
    keep: dict[str, np.ndarray]  # kept indices into the INPUT model's channels, per pruned group


def select_channels(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` highest scores, ascending; ties keep the lower index."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return np.sort(order[:count])


def prune_to_level(model: keras.Model, level: float, original: Mapping[str, int],
                   criterion: str | Criterion = "l1", *, multiple: int = DEFAULT_MULTIPLE,
                   calibration: Any = None, loss_fn: LossFn | None = None) -> LevelResult:
    """Prune ``model`` (unpruned, or an earlier level of the same branch) to ``level``.

    ``original`` is ``original_channels(unpruned model)``. Channels to remove are the lowest
    by ``criterion`` (a registered name or a callable) on ``model`` itself; ``calibration`` and
    ``loss_fn`` go to the criterion (taylor needs them).
    """
    level = check_level(level)
    graph = analyze(model)
    current = graph.channels()
    if set(current) != set(original):
        raise PruneError(
            f"model {model.name!r} has prunable groups {sorted(current)} but the original "
            f"channel counts name {sorted(original)}; is it a level of the same branch?")
    for gid, now in current.items():
        if now > int(original[gid]):
            raise PruneError(f"group {gid!r} has {now} channels, more than the original "
                             f"{original[gid]}")
    targets = target_channels(original, level, multiple=multiple, current=current)
    to_prune = [graph.groups[g] for g, n in targets.items() if n < current[g]]
    keep: dict[str, np.ndarray] = {}
    if to_prune:
        scores = score(criterion, model, to_prune, calibration=calibration, loss_fn=loss_fn)
        keep = {g.id: select_channels(scores[g.id], targets[g.id]) for g in to_prune}
        pruned = prune_model(model, keep, graph=graph)
    else:
        pruned = _copy(model)
    return LevelResult(model=pruned, level=level, achieved=achieved_level(original, targets),
                       channels=targets, keep=keep)


def _copy(model: keras.Model) -> keras.Model:
    """A fresh model with the same weights, so a result never aliases its input."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone
