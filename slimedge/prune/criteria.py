"""Channel importance criteria behind one signature, chosen by name.

    criterion(model, groups, *, calibration=None, loss_fn=None) -> {group id: scores}

``groups`` are ChannelGroups of ``analyze(model)``; ``scores`` has one non-negative float per
channel of the group, aggregated over the group's members (higher = more important). Pruning
keeps the highest scores.

- ``l1``: L1 norm of each producer filter (kernel only), summed over the group's producers.
- ``bn_scale``: |gamma| of the group's BatchNormalization layers, summed (network slimming).
- ``taylor``: first-order Taylor estimate of the loss change when a channel is zeroed where it
  is consumed: per sample |sum over consumed tensors and positions of a * dL/da|, averaged
  over the calibration samples (Molchanov et al. 2017/2019).

``calibration`` (taylor) is an iterable of batches, each ``x`` or ``(x, y_true)``;
``loss_fn(y_true, y_pred) -> scalar`` is the caller's loss (``y_true`` is None for ``x``-only
batches), e.g. distillation to the unpruned model's features: batches ``(x, teacher(x))`` and
a mean squared error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from slimedge.prune import PruneError
from slimedge.prune.graph import ChannelGroup, analyze

Criterion = Callable[..., dict[str, np.ndarray]]
LossFn = Callable[[Any, Any], Any]

_CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Decorator: register a criterion under ``name``."""

    def wrap(fn: Criterion) -> Criterion:
        if name in _CRITERIA:
            raise PruneError(f"criterion {name!r} is already registered")
        _CRITERIA[name] = fn
        return fn

    return wrap


def list_criteria() -> list[str]:
    """Registered criterion names, sorted."""
    return sorted(_CRITERIA)


def get_criterion(criterion: str | Criterion) -> Criterion:
    """The criterion registered as ``criterion`` (a callable is returned as is)."""
    if callable(criterion):
        return criterion
    if criterion not in _CRITERIA:
        raise PruneError(f"unknown pruning criterion {criterion!r}; "
                         f"known: {', '.join(list_criteria())}")
    return _CRITERIA[criterion]


def calibration_batches(x: np.ndarray, y: np.ndarray | None = None, *,
                        batch_size: int = 32) -> list[Any]:
    """Split arrays into the batches a criterion's ``calibration`` takes."""
    if y is not None and len(y) != len(x):
        raise PruneError(f"calibration x has {len(x)} samples but y has {len(y)}")
    starts = range(0, len(x), batch_size)
    if y is None:
        return [x[s:s + batch_size] for s in starts]
    return [(x[s:s + batch_size], y[s:s + batch_size]) for s in starts]


def _kernel(model: keras.Model, name: str) -> np.ndarray:
    return np.asarray(model.get_layer(name).kernel.numpy())


def _producers(group: ChannelGroup) -> tuple[str, ...]:
    if not group.producers:
        raise PruneError(f"channel group {group.id!r} has no producer layer to score")
    return group.producers


@register_criterion("l1")
def l1(model: keras.Model, groups: Sequence[ChannelGroup], *, calibration: Any = None,
       loss_fn: LossFn | None = None) -> dict[str, np.ndarray]:
    """Sum over producers of each output filter's kernel L1 norm."""
    scores = {}
    for group in groups:
        total = np.zeros(group.channels, dtype=np.float64)
        for name in _producers(group):
            k = _kernel(model, name)  # (..., in, out) for Conv2D and Dense alike
            total += np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0)
        scores[group.id] = total
    return scores


@register_criterion("bn_scale")
def bn_scale(model: keras.Model, groups: Sequence[ChannelGroup], *, calibration: Any = None,
             loss_fn: LossFn | None = None) -> dict[str, np.ndarray]:
    """Sum of |gamma| over the group's BatchNormalization layers."""
    scores = {}
    for group in groups:
        total = np.zeros(group.channels, dtype=np.float64)
        found = False
        for member in group.followers:
            layer = model.get_layer(member.layer)
            if type(layer) is not keras.layers.BatchNormalization:
                continue
            if not layer.scale:
                raise PruneError(f"layer {layer.name!r} has no gamma (scale=False); "
                                 "bn_scale cannot score it")
            gamma = np.abs(np.asarray(layer.gamma.numpy(), dtype=np.float64))
            total += gamma.reshape(member.expansion, group.channels).sum(axis=0)
            found = True
        if not found:
            raise PruneError(f"channel group {group.id!r} has no BatchNormalization layer; "
                             "bn_scale cannot score it")
        scores[group.id] = total
    return scores


def _batches(calibration: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(calibration, np.ndarray):
        calibration = calibration_batches(calibration)
    for batch in calibration:
        if isinstance(batch, tuple):
            if len(batch) != 2:
                raise PruneError("a calibration batch must be x or (x, y_true)")
            yield batch[0], batch[1]
        else:
            yield batch, None


@register_criterion("taylor")
def taylor(model: keras.Model, groups: Sequence[ChannelGroup], *,
           calibration: Iterable[Any] | np.ndarray | None = None,
           loss_fn: LossFn | None = None) -> dict[str, np.ndarray]:
    """|a * dL/da| at each group's consumed tensors, per sample, averaged over calibration."""
    import tensorflow as tf  # the gradient tape; Keras runs on the TensorFlow backend here

    if calibration is None or loss_fn is None:
        raise PruneError("the taylor criterion needs calibration batches and a loss_fn")
    if len(model.inputs) != 1:
        raise PruneError(f"the taylor criterion needs a single-input model; {model.name!r} "
                         f"has {len(model.inputs)} inputs")
    consumed = analyze(model).consumed
    taps: list[tuple[str, int]] = []  # (group id, channels) for each tapped tensor
    tensors = []
    for group in groups:
        found = consumed.get(group.id)
        if not found:
            raise PruneError(f"channel group {group.id!r} has no consumed tensor to score")
        for t in found:
            taps.append((group.id, group.channels))
            tensors.append(t)
    outputs = model.outputs[0] if len(model.outputs) == 1 else list(model.outputs)
    probe = keras.Model(model.inputs[0], [outputs, *tensors])

    sums = {g.id: np.zeros(g.channels, dtype=np.float64) for g in groups}
    samples = 0
    for x, y_true in _batches(calibration):
        with tf.GradientTape() as tape:
            results = probe(x, training=False)
            loss = loss_fn(y_true, results[0])
        acts = results[1:]
        grads = tape.gradient(loss, acts)
        per_sample: dict[str, Any] = {}
        for (gid, channels), a, g in zip(taps, acts, grads, strict=True):
            if g is None:  # the loss does not depend on this tensor
                continue
            # Channels are the fastest axis (also after Flatten): fold positions, then sum.
            contrib = tf.reduce_sum(tf.reshape(a * g, (tf.shape(a)[0], -1, channels)), axis=1)
            per_sample[gid] = contrib if gid not in per_sample else per_sample[gid] + contrib
        for gid, value in per_sample.items():
            sums[gid] += np.abs(np.asarray(value, dtype=np.float64)).sum(axis=0)
        samples += int(np.shape(x)[0])
    if samples == 0:
        raise PruneError("the taylor criterion got an empty calibration set")
    return {gid: total / samples for gid, total in sums.items()}


def score(criterion: str | Criterion, model: keras.Model,
          groups: Sequence[ChannelGroup] | None = None, *, calibration: Any = None,
          loss_fn: LossFn | None = None) -> dict[str, np.ndarray]:
    """Scores of ``groups`` (default: every prunable group) by ``criterion``, checked for one
    finite value per channel."""
    fn = get_criterion(criterion)
    if groups is None:
        groups = analyze(model).prunable()
    result = fn(model, groups, calibration=calibration, loss_fn=loss_fn)
    for group in groups:
        values = result.get(group.id)
        if values is None or np.shape(values) != (group.channels,):
            raise PruneError(f"criterion {criterion!r} gave no {group.channels} scores for "
                             f"group {group.id!r}")
        if not np.all(np.isfinite(values)):
            raise PruneError(f"criterion {criterion!r} gave non-finite scores for group "
                             f"{group.id!r}")
    return result
