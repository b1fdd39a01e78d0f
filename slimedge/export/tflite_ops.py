"""What a `.tflite` file holds, read without TensorFlow: ops in execution order, every tensor's
type and shape (static or not), inputs and outputs.

The file is parsed from its FlatBuffer with the schema bindings that LiteRT ships
(`ai_edge_litert.schema_py_generated`, plain generated Python over the `flatbuffers` package),
not through the LiteRT interpreter, because the interpreter lacks three things the export checks
need: it cannot open a model whose ops it cannot resolve (custom or Flex ops, exactly what the
Edge TPU and firmware checks must name), it does not say which tensors are constants (weights,
biases, shape operands), and its tensor list skips unnamed tensors. A TFLite subgraph's
operator list is its execution order (the interpreter's default execution plan is 0..n-1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.export import ExportError

_IDENTIFIER = b"TFL3"  # FlatBuffer file identifier of TFLite models (bytes 4..8)


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a subgraph. `dtype` is the lower-case TFLite type name ("int8", "float32",
    ...); `shape_signature` has -1 where a dimension is dynamic."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    constant: bool  # backed by data in the file (weights, biases, shape operands)
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int

    @property
    def static(self) -> bool:
        return all(d >= 0 for d in self.shape_signature)

    @property
    def quantized(self) -> bool:
        return len(self.scales) > 0

    def describe(self) -> str:
        """`'name' (tensor 3, int8 [1, 16, 16, 4])`, for messages."""
        dims = ", ".join(str(d) for d in self.shape_signature)
        return f"'{self.name}' (tensor {self.index}, {self.dtype} [{dims}])"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "shape_signature": list(self.shape_signature),
            "static": self.static,
            "constant": self.constant,
            "scales": list(self.scales)[:8],  # per-channel lists are long; a few say enough
            "zero_points": list(self.zero_points)[:8],
        }


@dataclass(frozen=True)
class OpInfo:
    """One operator, at position `index` of its subgraph's execution order. `name` is the
    builtin name (CONV_2D, ...) or "CUSTOM" with `custom_code` set."""

    index: int
    name: str
    custom_code: str | None
    version: int
    inputs: tuple[int, ...]  # tensor indices; -1 = optional input left out
    outputs: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"CUSTOM({self.custom_code})" if self.custom_code is not None else self.name


@dataclass(frozen=True)
class ModelInfo:
    """A parsed `.tflite` file. `ops`/`tensors`/`inputs`/`outputs` are those of the main
    subgraph (0); `subgraph_ops` holds the ops of every subgraph (control flow bodies)."""

    source: str
    size_bytes: int
    version: int
    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraph_ops: tuple[tuple[OpInfo, ...], ...]

    @property
    def num_subgraphs(self) -> int:
        return len(self.subgraph_ops)

    def op_names(self) -> list[str]:
        """Main-subgraph op labels in execution order."""
        return [op.label for op in self.ops]

    def distinct_ops(self) -> list[str]:
        """Every op label used in any subgraph, once each, in order of first use."""
        seen: dict[str, None] = {}
        for ops in self.subgraph_ops:
            for op in ops:
                seen.setdefault(op.label, None)
        return list(seen)

    @property
    def static_shapes(self) -> bool:
        return self.first_dynamic_tensor() is None

    def first_dynamic_tensor(self) -> TensorInfo | None:
        """The first tensor with a dynamic dimension, graph inputs first, then in op order."""
        for t in self.tensors_in_execution_order():
            if not t.static:
                return t
        return None

    def tensors_in_execution_order(self) -> list[TensorInfo]:
        """Graph inputs, then each op's inputs and outputs as the ops run, then the rest."""
        order: dict[int, None] = dict.fromkeys(self.inputs)
        for op in self.ops:
            for i in (*op.inputs, *op.outputs):
                if i >= 0:
                    order.setdefault(i, None)
        for t in self.tensors:
            order.setdefault(t.index, None)
        return [self.tensors[i] for i in order]

    def activations(self) -> set[int]:
        """Tensors computed from the graph inputs: the inputs and every output of an op that
        reads one. Constants and tensors derived from constants only (dequantized weights)
        are not activations."""
        live = set(self.inputs)
        for op in self.ops:
            if any(i in live for i in op.inputs):
                live.update(i for i in op.outputs if i >= 0)
        return live

    def input_details(self) -> list[TensorInfo]:
        return [self.tensors[i] for i in self.inputs]

    def output_details(self) -> list[TensorInfo]:
        return [self.tensors[i] for i in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "bytes": self.size_bytes,
            "schema_version": self.version,
            "subgraphs": self.num_subgraphs,
            "ops": self.op_names(),
            "distinct_ops": self.distinct_ops(),
            "static_shapes": self.static_shapes,
            "dtypes": sorted({t.dtype for t in self.tensors}),
            "inputs": [t.to_dict() for t in self.input_details()],
            "outputs": [t.to_dict() for t in self.output_details()],
        }


def read_tflite(model: str | os.PathLike[str] | bytes) -> ModelInfo:
    """Parse a `.tflite` file (path or bytes). Raises ExportError naming the file if it is
    missing or not a TFLite model."""
    if isinstance(model, bytes | bytearray):
        source, data = "model bytes", bytes(model)
    else:
        path = Path(model)
        source = str(path)
        if not path.is_file():
            raise ExportError(f"{path}: no such model file")
        data = path.read_bytes()
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise ExportError(
            f"{source}: not a TFLite model (no '{_IDENTIFIER.decode()}' FlatBuffer identifier)"
        )
    try:
        return _parse(source, data)
    except ExportError:
        raise
    except Exception as exc:  # a corrupt FlatBuffer fails in assorted ways (struct, index)
        raise ExportError(f"{source}: corrupt TFLite FlatBuffer: {exc!r}") from exc


def _parse(source: str, data: bytes) -> ModelInfo:
    s = _schema()
    op_names = _enum_names(s.BuiltinOperator)
    type_names = _enum_names(s.TensorType)
    model = s.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise ExportError(f"{source}: TFLite model without a subgraph")

    codes: list[tuple[str, str | None, int]] = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        # Schema 3a: codes above 127 live in builtin_code, older files in the deprecated byte.
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = op_names.get(code, f"BUILTIN_{code}")
        custom = oc.CustomCode()
        codes.append((name, custom.decode() if custom is not None else None, int(oc.Version())))

    def constant(buffer_index: int) -> bool:
        if buffer_index <= 0 or buffer_index >= model.BuffersLength():
            return False  # buffer 0 is the schema's empty sentinel
        buf = model.Buffers(buffer_index)
        return buf.DataLength() > 0 or buf.Offset() > 1  # offset: data stored past the FlatBuffer

    subgraph_ops = []
    main_tensors: tuple[TensorInfo, ...] = ()
    for g in range(model.SubgraphsLength()):
        sg = model.Subgraphs(g)
        ops = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            oi = int(op.OpcodeIndex())
            if oi >= len(codes):
                raise ExportError(f"{source}: op {i} of subgraph {g} names opcode {oi}, "
                                  f"but the model has {len(codes)}")
            name, custom, version = codes[oi]
            ops.append(OpInfo(i, name, custom, version, _ints(op.InputsAsNumpy()),
                              _ints(op.OutputsAsNumpy())))
        subgraph_ops.append(tuple(ops))
        if g == 0:
            main_tensors = tuple(
                _tensor(sg.Tensors(t), t, type_names, constant) for t in range(sg.TensorsLength())
            )
            inputs, outputs = _ints(sg.InputsAsNumpy()), _ints(sg.OutputsAsNumpy())
    return ModelInfo(
        source=source,
        size_bytes=len(data),
        version=int(model.Version()),
        ops=subgraph_ops[0],
        tensors=main_tensors,
        inputs=inputs,
        outputs=outputs,
        subgraph_ops=tuple(subgraph_ops),
    )


def _ints(arr: Any) -> tuple[int, ...]:
    # The generated accessors return 0 (not an empty array) for an absent vector.
    if isinstance(arr, int):
        return ()
    return tuple(int(v) for v in arr)


def _tensor(t: Any, index: int, type_names: dict[int, str], constant: Any) -> TensorInfo:
    shape = _ints(t.ShapeAsNumpy())
    signature = _ints(t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() > 0 else shape
    q = t.Quantization()
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    qdim = 0
    if q is not None and q.ScaleLength() > 0:
        scales = tuple(float(v) for v in q.ScaleAsNumpy())
        zero_points = _ints(q.ZeroPointAsNumpy())
        qdim = int(q.QuantizedDimension())
    raw_name = t.Name()
    return TensorInfo(
        index=index,
        name=raw_name.decode(errors="replace") if raw_name is not None else "",
        dtype=type_names.get(int(t.Type()), f"type{int(t.Type())}").lower(),
        shape=shape,
        shape_signature=signature,
        constant=constant(int(t.Buffer())),
        scales=scales,
        zero_points=zero_points,
        quantized_dimension=qdim,
    )
