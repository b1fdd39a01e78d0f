"""Firmware bundle for a TFLite Micro board: the model as a C++ byte array, the measured tensor
arena size, and an op resolver registering exactly the ops the model uses.

`write_firmware_bundle(model.tflite, out_dir, name="cam00", arena_bytes=..., board_id=...)`
writes four files:

- `cam00_model.h` / `cam00_model.cc`: `alignas(16) const unsigned char cam00_model[]` (TFLite
  Micro reads tensors in place, so the FlatBuffer must be aligned) and `cam00_model_len`;
- `cam00_arena.h`: `constexpr size_t kCam00ArenaSize`, the measured arena rounded up to 16 B;
- `cam00_ops.h`: `RegisterCam00Ops(tflite::MicroMutableOpResolver<K>&)` with K the number of
  distinct ops, so the firmware links only the kernels it needs.

Everything is generated in memory first; an op without a known resolver method raises
ExportError before any file is written.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from slimedge.artifacts import atomic_file
from slimedge.export import ExportError
from slimedge.export.tflite_ops import read_tflite

ARENA_ALIGN = 16
MODEL_ALIGN = 16
_BYTES_PER_LINE = 12

# TFLite builtin op -> tflite::MicroMutableOpResolver method (tensorflow/lite/micro/
# micro_mutable_op_resolver.h in the tflite-micro repository).
TFLM_RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNPACK": "AddUnpack",
    "ZEROS_LIKE": "AddZerosLike",
}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def camel(name: str) -> str:
    """`cam00_branch` -> `Cam00Branch` (for k<Name>ArenaSize and Register<Name>Ops)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def round_up(n: int, align: int) -> int:
    return -(-n // align) * align


def resolver_methods(ops: list[str], model: str) -> list[str]:
    """The resolver method of each distinct op, in order; ExportError names an unknown op."""
    methods = []
    for op in ops:
        if op not in TFLM_RESOLVER_METHODS:
            raise ExportError(
                f"{model}: op {op} has no known TFLite Micro resolver method; the firmware "
                "bundle cannot register it (convert with int8 builtin ops only, or add its "
                "MicroMutableOpResolver method to TFLM_RESOLVER_METHODS)"
            )
        methods.append(TFLM_RESOLVER_METHODS[op])
    return methods


def write_firmware_bundle(
    tflite_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    arena_bytes: int,
    board_id: str,
) -> dict[str, Any]:
    """Write `<name>_model.h/.cc`, `<name>_arena.h`, `<name>_ops.h` into `out_dir`.

    Returns `{"files": [{"path", "sha256", "bytes"}], "ops", "resolver_size", "arena_bytes"
    (rounded), "measured_arena_bytes", "model_bytes", "model_sha256", "board"}`; paths are the
    file names inside `out_dir`.
    """
    tflite_path = Path(tflite_path)
    if not _IDENT.match(name or ""):
        raise ExportError(f"firmware name {name!r}: must be a C identifier "
                          "(letters, digits, underscores; not starting with a digit)")
    if isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int) or arena_bytes <= 0:
        raise ExportError(f"{tflite_path}: arena_bytes must be a positive integer, "
                          f"got {arena_bytes!r}")
    info = read_tflite(tflite_path)
    data = tflite_path.read_bytes()
    ops = info.distinct_ops()
    methods = resolver_methods(ops, str(tflite_path))
    sha = hashlib.sha256(data).hexdigest()
    arena = round_up(arena_bytes, ARENA_ALIGN)
    Name = camel(name)
    origin = (f"Generated by slimedge export from {tflite_path.name} "
              f"(sha256 {sha}, {len(data)} bytes) for board {board_id}. Do not edit.")

    texts = {
        f"{name}_model.h": _model_header(name, origin),
        f"{name}_model.cc": _model_source(name, data, origin),
        f"{name}_arena.h": _arena_header(name, Name, arena, arena_bytes, board_id, origin),
        f"{name}_ops.h": _ops_header(name, Name, ops, methods, origin),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for fname, text in texts.items():
        raw = text.encode()
        with atomic_file(out / fname, "wb") as fh:
            fh.write(raw)
        files.append({"path": fname, "sha256": hashlib.sha256(raw).hexdigest(),
                      "bytes": len(raw)})
    return {
        "files": files,
        "ops": ops,
        "resolver_size": len(ops),
        "arena_bytes": arena,
        "measured_arena_bytes": arena_bytes,
        "model_bytes": len(data),
        "model_sha256": sha,
        "board": board_id,
    }


def _guard(name: str, what: str) -> str:
    return f"SLIMEDGE_{name.upper()}_{what}_H_"


def _model_header(name: str, origin: str) -> str:
    g = _guard(name, "MODEL")
    return (
        f"// {origin}\n"
        f"#ifndef {g}\n#define {g}\n\n"
        f"// The TFLite FlatBuffer, {MODEL_ALIGN}-byte aligned for TFLite Micro.\n"
        f"extern const unsigned char {name}_model[];\n"
        f"extern const unsigned int {name}_model_len;\n\n"
        f"#endif  // {g}\n"
    )


def _model_source(name: str, data: bytes, origin: str) -> str:
    lines = []
    for start in range(0, len(data), _BYTES_PER_LINE):
        chunk = data[start:start + _BYTES_PER_LINE]
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    body = "\n".join(lines)
    return (
        f"// {origin}\n"
        f'#include "{name}_model.h"\n\n'
        f"alignas({MODEL_ALIGN}) const unsigned char {name}_model[] = {{\n{body}\n}};\n"
        f"const unsigned int {name}_model_len = {len(data)};\n"
    )


def _arena_header(name: str, Name: str, arena: int, measured: int, board_id: str,
                  origin: str) -> str:
    g = _guard(name, "ARENA")
    return (
        f"// {origin}\n"
        f"#ifndef {g}\n#define {g}\n\n#include <cstddef>\n\n"
        f"// Tensor arena for board {board_id}: {measured} bytes measured in the TFLite Micro\n"
        f"// interpreter (64-bit host, a slight over-estimate on 32-bit MCUs), rounded up to\n"
        f"// {ARENA_ALIGN} bytes. Declare it as: alignas({ARENA_ALIGN}) static uint8_t "
        f"arena[k{Name}ArenaSize];\n"
        f"constexpr size_t k{Name}ArenaSize = {arena};\n\n"
        f"#endif  // {g}\n"
    )


def _ops_header(name: str, Name: str, ops: list[str], methods: list[str], origin: str) -> str:
    g = _guard(name, "OPS")
    k = len(ops)
    adds = "\n".join(
        f"  if (resolver.{m}() != kTfLiteOk) return kTfLiteError;  // {op}"
        for op, m in zip(ops, methods, strict=True)
    )
    return (
        f"// {origin}\n"
        f"#ifndef {g}\n#define {g}\n\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        f"// The {k} distinct ops of the model: {', '.join(ops)}.\n"
        f"constexpr unsigned int k{Name}OpCount = {k};\n"
        f"using {Name}OpResolver = tflite::MicroMutableOpResolver<k{Name}OpCount>;\n\n"
        f"inline TfLiteStatus Register{Name}Ops({Name}OpResolver& resolver) {{\n"
        f"{adds}\n"
        "  return kTfLiteOk;\n"
        "}\n\n"
        f"#endif  // {g}\n"
    )
