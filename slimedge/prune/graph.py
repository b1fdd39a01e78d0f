"""Channel-dependency analysis of a Keras 3 functional model.

A *channel group* is a set of tensors whose channel (last) axis must shrink together. Each
layer of the model plays one role towards the group of its input and/or output:

- **producer** (Conv2D with groups=1, Dense): its output channels start a new group; pruning
  slices its kernel's output axis and its bias.
- **follower** (BatchNormalization on the last axis, DepthwiseConv2D with depth_multiplier=1):
  output channels are the input's; pruning slices its per-channel parameters.
- **pass-through** (activations, pooling, global pooling, dropout/noise, padding/cropping,
  upsampling, scalar Rescaling, Flatten): no parameters to slice. Flatten multiplies the
  *expansion* of the tensor: a flattened (h, w, C) tensor holds each channel at h*w positions
  (index s*C + c, channels fastest), which its consumers' slicing follows.
- **tie** (Add, Subtract, Multiply, Maximum, Minimum, Average): all inputs and the output are
  one group, e.g. the two sides of a residual connection.
- **consumer** (the input side of Conv2D and Dense): pruning slices its kernel's input axis
  (Dense rows, expanded after Flatten).

Prunable groups are those that contain neither the model's input nor any model output, and
whose channels are not mixed by a per-channel-coupled op (a softmax over channels, a
non-scalar Rescaling). The branch's last layer is Dense(D) "features": its output group is a
model output and never pruned, so D stays fixed at every level; the last conv before
GlobalAveragePooling -> Dense(D) is prunable, because only Dense(D)'s input rows shrink.

Not supported, each an error naming the layer: Concatenate (a concatenated tensor holds
several groups side by side; not implemented), Reshape, grouped convolutions, depth
multipliers above 1, channels_first layouts, shared layers (one layer called twice), nested
models, raw ``keras.ops`` calls in the graph, and any layer type not listed above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from slimedge.prune import PruneError

L = keras.layers

# Exact types: a subclass may change what its channels mean, so it is not assumed to behave.
PRODUCERS = (L.Conv2D, L.Dense)
FOLLOWERS = (L.BatchNormalization, L.DepthwiseConv2D)
PASS_THROUGHS = (
    L.ReLU, L.LeakyReLU, L.ELU, L.Activation, L.Softmax,
    L.MaxPooling2D, L.AveragePooling2D, L.GlobalAveragePooling2D, L.GlobalMaxPooling2D,
    L.Dropout, L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout, L.ActivityRegularization,
    L.Identity, L.ZeroPadding2D, L.Cropping2D, L.UpSampling2D, L.Rescaling, L.Flatten,
)
TIES = (L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum, L.Average)

# Activations that act on each channel on its own; anything else (softmax, log_softmax, ...)
# couples the channels of its tensor, which then cannot be pruned.
ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "sigmoid",
    "hard_sigmoid", "tanh", "hard_tanh", "swish", "silu", "hard_swish", "hard_silu", "softplus",
    "softsign", "exponential", "mish", "log_sigmoid", "tanh_shrink", "hard_shrink",
    "soft_shrink", "squareplus", "sparse_plus", "threshold",
})


@dataclass(frozen=True)
class Member:
    """A layer's role in a group. ``expansion``: positions per channel on that layer's side
    (> 1 after Flatten), so channel c occupies indices s * channels + c, s < expansion."""

    layer: str
    expansion: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """Tensors whose channel axis shrinks together, and the layers sliced when it does.

    ``id`` is the name of the group's first producer in topological order (``input:<name>``
    for the model input's group): layer names survive pruning, so ids match across levels.
    """

    id: str
    channels: int
    producers: tuple[str, ...]
    followers: tuple[Member, ...]
    consumers: tuple[Member, ...]
    passthroughs: tuple[str, ...]
    ties: tuple[str, ...]
    prunable: bool
    reason: str = ""  # why not prunable; empty when prunable


@dataclass
class ChannelGraph:
    """All channel groups of one model, in topological order."""

    model_name: str
    groups: dict[str, ChannelGroup]
    # Per group, the tensors its consumers read (deduplicated): where "zeroing a channel at the
    # point it is consumed" happens. Used by activation-based criteria.
    consumed: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups.values() if g.prunable]

    def channels(self) -> dict[str, int]:
        """Channel count of every prunable group (the ladder stores the original model's)."""
        return {g.id: g.channels for g in self.prunable()}


def model_nodes(model: keras.Model) -> list[Any]:
    """The model's own graph nodes in topological order (inputs first).

    Uses Keras 3's ``Functional._nodes_by_depth`` (present in 3.x, checked on 3.15), which holds
    exactly this model's nodes even when its layers are also called elsewhere.
    """
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None or isinstance(model, keras.Sequential):
        raise PruneError(f"model {model.name!r} ({type(model).__name__}) is not a functional "
                         "model; build it with keras.Model(inputs, outputs)")
    return [n for depth in sorted(nodes_by_depth, reverse=True) for n in nodes_by_depth[depth]]


def _describe(op: Any) -> str:
    return f"layer {op.name!r} ({type(op).__name__})"


def _unsupported(op: Any, why: str = "") -> PruneError:
    tail = f": {why}" if why else ""
    return PruneError(f"{_describe(op)} is not supported by the channel-dependency "
                      f"analysis{tail}")


def _activation_name(fn: Any) -> str:
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # a custom callable: treat as unknown, hence coupling
        return "<custom>"
    return name if isinstance(name, str) else "<custom>"


class _Builder:
    """Union-find over group seeds (the model input and every producer's output)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.seed_name: list[str] = []
        self.seed_order: list[int] = []
        self.seed_channels: list[int] = []
        self.roles: list[dict[str, list[Any]]] = []
        self.blocked: list[list[str]] = []
        self.consumed: list[list[Any]] = []

    def new(self, name: str, order: int, channels: int) -> int:
        self.parent.append(len(self.parent))
        self.seed_name.append(name)
        self.seed_order.append(order)
        self.seed_channels.append(channels)
        self.roles.append({k: [] for k in ("producers", "followers", "consumers",
                                           "passthroughs", "ties")})
        self.blocked.append([])
        self.consumed.append([])
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The earlier seed stays the root, so a group's id is its first producer.
            if self.seed_order[rb] < self.seed_order[ra]:
                ra, rb = rb, ra
            self.parent[rb] = ra
        return ra


def analyze(model: keras.Model) -> ChannelGraph:
    """Find the channel groups of ``model``; raises PruneError naming any layer it cannot
    handle (never skips one silently)."""
    nodes = model_nodes(model)
    calls: dict[int, int] = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1

    b = _Builder()
    state: dict[int, tuple[int, int]] = {}  # id(KerasTensor) -> (seed, expansion)
    order = {id(layer): i for i, layer in enumerate(model.operations)}

    def add(seed: int, role: str, item: Any) -> None:
        b.roles[seed][role].append(item)

    for node in nodes:
        op = node.operation
        if isinstance(op, keras.Model):
            raise _unsupported(op, "nested models are not analysed; build the branch flat")
        if not isinstance(op, keras.layers.Layer):
            raise _unsupported(op, "raw keras.ops calls cannot be pruned; use the layer form")
        if calls[id(op)] > 1:
            raise _unsupported(op, f"it is called {calls[id(op)]} times (shared layer)")
        outs = node.output_tensors
        if isinstance(op, L.InputLayer):
            seed = b.new(f"input:{op.name}", order[id(op)], int(outs[0].shape[-1]))
            b.blocked[seed].append(f"model input {op.name!r}")
            state[id(outs[0])] = (seed, 1)
            continue
        if len(outs) != 1:
            raise _unsupported(op, f"{len(outs)} outputs")
        ins = node.input_tensors
        if type(op) not in TIES and len(ins) != 1:
            raise _unsupported(op, f"{len(ins)} inputs")
        if any(id(t) not in state for t in ins):
            raise _unsupported(op, "an input does not come from the model's graph")
        seed, exp = state[id(ins[0])]
        fmt = getattr(op, "data_format", "channels_last")
        if fmt != "channels_last":
            raise _unsupported(op, f"data_format {fmt!r}; only channels_last")
        kind = type(op)

        if kind in PRODUCERS:
            if kind is L.Conv2D and int(op.groups) != 1:
                raise _unsupported(op, f"grouped convolution (groups={op.groups})")
            if getattr(op, "lora_enabled", False) or getattr(op, "quantization_mode", None):
                raise _unsupported(op, "LoRA or quantized weights")
            add(seed, "consumers", Member(op.name, exp))
            if not any(t is ins[0] for t in b.consumed[seed]):
                b.consumed[seed].append(ins[0])
            out_seed = b.new(op.name, order[id(op)], int(outs[0].shape[-1]))
            add(out_seed, "producers", op.name)
            act = _activation_name(op.activation)
            if act not in ELEMENTWISE_ACTIVATIONS:
                b.blocked[out_seed].append(f"layer {op.name!r} applies {act} across channels")
            state[id(outs[0])] = (out_seed, 1)
        elif kind in FOLLOWERS:
            if kind is L.DepthwiseConv2D:
                if int(op.depth_multiplier) != 1:
                    raise _unsupported(op, f"depth_multiplier={op.depth_multiplier}")
                act = _activation_name(op.activation)
                if act not in ELEMENTWISE_ACTIVATIONS:
                    b.blocked[seed].append(f"layer {op.name!r} applies {act} across channels")
            else:
                axes = op.axis if isinstance(op.axis, list | tuple) else [op.axis]
                rank = len(ins[0].shape)
                if [a % rank for a in axes] != [rank - 1]:
                    raise _unsupported(op, f"normalizes axis {op.axis}, not the channel axis")
            add(seed, "followers", Member(op.name, exp))
            state[id(outs[0])] = (seed, exp)
        elif kind in TIES:
            shapes = {int(t.shape[-1]) for t in ins}
            if len(shapes) != 1:
                raise _unsupported(op, f"inputs with different channel counts {sorted(shapes)} "
                                       "(broadcasting)")
            exps = {state[id(t)][1] for t in ins}
            if len(exps) != 1:
                raise _unsupported(op, "inputs flattened from different spatial sizes")
            for t in ins[1:]:
                seed = b.union(seed, state[id(t)][0])
            add(seed, "ties", op.name)
            state[id(outs[0])] = (seed, exp)
        elif kind in PASS_THROUGHS:
            if kind is L.Flatten:
                shape = ins[0].shape
                if any(s is None for s in shape[1:]):
                    raise _unsupported(op, f"dynamic input shape {tuple(shape)}")
                exp *= math.prod(int(s) for s in shape[1:-1])
            elif kind is L.Softmax:
                axes = op.axis if isinstance(op.axis, list | tuple) else [op.axis]
                rank = len(ins[0].shape)
                if (rank - 1) in [a % rank for a in axes]:
                    b.blocked[seed].append(f"layer {op.name!r} applies softmax across channels")
            elif kind is L.Activation:
                act = _activation_name(op.activation)
                if act not in ELEMENTWISE_ACTIVATIONS:
                    b.blocked[seed].append(f"layer {op.name!r} applies {act} across channels")
            elif kind is L.Rescaling:
                if max(np.size(op.scale), np.size(op.offset)) > 1:
                    b.blocked[seed].append(f"layer {op.name!r} rescales each channel apart")
            add(seed, "passthroughs", op.name)
            state[id(outs[0])] = (seed, exp)
        else:
            raise _unsupported(op)

    for t in model.outputs:
        seed = state[id(t)][0]
        b.blocked[seed].append(f"model output (layer {t._keras_history.operation.name!r})")
    return _assemble(model, b)


def _assemble(model: keras.Model, b: _Builder) -> ChannelGraph:
    merged: dict[int, dict[str, list[Any]]] = {}
    blocked: dict[int, list[str]] = {}
    consumed: dict[int, list[Any]] = {}
    for seed in range(len(b.parent)):
        root = b.find(seed)
        roles = merged.setdefault(root, {k: [] for k in b.roles[seed]})
        for k, v in b.roles[seed].items():
            roles[k].extend(v)
        blocked.setdefault(root, []).extend(b.blocked[seed])
        seen = consumed.setdefault(root, [])
        for t in b.consumed[seed]:
            if not any(t is s for s in seen):
                seen.append(t)
    groups: dict[str, ChannelGroup] = {}
    tensors: dict[str, list[Any]] = {}
    for root in sorted(merged, key=lambda r: b.seed_order[r]):
        roles = merged[root]
        gid = b.seed_name[root]
        reasons = blocked[root]
        groups[gid] = ChannelGroup(
            id=gid, channels=b.seed_channels[root],
            producers=tuple(roles["producers"]), followers=tuple(roles["followers"]),
            consumers=tuple(roles["consumers"]), passthroughs=tuple(roles["passthroughs"]),
            ties=tuple(roles["ties"]), prunable=not reasons, reason="; ".join(reasons))
        tensors[gid] = consumed[root]
    return ChannelGraph(model_name=model.name, groups=groups, consumed=tensors)
