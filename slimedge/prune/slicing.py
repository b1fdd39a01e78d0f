"""Build the physically smaller model: same layers and names, fewer filters, sliced weights.

No masks: every kept channel is copied into a new model whose Conv2D ``filters`` and Dense
``units`` are the kept counts. Weights are sliced along producers' output axis, followers'
channel axis (BatchNormalization vectors, DepthwiseConv2D kernels) and consumers' input axis
(Conv2D kernels' input channels, Dense rows, expanded after Flatten). The result is an
uncompiled functional model that saves and loads like any other (``model.save(x.keras)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np

from slimedge.prune import PruneError
from slimedge.prune.graph import ChannelGraph, analyze

L = keras.layers


def expand_indices(keep: np.ndarray, channels: int, expansion: int) -> np.ndarray:
    """Indices on an axis holding ``expansion`` copies of ``channels`` (index s*channels + c)."""
    if expansion == 1:
        return keep
    return (np.arange(expansion)[:, None] * channels + keep[None, :]).reshape(-1)


def check_keep(graph: ChannelGraph,
               keep: Mapping[str, Sequence[int] | np.ndarray]) -> dict[str, np.ndarray]:
    """Validated keep map: known prunable groups, sorted unique in-range indices, not empty."""
    out: dict[str, np.ndarray] = {}
    for gid, indices in keep.items():
        group = graph.groups.get(gid)
        if group is None:
            raise PruneError(f"model {graph.model_name!r} has no channel group {gid!r}; "
                             f"prunable groups: {', '.join(g.id for g in graph.prunable())}")
        if not group.prunable:
            raise PruneError(f"channel group {gid!r} cannot be pruned: {group.reason}")
        arr = np.asarray(indices)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise PruneError(f"keep[{gid!r}] must be a 1-D array of channel indices")
        arr = arr.astype(np.int64)
        if arr.size == 0:
            raise PruneError(f"keep[{gid!r}] is empty; a group keeps at least one channel")
        if arr.min() < 0 or arr.max() >= group.channels:
            raise PruneError(f"keep[{gid!r}] has indices outside 0..{group.channels - 1}")
        if np.unique(arr).size != arr.size:
            raise PruneError(f"keep[{gid!r}] repeats a channel index")
        out[gid] = np.sort(arr)
    return out


def prune_model(model: keras.Model, keep: Mapping[str, Sequence[int] | np.ndarray], *,
                graph: ChannelGraph | None = None) -> keras.Model:
    """A new model keeping, for each group id in ``keep``, only the channels at those indices
    (groups left out keep all). ``graph`` may pass ``analyze(model)`` to skip recomputing it."""
    graph = analyze(model) if graph is None else graph
    keep = check_keep(graph, keep)

    out_idx: dict[str, np.ndarray] = {}  # producers: output axis
    in_idx: dict[str, np.ndarray] = {}  # consumers: input axis
    ch_idx: dict[str, np.ndarray] = {}  # followers: channel axis
    for gid, idx in keep.items():
        group = graph.groups[gid]
        for name in group.producers:
            out_idx[name] = idx
        for m in group.consumers:
            in_idx[m.layer] = expand_indices(idx, group.channels, m.expansion)
        for m in group.followers:
            ch_idx[m.layer] = expand_indices(idx, group.channels, m.expansion)

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in out_idx:
            config["filters" if type(layer) is L.Conv2D else "units"] = int(
                out_idx[layer.name].size)
        return type(layer).from_config(config)

    pruned = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        new = pruned.get_layer(layer.name)
        weights = _slice_weights(layer, out_idx.get(layer.name), in_idx.get(layer.name),
                                 ch_idx.get(layer.name))
        new.set_weights(weights)
    return pruned


def _slice_weights(layer: keras.layers.Layer, out: np.ndarray | None, inp: np.ndarray | None,
                   ch: np.ndarray | None) -> list[np.ndarray]:
    """The layer's weights with the given axes sliced (None: axis kept whole)."""
    kind = type(layer)
    result = []
    for var in layer.weights:
        w = np.asarray(var.numpy())
        name = var.name
        if kind in (L.Conv2D, L.Dense):
            if name == "kernel":
                if inp is not None:
                    w = np.take(w, inp, axis=-2)
                if out is not None:
                    w = np.take(w, out, axis=-1)
            elif name == "bias":
                if out is not None:
                    w = w[out]
            elif out is not None or inp is not None:
                raise PruneError(f"layer {layer.name!r} ({kind.__name__}) has weight {name!r} "
                                 "that the slicer does not know")
        elif kind is L.DepthwiseConv2D and ch is not None:
            if name == "kernel":
                w = w[:, :, ch, :]
            elif name == "bias":
                w = w[ch]
            else:
                raise PruneError(f"layer {layer.name!r} (DepthwiseConv2D) has weight {name!r} "
                                 "that the slicer does not know")
        elif kind is L.BatchNormalization and ch is not None:
            w = w[ch]  # gamma, beta, moving mean and variance: all per channel
        result.append(w)
    return result
