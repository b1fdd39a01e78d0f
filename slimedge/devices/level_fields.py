"""Reading one ladder level entry (`manifest.json` `levels[i]`) for the cost model.

Every reader fails with `CostModelError` naming the level and the field at fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from slimedge.devices.catalog import FORMATS, Board
from slimedge.errors import SlimEdgeError


class CostModelError(SlimEdgeError, ValueError):
    """A level entry, board, format or assignment the cost model cannot use; names it."""


def label(entry: Any, index: int | None) -> str:
    level = entry.get("level", "?") if isinstance(entry, Mapping) else "?"
    where = f"levels[{index}] " if index is not None else ""
    return f"{where}(level {level})"


def number(entry: Mapping[str, Any], index: int | None, key: str, sub: str | None = None,
           *, positive: bool = False) -> float:
    """`entry[key]` (or `entry[key][sub]`) as a finite number >= 0 (> 0 with `positive`)."""
    name = f"'{key}'" + (f"['{sub}']" if sub else "")
    if not isinstance(entry, Mapping):
        raise CostModelError(f"{label(entry, index)}: expected a level entry (a mapping)")
    value: Any = entry.get(key)
    if sub is not None:
        value = value.get(sub) if isinstance(value, Mapping) else None
    if value is None:
        raise CostModelError(f"{label(entry, index)}: field {name} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CostModelError(f"{label(entry, index)}: field {name} must be a finite number, "
                             f"got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise CostModelError(f"{label(entry, index)}: field {name} must be {bound}, "
                             f"got {value!r}")
    return float(value)


def model_bytes(entry: Mapping[str, Any], index: int | None, fmt: str) -> float:
    """The level's .tflite size in `fmt`; int8 may also come from `tflite_int8_bytes`."""
    sizes = entry.get("tflite_bytes") if isinstance(entry, Mapping) else None
    if fmt == "int8" and not (isinstance(sizes, Mapping) and "int8" in sizes):
        if isinstance(entry, Mapping) and "tflite_int8_bytes" in entry:
            return number(entry, index, "tflite_int8_bytes", positive=True)
    return number(entry, index, "tflite_bytes", fmt, positive=True)


def host_latency(entry: Mapping[str, Any], index: int | None, fmt: str) -> float:
    """Host LiteRT latency of `fmt` as the ladder build measured it (default kernels)."""
    lat = entry.get("latency_ms") if isinstance(entry, Mapping) else None
    if fmt == "int8" and not (isinstance(lat, Mapping) and "int8" in lat):
        if isinstance(entry, Mapping) and "latency_ms_int8" in entry:
            return number(entry, index, "latency_ms_int8", positive=True)
    return number(entry, index, "latency_ms", fmt, positive=True)


def check_format(board: Board, fmt: str | None) -> str:
    """`fmt` (default: the board's preferred format), refused unless the board accepts it."""
    fmt = board.preferred_format if fmt is None else fmt
    if fmt not in board.formats:
        raise CostModelError(
            f"board {board.id!r} does not accept format {fmt!r} "
            f"(its formats: {', '.join(board.formats)}; known formats: {', '.join(FORMATS)})"
        )
    return fmt


def fractions(levels: Any) -> list[float]:
    """The levels' pruning fractions, checked: a non-empty list in ascending order."""
    if not isinstance(levels, Sequence) or isinstance(levels, str) or not levels:
        raise CostModelError("ladder levels: expected a non-empty list of level entries")
    out = [number(e, i, "level") for i, e in enumerate(levels)]
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise CostModelError(f"ladder levels must be in ascending order of fraction, got {out}")
    return out


def json_float(x: float) -> float | str | None:
    """A float for JSON: NaN as null, infinity as "inf"."""
    if math.isnan(x):
        return None
    return "inf" if math.isinf(x) else x
