"""Static compute costs of a Keras model: multiply-accumulates (MACs) and parameters.

MACs count the multiplications of Conv2D, DepthwiseConv2D, SeparableConv2D and Dense for one
input (batch 1). BatchNormalization is left out (it folds into the preceding conv at TFLite
conversion), and so are biases, activations, pooling and adds: they are cheap next to the
convolutions and their cost is not a multiply-accumulate. Nested models are counted through.
"""

from __future__ import annotations

import math

import keras

from slimedge.errors import SlimEdgeError


def layer_macs(model: keras.Model) -> dict[str, int]:
    """MACs per counted layer (name -> MACs, batch 1); a shared layer sums over its calls."""
    from slimedge.prune.graph import model_nodes  # the one walk over a functional graph

    macs: dict[str, int] = {}
    for node in model_nodes(model):
        op = node.operation
        if isinstance(op, keras.Model):
            for name, value in layer_macs(op).items():
                key = f"{op.name}/{name}"
                macs[key] = macs.get(key, 0) + value
            continue
        value = _node_macs(op, node)
        if value is not None:
            macs[op.name] = macs.get(op.name, 0) + value
    return macs


def count_macs(model: keras.Model) -> int:
    """Total MACs for one input (batch 1); see the module docstring for what is counted."""
    return int(sum(layer_macs(model).values()))


def count_params(model: keras.Model) -> int:
    """All parameters, BatchNormalization moving statistics included (what the file stores)."""
    return int(model.count_params())


def _node_macs(op: object, node: object) -> int | None:
    kinds = (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D, keras.layers.Conv2D,
             keras.layers.Dense)
    if not isinstance(op, kinds):
        return None
    in_shape = node.input_tensors[0].shape
    out_shape = node.output_tensors[0].shape
    if any(s is None for s in (*in_shape[1:], *out_shape[1:])):
        raise SlimEdgeError(f"layer {op.name!r} has a dynamic shape {tuple(out_shape)}; "
                            "MACs need static shapes")
    cin = int(in_shape[-1])
    positions = math.prod(int(s) for s in out_shape[1:-1])  # output pixels (or Dense rows)
    if isinstance(op, keras.layers.Dense):
        return positions * cin * int(op.units)
    kh, kw = (int(k) for k in op.kernel_size)
    if isinstance(op, keras.layers.SeparableConv2D):
        mult = int(op.depth_multiplier)
        return positions * (kh * kw * cin * mult + cin * mult * int(op.filters))
    if isinstance(op, keras.layers.DepthwiseConv2D):
        return positions * kh * kw * cin * int(op.depth_multiplier)
    return positions * kh * kw * (cin // int(op.groups)) * int(op.filters)
