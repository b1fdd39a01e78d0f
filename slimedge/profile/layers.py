"""Per-operator work of a .tflite model, read from the file: op kind, MACs, output elements.

The per-layer latency model (`slimedge.devices.calibration`) charges each operator a fixed
cost plus its MACs over a throughput that depends on the op kind, plus a cost per output
element (requantisation and stores); this module counts those quantities from the graph that
the runtime actually executes (after conversion's folding), so they match what was timed.

Kinds: "conv" (CONV_2D), "depthwise" (DEPTHWISE_CONV_2D), "dense" (FULLY_CONNECTED), "pool"
(MAX_POOL_2D, AVERAGE_POOL_2D, MEAN: `macs` = input elements read), "other" (everything else:
reshapes, quantize, activations; no MACs).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from slimedge.profile.litert import _graph_ops, interpreter

OP_KINDS = ("conv", "depthwise", "dense", "pool", "other")
_KIND_OF_OP = {
    "CONV_2D": "conv",
    "DEPTHWISE_CONV_2D": "depthwise",
    "FULLY_CONNECTED": "dense",
    "MAX_POOL_2D": "pool",
    "AVERAGE_POOL_2D": "pool",
    "MEAN": "pool",
}


def layer_costs(model: bytes | str | os.PathLike) -> list[dict[str, Any]]:
    """One entry per operator, in execution order: {op, kind, macs, out_elements}."""
    it = interpreter(model)
    shapes = {int(t["index"]): [int(s) for s in t["shape"]] for t in it.get_tensor_details()}
    out = []
    for op in _graph_ops(it):
        name = str(op["op_name"])
        kind = _KIND_OF_OP.get(name, "other")
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        out_elems = sum(int(np.prod(shapes[int(i)])) for i in op["outputs"])
        macs = 0
        if kind == "conv":  # filter [cout, kh, kw, cin]: each output element is kh*kw*cin MACs
            _, kh, kw, cin = shapes[ins[1]]
            macs = out_elems * kh * kw * cin
        elif kind == "depthwise":  # filter [1, kh, kw, cout]
            macs = out_elems * shapes[ins[1]][1] * shapes[ins[1]][2]
        elif kind == "dense":  # weights [units, inputs]
            macs = out_elems * shapes[ins[1]][-1]
        elif kind == "pool":
            macs = int(np.prod(shapes[ins[0]]))
        out.append({"op": name, "kind": kind, "macs": int(macs), "out_elements": out_elems})
    return out
