"""Edge TPU readiness, checked statically (Google's Edge TPU compiler cannot be installed here).

A model maps to the Edge TPU only if it is fully 8-bit quantized, has static tensor shapes and
uses supported operations. The compiler cuts the graph once: from the first op it cannot map,
that op and every op after it run on the host CPU. `check_edgetpu` names the first such op.

Source of the operation list: Coral documentation, "TensorFlow models on the Edge TPU",
section "Supported operations" (https://coral.ai/docs/edgetpu/models-intro/#supported-operations,
the table for Edge TPU compiler 16 / runtime 14), cross-checked against the copy of that table in
Axis' documentation of its Edge TPU-based ARTPEC-7 chip
(https://developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/supported-ops/).
The same page states the model requirements checked here: 8-bit quantized tensors, sizes
constant at compile time, and at most the three innermost dimensions of a tensor larger than 1.
Dequantize is not in the table (confirmed by maintainers in google-coral/edgetpu#659).
The table's op names are mapped to TFLite builtin names below; its per-op limitations (for
example Mean: no reduction over the batch axis) are data-dependent and are reported as notes,
not checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from slimedge.export.tflite_ops import ModelInfo, OpInfo, TensorInfo, read_tflite

EDGETPU_OPS_SOURCE = (
    "Coral, 'TensorFlow models on the Edge TPU' > 'Supported operations', "
    "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
)

# Coral table name -> TFLite builtin name(s).
_TABLE: dict[str, tuple[str, ...]] = {
    "Add": ("ADD",),
    "AveragePool2d": ("AVERAGE_POOL_2D",),
    "Concatenation": ("CONCATENATION",),
    "Conv2d": ("CONV_2D",),
    "DepthwiseConv2d": ("DEPTHWISE_CONV_2D",),
    "ExpandDims": ("EXPAND_DIMS",),
    "FullyConnected": ("FULLY_CONNECTED",),
    "L2Normalization": ("L2_NORMALIZATION",),
    "Logistic": ("LOGISTIC",),
    "LSTM": ("LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM"),  # unidirectional only
    "Maximum": ("MAXIMUM",),
    "MaxPool2d": ("MAX_POOL_2D",),
    "Mean": ("MEAN",),
    "Minimum": ("MINIMUM",),
    "Mul": ("MUL",),
    "Pack": ("PACK",),
    "Pad": ("PAD",),
    "PReLU": ("PRELU",),
    "Quantize": ("QUANTIZE",),
    "ReduceMax": ("REDUCE_MAX",),
    "ReduceMin": ("REDUCE_MIN",),
    "ReLU": ("RELU",),
    "ReLU6": ("RELU6",),
    "ReLUN1To1": ("RELU_N1_TO_1",),
    "Reshape": ("RESHAPE",),
    "ResizeBilinear": ("RESIZE_BILINEAR",),
    "ResizeNearestNeighbor": ("RESIZE_NEAREST_NEIGHBOR",),
    "Rsqrt": ("RSQRT",),
    "Slice": ("SLICE",),
    "Softmax": ("SOFTMAX",),
    "SpaceToDepth": ("SPACE_TO_DEPTH",),
    "Split": ("SPLIT",),
    "Squeeze": ("SQUEEZE",),
    "StridedSlice": ("STRIDED_SLICE",),
    "Sub": ("SUB",),
    "Sum": ("SUM",),
    "Squared-difference": ("SQUARED_DIFFERENCE",),
    "Tanh": ("TANH",),
    "Transpose": ("TRANSPOSE",),
    "TransposeConv": ("TRANSPOSE_CONV",),
}
EDGETPU_OPS: frozenset[str] = frozenset(b for names in _TABLE.values() for b in names)

# Limitations the table states that depend on op parameters or data (paraphrased).
EDGETPU_OP_LIMITS: dict[str, str] = {
    "AVERAGE_POOL_2D": "no fused activation function",
    "CONCATENATION": "no fused activation; a constant input must be all zeros with 2 inputs",
    "CONV_2D": "same dilation in x and y",
    "DEPTHWISE_CONV_2D": "same dilation in x and y",
    "FULLY_CONNECTED": "default weights format only; output tensor one-dimensional",
    "MAX_POOL_2D": "no fused activation function",
    "MEAN": "no reduction over the batch axis; a z-reduction needs z a multiple of 4",
    "PACK": "no packing along the batch axis",
    "PAD": "no padding along the batch axis",
    "REDUCE_MAX": "not over the batch axis",
    "REDUCE_MIN": "not over the batch axis",
    "RESHAPE": "large reshapes may not be mapped",
    "RESIZE_BILINEAR": "3-D input/output; may stay on the CPU to keep precision",
}

_EIGHT_BIT = ("int8", "uint8")


@dataclass(frozen=True)
class EdgeTPUReport:
    """`ready`: maps whole to the Edge TPU. `first_unsupported`: (index, op) of the first op in
    execution order that would run on the CPU (all later ops run there too), or None."""

    ready: bool
    first_unsupported: tuple[int, str] | None
    reasons: list[str]
    ops: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_ops(self) -> list[str]:
        """Ops that would run on the CPU: the first unsupported one and everything after it."""
        if self.first_unsupported is None:
            return []
        return self.ops[self.first_unsupported[0]:]

    def to_dict(self) -> dict[str, Any]:
        first = self.first_unsupported
        return {
            "ready": self.ready,
            "first_unsupported": {"index": first[0], "op": first[1]} if first else None,
            "reasons": list(self.reasons),
            "ops": list(self.ops),
            "cpu_ops": self.cpu_ops,
            "notes": list(self.notes),
            "op_list_source": EDGETPU_OPS_SOURCE,
        }


def check_edgetpu(tflite_path: str | os.PathLike[str] | bytes) -> EdgeTPUReport:
    """Static Edge TPU readiness of a `.tflite` model (path or bytes)."""
    info = read_tflite(tflite_path)
    reasons: list[str] = []

    activations = info.activations()
    bad_type = _first_non_int8_tensor(info, activations)
    if bad_type is not None:
        reasons.append(
            f"tensor {bad_type.describe()} is {bad_type.dtype}: the Edge TPU runs only fully "
            "8-bit quantized models (int8/uint8 tensors, int32 only for constant biases and "
            "shape operands); convert with format 'int8'"
        )
    dynamic = info.first_dynamic_tensor()
    if dynamic is not None:
        reasons.append(
            f"tensor {dynamic.describe()} has a dynamic dimension (-1): the Edge TPU compiler "
            "needs sizes constant at compile time; convert from a model with a fixed batch "
            "size of 1 (keras.Input(shape, batch_size=1))"
        )
    wide = _first_wide_tensor(info, activations)
    if wide is not None:
        reasons.append(
            f"tensor {wide.describe()} has a dimension > 1 outside its 3 innermost: the Edge "
            "TPU needs at most the 3 innermost dimensions larger than 1"
        )
    if info.num_subgraphs > 1:
        reasons.append(f"the model has {info.num_subgraphs} subgraphs: the Edge TPU compiler "
                       "maps only a model with one subgraph")

    first = None
    for op in info.ops:
        why = _op_problem(info, op, activations)
        if why is not None:
            first = (op.index, op.label)
            after = [f"{o.index} {o.label}" for o in info.ops[op.index + 1:]]
            tail = (f"; every op after it runs on the CPU too ({', '.join(after)})" if after
                    else " (it is the last op)")
            reasons.append(f"op {op.index} {op.label} {why}: it falls back to the CPU{tail}")
            break
    notes = [f"{name}: {EDGETPU_OP_LIMITS[name]} (not checked statically)"
             for name in info.distinct_ops() if name in EDGETPU_OP_LIMITS]
    return EdgeTPUReport(
        ready=not reasons,
        first_unsupported=first,
        reasons=reasons,
        ops=info.op_names(),
        notes=notes,
    )


def _allowed_type(t: TensorInfo, activations: set[int]) -> bool:
    # int32 is fine for constants (biases, shape and axis operands), not for activations.
    return t.dtype in _EIGHT_BIT or (t.dtype == "int32" and t.index not in activations)


def _first_non_int8_tensor(info: ModelInfo, activations: set[int]) -> TensorInfo | None:
    for t in info.tensors_in_execution_order():
        if not _allowed_type(t, activations):
            return t
    return None


def _first_wide_tensor(info: ModelInfo, activations: set[int]) -> TensorInfo | None:
    # Only activations: constant filters are laid out by the compiler, not bound by this rule.
    for t in info.tensors_in_execution_order():
        if t.index in activations and len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3]):
            return t
    return None


def _op_problem(info: ModelInfo, op: OpInfo, activations: set[int]) -> str | None:
    if op.custom_code is not None:
        return f"is a custom op ('{op.custom_code}'), not an Edge TPU operation"
    if op.name not in EDGETPU_OPS:
        return "is not in the Edge TPU supported operations"
    for i in (*op.inputs, *op.outputs):
        if i >= 0 and not _allowed_type(info.tensors[i], activations):
            t = info.tensors[i]
            return f"works on {t.dtype} tensor '{t.name}' (the Edge TPU computes only 8-bit)"
    return None
