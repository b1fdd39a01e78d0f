"""Per-device cost model: does a ladder level fit a board, and how long does it take there.

Inputs are the ladder's measured per-level costs (`manifest.json` `levels`: `macs`,
`tflite_bytes[fmt]`, `tflm_arena_bytes`, `peak_activation_bytes`, host `latency_ms[fmt]`) and
the catalog's board facts (`slimedge.devices.catalog.Board`). Nothing here hard-codes a board.

The model (times in ms, bytes in B, MACs per inference):

- Host calibration, per format, over the ladder's levels (non-negative least squares on
  relative error, `calibrate_host`)::

      t_host(L) = t0 + MACs(L) / R_host                       ("macs")
      t_host(L) = t0 + MACs(L) / R_host + bytes(L) / B_host   ("macs+bytes", bytes = tflite_bytes)

  The third term is kept only if it earns its place: its leave-one-out relative RMS error must
  be below `BYTES_TERM_GAIN` x that of the two-term fit (across a ladder MACs and weight bytes
  shrink together, so the third term usually just fits noise). The fit reports R², the largest
  relative error and the per-level residuals.

- Inference on a board, format f (default: the board's preferred format)::

      t_inf(L, B) = overhead_B + MACs(L) / R_B(f)

  overhead_B = `compute.overhead`, R_B(f) = `board.throughput(f)` (effective MAC/s measured on
  published whole-model benchmarks, so kernel efficiency is already in it). How the host fit is
  used: it is the test of this form, not a factor in it. It measures, on a real runtime, how
  much of a level's latency is MAC-proportional (R², slope) and how much is fixed (t0). No
  host-derived correction is applied to boards: on the x86 host the fixed part is dominated by
  host-kernel specifics (measured on the x86_64 build host, LiteRT 2.3.0, one thread, `vgg`
  branch at 64x64x1, widths 0.125-1: XNNPACK int8 stayed at 0.27-0.28 ms from 0.66 M to 28.9 M
  MACs, R² 0.11 against MACs, while the same models without XNNPACK were affine in MACs,
  t0 0.22 ms + MACs / 63 GMAC/s, R² 0.99), and nothing in the catalog says how such work scales
  on a board. A low host R² is reported by `calibrate_host` as a warning that MACs explain latency
  poorly for that runtime/format.

- Transfer of one feature vector over the board's link::

      t_tx = 8 * len(encode(FeatureMessage(D features, device id))) / bandwidth_B + latency_B

  The message is the real wire form (`slimedge.runtime.frames.encode`: header, device id,
  D int8 values, CRC). Transport framing below it (MQTT, TCP/IP, BLE L2CAP) is not added: the
  catalog's link latency and (for BLE) application-level bandwidth stand for it.

- Memory fit, for the format that runs:

  - `mcu` (TFLite Micro, model read in place from flash):
    arena: `tflm_arena_bytes` <= sram x (1 - sram_reserved_fraction);
    flash: `tflite_bytes[f]` <= flash x (1 - flash_reserved_fraction).
    The arena was measured by the host build of TFLite Micro (64-bit pointers), a slight
    over-estimate for 32-bit MCUs.
  - `linux`, `edgetpu`, `gpu` (LiteRT):
    ram: `tflite_bytes[f]` + activations + `RUNTIME_RESIDENT_BYTES[class]` <= ram_budget, with
    activations = `peak_activation_bytes` (measured on the int8 model, one byte per element)
    x `ACTIVATION_ELEMENT_BYTES[f]`; storage: `tflite_bytes[f]` <= storage.

  Margins are budget - need in bytes (negative: does not fit). `binding` names the violated
  constraint with the largest shortfall relative to its budget (None when the level fits).

- Aggregator: `t_agg = overhead + head_MACs / R` on the aggregator board, or
  `t_host(head_MACs)` from a host fit when the aggregator is a host outside the catalog;
  head_MACs = V x D (pooling) + classifier MACs (`head_macs`).

- System latency of an assignment (views run in parallel, one branch per device)::

      T = max_devices (t_inf + t_tx) + t_agg

`CostTable` precomputes every (device, level) figure as NumPy arrays with the same code that
`assess` runs for one pair, so the planner's memory pre-check is an array lookup.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimedge.devices.catalog import FORMATS, MCU, Board
from slimedge.devices.fleet import Aggregator, Fleet
from slimedge.errors import SlimEdgeError

__all__ = [
    "ACTIVATION_ELEMENT_BYTES",
    "BYTES_TERM_GAIN",
    "LOW_R2",
    "RUNTIME_RESIDENT_BYTES",
    "Assessment",
    "CostModelError",
    "CostTable",
    "HostFit",
    "aggregator_ms",
    "assess",
    "calibrate_host",
    "head_macs",
    "inference_ms",
    "least_pruned_fitting_level",
    "message_bytes",
    "no_fit_message",
    "transfer_ms",
]

# Resident memory of the LiteRT runtime process on a hosted board, added to every model's RAM
# need. TOOLCHAIN.md: ai-edge-litert 2.3.0 is ~40 MB resident; measured on the x86_64 build host
# (Python 3.11 + NumPy + LiteRT 2.3.0, one interpreter after invoke(): 38.2 MiB VmRSS), rounded
# up to 40 MiB. Assumption: the Edge TPU and GPU delegates add nothing on top (no measured
# figure; a GPU context can be far larger, so gpu boards may be optimistic here).
LITERT_RESIDENT_BYTES = 40 * 2**20
RUNTIME_RESIDENT_BYTES: Mapping[str, int] = {
    "linux": LITERT_RESIDENT_BYTES,
    "edgetpu": LITERT_RESIDENT_BYTES,
    "gpu": LITERT_RESIDENT_BYTES,
}

# Bytes per activation element when a level runs in format f, relative to the int8 model on
# which `peak_activation_bytes` is measured. Float formats compute in float32 on the LiteRT CPU
# kernels (float16 weights are dequantized; dynamic-range keeps float activations); taking
# 4 bytes for float16 on a GPU delegate (which may keep fp16) errs on the safe side.
ACTIVATION_ELEMENT_BYTES: Mapping[str, int] = {
    "int8": 1,
    "dynamic": 4,
    "float16": 4,
    "float32": 4,
}

# The bytes term of the host fit is kept only when its leave-one-out relative RMS error is
# below this fraction of the MACs-only fit's (it must cut the out-of-sample error by 10%).
BYTES_TERM_GAIN = 0.9
# A host fit with R² below this says MACs explain that format's latency poorly.
LOW_R2 = 0.8

_TERMS = ("macs", "macs+bytes")


class CostModelError(SlimEdgeError, ValueError):
    """A level entry, board, format or assignment the cost model cannot use; names it."""


# --------------------------------------------------------------------------- level fields


def _label(entry: Mapping[str, Any], index: int | None) -> str:
    level = entry.get("level", "?") if isinstance(entry, Mapping) else "?"
    where = f"levels[{index}] " if index is not None else ""
    return f"{where}(level {level})"


def _number(entry: Mapping[str, Any], index: int | None, key: str, sub: str | None = None,
            *, positive: bool = False) -> float:
    """`entry[key]` (or `entry[key][sub]`) as a finite number >= 0 (> 0 with `positive`)."""
    name = f"'{key}'" + (f"['{sub}']" if sub else "")
    if not isinstance(entry, Mapping):
        raise CostModelError(f"{_label(entry, index)}: expected a level entry (a mapping)")
    value: Any = entry.get(key)
    if sub is not None:
        value = value.get(sub) if isinstance(value, Mapping) else None
    if value is None:
        raise CostModelError(f"{_label(entry, index)}: field {name} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CostModelError(f"{_label(entry, index)}: field {name} must be a finite number, "
                             f"got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise CostModelError(f"{_label(entry, index)}: field {name} must be {bound}, "
                             f"got {value!r}")
    return float(value)


def _model_bytes(entry: Mapping[str, Any], index: int | None, fmt: str) -> float:
    """The level's .tflite size in `fmt`; int8 may also come from `tflite_int8_bytes`."""
    sizes = entry.get("tflite_bytes") if isinstance(entry, Mapping) else None
    if fmt == "int8" and not (isinstance(sizes, Mapping) and "int8" in sizes):
        if isinstance(entry, Mapping) and "tflite_int8_bytes" in entry:
            return _number(entry, index, "tflite_int8_bytes", positive=True)
    return _number(entry, index, "tflite_bytes", fmt, positive=True)


def _host_latency(entry: Mapping[str, Any], index: int | None, fmt: str) -> float:
    lat = entry.get("latency_ms") if isinstance(entry, Mapping) else None
    if fmt == "int8" and not (isinstance(lat, Mapping) and "int8" in lat):
        if isinstance(entry, Mapping) and "latency_ms_int8" in entry:
            return _number(entry, index, "latency_ms_int8", positive=True)
    return _number(entry, index, "latency_ms", fmt, positive=True)


def _check_format(board: Board, fmt: str | None) -> str:
    fmt = board.preferred_format if fmt is None else fmt
    if fmt not in board.formats:
        raise CostModelError(
            f"board {board.id!r} does not accept format {fmt!r} "
            f"(its formats: {', '.join(board.formats)}; known formats: {', '.join(FORMATS)})"
        )
    return fmt


# --------------------------------------------------------------------------- host calibration


@dataclass(frozen=True)
class HostFit:
    """Host latency of one format across ladder levels: t0 + MACs/R_host (+ bytes/B_host)."""

    fmt: str
    terms: str  # "macs" or "macs+bytes"
    t0_ms: float
    ms_per_mac: float  # 1 / R_host, in ms
    ms_per_byte: float  # 1 / B_host, in ms (0 for "macs")
    r2: float  # on the measured latencies; nan when they do not vary
    max_rel_error: float
    loo_rel_rms: Mapping[str, float]  # leave-one-out relative RMS error per candidate form
    residuals: tuple[Mapping[str, float], ...]  # per level
    host: Mapping[str, Any] = field(default_factory=dict)

    @property
    def r_host_mac_per_s(self) -> float:
        """Host MAC/s of the MAC-proportional part (inf when latency did not grow with MACs)."""
        return math.inf if self.ms_per_mac == 0 else 1e3 / self.ms_per_mac

    @property
    def b_host_byte_per_s(self) -> float:
        return math.inf if self.ms_per_byte == 0 else 1e3 / self.ms_per_byte

    @property
    def warning(self) -> str | None:
        """Why this fit should not be trusted to say latency follows MACs, or None."""
        if math.isnan(self.r2):
            return f"{self.fmt}: host latency does not vary across levels (R² undefined)"
        if self.r2 < LOW_R2:
            return (f"{self.fmt}: R² {self.r2:.3f} < {LOW_R2}: MACs explain this format's "
                    "host latency poorly (largely fixed cost on this host)")
        return None

    def fixed_share(self, macs: float, nbytes: float = 0.0) -> float:
        """Fraction of the predicted host latency at (macs, bytes) that is the fixed t0."""
        return self.t0_ms / self.predict(macs, nbytes)

    def predict(self, macs: float | np.ndarray, nbytes: float | np.ndarray = 0.0) -> Any:
        """Predicted host latency (ms) of `macs` MACs (and `nbytes` model bytes)."""
        out = self.t0_ms + np.asarray(macs, float) * self.ms_per_mac \
            + np.asarray(nbytes, float) * self.ms_per_byte
        return float(out) if np.ndim(out) == 0 else out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.fmt,
            "terms": self.terms,
            "t0_ms": self.t0_ms,
            "ms_per_mac": self.ms_per_mac,
            "ms_per_byte": self.ms_per_byte,
            "r_host_mac_per_s": _json_float(self.r_host_mac_per_s),
            "b_host_byte_per_s": _json_float(self.b_host_byte_per_s),
            "r2": _json_float(self.r2),
            "max_rel_error": self.max_rel_error,
            "loo_rel_rms": {k: _json_float(v) for k, v in self.loo_rel_rms.items()},
            "warning": self.warning,
            "residuals": [dict(r) for r in self.residuals],
            "host": dict(self.host),
        }


def _json_float(x: float) -> float | str | None:
    if math.isnan(x):
        return None
    return "inf" if math.isinf(x) else x


def _nnls_relative(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the relative squared error sum(((Xc - y)/y)^2)."""
    from scipy.optimize import nnls

    A = X / y[:, None]
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0  # a column of zeros keeps coefficient 0
    coef, _ = nnls(A / scale, np.ones_like(y))
    coef[coef < 1e-9] = 0.0  # a term worth under 1e-9 of the latency is rounding, not a term
    return coef / scale


def _loo_rel_rms(X: np.ndarray, y: np.ndarray) -> float:
    n = len(y)
    if n <= X.shape[1]:
        return math.nan
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        coef = _nnls_relative(X[keep], y[keep])
        errs.append((y[i] - X[i] @ coef) / y[i])
    return float(np.sqrt(np.mean(np.square(errs))))


def calibrate_host(levels: Sequence[Mapping[str, Any]], fmt: str = "int8", *,
                   terms: str = "auto", host: Mapping[str, Any] | None = None) -> HostFit:
    """Fit host latency of `fmt` across `levels` (ladder manifest entries).

    `terms`: "macs" (t0 + MACs/R), "macs+bytes" (+ tflite bytes/B), or "auto" (the bytes term
    only where it earns its place, see the module docstring). `host` (the manifest's `host`)
    is kept with the fit for provenance.
    """
    if fmt not in FORMATS:
        raise CostModelError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if terms not in (*_TERMS, "auto"):
        raise CostModelError(f"terms {terms!r}: expected 'macs', 'macs+bytes' or 'auto'")
    if not isinstance(levels, Sequence) or len(levels) < 2:
        n = len(levels) if isinstance(levels, Sequence) else 0
        raise CostModelError(f"host calibration of {fmt} needs at least 2 levels, got {n}")
    macs = np.array([_number(e, i, "macs", positive=True) for i, e in enumerate(levels)])
    nbytes = np.array([_model_bytes(e, i, fmt) for i, e in enumerate(levels)])
    y = np.array([_host_latency(e, i, fmt) for i, e in enumerate(levels)])
    fractions = [float(e.get("level", math.nan)) for e in levels]
    designs = {
        "macs": np.c_[np.ones_like(y), macs],
        "macs+bytes": np.c_[np.ones_like(y), macs, nbytes],
    }
    loo = {name: _loo_rel_rms(X, y) for name, X in designs.items()}
    if terms == "auto":
        with_bytes, without = loo["macs+bytes"], loo["macs"]
        earns = (not math.isnan(with_bytes) and not math.isnan(without)
                 and with_bytes < BYTES_TERM_GAIN * without)
        terms = "macs+bytes" if earns else "macs"
    coef = _nnls_relative(designs[terms], y)
    pred = designs[terms] @ coef
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - pred) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    rel = (y - pred) / y  # same sign as the residual: positive = slower than predicted
    residuals = tuple(
        {
            "index": i,
            "level": fractions[i],
            "macs": float(macs[i]),
            "bytes": float(nbytes[i]),
            "measured_ms": float(y[i]),
            "predicted_ms": float(pred[i]),
            "residual_ms": float(y[i] - pred[i]),
            "rel_error": float(rel[i]),
        }
        for i in range(len(y))
    )
    return HostFit(
        fmt=fmt,
        terms=terms,
        t0_ms=float(coef[0]),
        ms_per_mac=float(coef[1]),
        ms_per_byte=float(coef[2]) if terms == "macs+bytes" else 0.0,
        r2=r2,
        max_rel_error=float(np.max(np.abs(rel))),
        loo_rel_rms=loo,
        residuals=residuals,
        host=dict(host or {}),
    )


# --------------------------------------------------------------------------- one board


def inference_ms(level_entry: Mapping[str, Any], board: Board, fmt: str | None = None) -> float:
    """Predicted time of one branch inference of this level on `board` (module docstring)."""
    fmt = _check_format(board, fmt)
    macs = _number(level_entry, None, "macs", positive=True)
    return float(_inference(np.array([macs]), board, fmt)[0])


def _inference(macs: np.ndarray, board: Board, fmt: str) -> np.ndarray:
    return (board.compute.overhead_s + macs / board.throughput(fmt)) * 1e3


def message_bytes(feature_dim: int, device_id: str = "cam00", dtype: str = "int8") -> int:
    """Size of one encoded feature message (`slimedge.runtime.frames.encode`)."""
    from slimedge.runtime.frames import FeatureMessage, FrameError, encode

    if isinstance(feature_dim, bool) or not isinstance(feature_dim, int | np.integer) \
            or feature_dim < 1:
        raise CostModelError(f"feature_dim must be a whole number >= 1, got {feature_dim!r}")
    if dtype not in ("int8", "float32"):
        raise CostModelError(f"feature dtype {dtype!r}: expected 'int8' or 'float32'")
    int8 = dtype == "int8"
    try:
        msg = FeatureMessage(view=0, seq=0, timestamp_ns=0, device=device_id,
                             features=np.zeros(int(feature_dim), dtype),
                             scale=1.0 if int8 else None, zero_point=0 if int8 else None)
    except FrameError as exc:
        raise CostModelError(f"device {device_id!r}: {exc}") from None
    return len(encode(msg))


def transfer_ms(board: Board, feature_dim: int, device_id: str = "cam00",
                dtype: str = "int8") -> float:
    """Time to send one D-wide feature message over `board`'s link to the aggregator."""
    nbytes = message_bytes(feature_dim, device_id, dtype)
    return (8.0 * nbytes / board.link.bandwidth_bps + board.link.latency_s) * 1e3


@dataclass(frozen=True)
class _Memory:
    """Memory needs and budgets of some levels on one board (arrays over levels)."""

    ram_kind: str  # "arena" (mcu) or "ram"
    storage_kind: str  # "flash" (mcu) or "storage"
    ram_needed: np.ndarray
    ram_budget: int
    storage_needed: np.ndarray
    storage_budget: int
    parts: Mapping[str, Any]  # what the RAM need is made of

    @property
    def ram_margin(self) -> np.ndarray:
        return self.ram_budget - self.ram_needed

    @property
    def storage_margin(self) -> np.ndarray:
        return self.storage_budget - self.storage_needed

    def binding(self) -> np.ndarray:
        """Per level: the violated constraint with the largest relative shortfall, or ''."""
        ram_short = -self.ram_margin / self.ram_budget
        sto_short = -self.storage_margin / self.storage_budget
        out = np.full(self.ram_needed.shape, "", dtype="<U8")
        ram_bad, sto_bad = ram_short > 0, sto_short > 0
        out[sto_bad] = self.storage_kind
        out[ram_bad & (~sto_bad | (ram_short >= sto_short))] = self.ram_kind
        return out


def _memory(levels: Sequence[Mapping[str, Any]], board: Board, fmt: str) -> _Memory:
    idx = range(len(levels))
    model = np.array([_model_bytes(levels[i], i, fmt) for i in idx], dtype=np.int64)
    if board.board_class == MCU:
        arena = np.array([_number(levels[i], i, "tflm_arena_bytes", positive=True) for i in idx],
                         dtype=np.int64)
        return _Memory("arena", "flash", arena, board.model_memory_bytes, model,
                       board.model_storage_bytes, {"arena": arena})
    act = np.array([_number(levels[i], i, "peak_activation_bytes") for i in idx],
                   dtype=np.int64) * ACTIVATION_ELEMENT_BYTES[fmt]
    runtime = RUNTIME_RESIDENT_BYTES[board.board_class]
    return _Memory("ram", "storage", model + act + runtime, board.model_memory_bytes, model,
                   board.model_storage_bytes,
                   {"model": model, "activations": act, "runtime": runtime})


def _need_text(kind: str, needed: int, budget: int) -> str:
    what = {"arena": "arena", "flash": "flash", "ram": "RAM", "storage": "storage"}[kind]
    return f"needs {needed:,} B of {what}, has {budget:,} B"


def _misfit_text(who: str, level: str, mem: _Memory, j: int) -> str:
    parts = []
    if mem.ram_margin[j] < 0:
        text = _need_text(mem.ram_kind, int(mem.ram_needed[j]), mem.ram_budget)
        if mem.ram_kind == "ram":
            p = mem.parts
            text += (f" (model {int(p['model'][j]):,} + activations "
                     f"{int(p['activations'][j]):,} + runtime {int(p['runtime']):,})")
        parts.append(text)
    if mem.storage_margin[j] < 0:
        parts.append(_need_text(mem.storage_kind, int(mem.storage_needed[j]),
                                mem.storage_budget))
    return f"{who}: level {level} " + "; ".join(parts)


@dataclass(frozen=True)
class Assessment:
    """Does a level fit a board, and how fast does it run there (ms, bytes)."""

    fits: bool
    binding: str | None  # "arena", "flash", "ram", "storage", or None when it fits
    ram_margin_bytes: int
    storage_margin_bytes: int
    inference_ms: float
    transfer_ms: float
    total_ms: float
    format: str
    details: Mapping[str, Any]


def assess(level_entry: Mapping[str, Any], board: Board, *, feature_dim: int,
           fmt: str | None = None, device_id: str = "cam00") -> Assessment:
    """Fit and speed of one ladder level on one board (`device_id` sizes the message)."""
    fmt = _check_format(board, fmt)
    level = f"{level_entry.get('level')}" if isinstance(level_entry, Mapping) else "?"
    row = _Row.compute([level_entry], board, fmt, feature_dim, device_id)
    return row.assessment(0, f"{device_id} ({board.id})", level)


# --------------------------------------------------------------------------- many at once


@dataclass(frozen=True)
class _Row:
    """Every figure of some levels on one board: the code `assess` and `CostTable` share."""

    board: Board
    fmt: str
    macs: np.ndarray
    inference_ms: np.ndarray
    transfer_ms: float
    memory: _Memory

    @classmethod
    def compute(cls, levels: Sequence[Mapping[str, Any]], board: Board, fmt: str,
                feature_dim: int, device_id: str, dtype: str = "int8") -> _Row:
        macs = np.array([_number(e, i, "macs", positive=True) for i, e in enumerate(levels)])
        return cls(board, fmt, macs, _inference(macs, board, fmt),
                   transfer_ms(board, feature_dim, device_id, dtype), _memory(levels, board, fmt))

    def assessment(self, j: int, who: str, level: str) -> Assessment:
        mem = self.memory
        fits = bool(mem.ram_margin[j] >= 0 and mem.storage_margin[j] >= 0)
        binding = str(mem.binding()[j]) or None
        details: dict[str, Any] = {
            "board": self.board.id,
            "board_class": self.board.board_class,
            "level": level,
            "macs": float(self.macs[j]),
            "throughput_mac_per_s": self.board.throughput(self.fmt),
            "overhead_ms": self.board.compute.overhead_s * 1e3,
            "ram_kind": mem.ram_kind,
            "ram_needed_bytes": int(mem.ram_needed[j]),
            "ram_budget_bytes": mem.ram_budget,
            "storage_kind": mem.storage_kind,
            "storage_needed_bytes": int(mem.storage_needed[j]),
            "storage_budget_bytes": mem.storage_budget,
        }
        if mem.ram_kind == "ram":
            details["ram_parts_bytes"] = {k: int(v if np.ndim(v) == 0 else v[j])
                                          for k, v in mem.parts.items()}
        if not fits:
            details["message"] = _misfit_text(who, level, mem, j)
        inf = float(self.inference_ms[j])
        return Assessment(fits, binding, int(mem.ram_margin[j]), int(mem.storage_margin[j]),
                          inf, self.transfer_ms, inf + self.transfer_ms, self.fmt, details)


@dataclass(frozen=True)
class CostTable:
    """(devices x levels) arrays of latency, fit and margins; rows follow `devices`."""

    devices: tuple[str, ...]
    boards: tuple[str, ...]
    formats: tuple[str, ...]
    levels: np.ndarray  # (L,) level fractions, ascending
    macs: np.ndarray  # (L,)
    inference_ms: np.ndarray  # (N, L)
    transfer_ms: np.ndarray  # (N,)
    total_ms: np.ndarray  # (N, L) inference + transfer
    fits: np.ndarray  # (N, L) bool
    ram_needed: np.ndarray  # (N, L) bytes
    ram_budget: np.ndarray  # (N,)
    ram_margin: np.ndarray  # (N, L)
    storage_needed: np.ndarray  # (N, L)
    storage_budget: np.ndarray  # (N,)
    storage_margin: np.ndarray  # (N, L)
    binding: np.ndarray  # (N, L) str: "arena" | "flash" | "ram" | "storage" | "" (fits)
    feature_dim: int
    _rows: tuple[_Row, ...] = field(repr=False, compare=False)

    @classmethod
    def build(cls, ladder_levels: Sequence[Mapping[str, Any]], fleet: Fleet, feature_dim: int,
              *, formats: Mapping[str, str] | None = None,
              feature_dtype: str = "int8") -> CostTable:
        """Costs of every ladder level on every device of `fleet` (overrides applied).

        `formats`: device id -> format (default: each board's preferred format).
        """
        formats = dict(formats or {})
        unknown = sorted(set(formats) - {d.id for d in fleet.devices})
        if unknown:
            raise CostModelError(f"formats: fleet {fleet.name!r} has no device {unknown[0]!r}")
        pairs = [(d.id, d.board, formats.get(d.id)) for d in fleet.devices]
        return cls._build(ladder_levels, pairs, feature_dim, feature_dtype)

    @classmethod
    def for_boards(cls, ladder_levels: Sequence[Mapping[str, Any]],
                   boards: Mapping[str, Board] | Iterable[Board], feature_dim: int,
                   *, feature_dtype: str = "int8") -> CostTable:
        """Costs on catalog boards themselves (a device per board, named by board id)."""
        items = boards.values() if isinstance(boards, Mapping) else boards
        pairs = [(b.id, b, None) for b in items]
        return cls._build(ladder_levels, pairs, feature_dim, feature_dtype)

    @classmethod
    def _build(cls, levels: Sequence[Mapping[str, Any]],
               pairs: list[tuple[str, Board, str | None]], feature_dim: int,
               dtype: str) -> CostTable:
        if not isinstance(levels, Sequence) or not levels:
            raise CostModelError("ladder levels: expected a non-empty list of level entries")
        if not pairs:
            raise CostModelError("no devices to cost")
        fractions = np.array([_number(e, i, "level") for i, e in enumerate(levels)])
        if np.any(np.diff(fractions) <= 0):
            raise CostModelError(f"ladder levels must be in ascending order of fraction, got "
                                 f"{fractions.tolist()}")
        rows = tuple(_Row.compute(levels, board, _check_format(board, fmt), feature_dim,
                                  device_id, dtype) for device_id, board, fmt in pairs)
        stack = np.stack
        ram_margin = stack([r.memory.ram_margin for r in rows])
        storage_margin = stack([r.memory.storage_margin for r in rows])
        inference = stack([r.inference_ms for r in rows])
        transfer = np.array([r.transfer_ms for r in rows])
        return cls(
            devices=tuple(p[0] for p in pairs),
            boards=tuple(p[1].id for p in pairs),
            formats=tuple(r.fmt for r in rows),
            levels=fractions,
            macs=rows[0].macs,
            inference_ms=inference,
            transfer_ms=transfer,
            total_ms=inference + transfer[:, None],
            fits=(ram_margin >= 0) & (storage_margin >= 0),
            ram_needed=stack([r.memory.ram_needed for r in rows]),
            ram_budget=np.array([r.memory.ram_budget for r in rows], dtype=np.int64),
            ram_margin=ram_margin,
            storage_needed=stack([r.memory.storage_needed for r in rows]),
            storage_budget=np.array([r.memory.storage_budget for r in rows], dtype=np.int64),
            storage_margin=storage_margin,
            binding=stack([r.memory.binding() for r in rows]),
            feature_dim=int(feature_dim),
            _rows=rows,
        )

    def device_index(self, device: str | int) -> int:
        if isinstance(device, int | np.integer) and not isinstance(device, bool):
            if not 0 <= device < len(self.devices):
                raise CostModelError(f"device index {device} out of range "
                                     f"0..{len(self.devices) - 1}")
            return int(device)
        if device not in self.devices:
            raise CostModelError(f"no device {device!r} in the cost table "
                                 f"(devices: {', '.join(self.devices)})")
        return self.devices.index(device)

    def _level_index(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, int | np.integer) \
                or not 0 <= level < len(self.levels):
            raise CostModelError(f"level index {level!r} out of range 0..{len(self.levels) - 1}")
        return int(level)

    def _who(self, i: int) -> str:
        return f"{self.devices[i]} ({self.boards[i]})"

    def assessment(self, device: str | int, level: int) -> Assessment:
        """The `assess` result of one (device, level index) pair, from the table."""
        i, j = self.device_index(device), self._level_index(level)
        return self._rows[i].assessment(j, self._who(i), f"{j} ({self.levels[j]:g})")

    def message(self, device: str | int, level: int) -> str | None:
        """Why a level does not fit a device (bytes needed vs available), or None."""
        i, j = self.device_index(device), self._level_index(level)
        if self.fits[i, j]:
            return None
        return _misfit_text(self._who(i), f"{j} ({self.levels[j]:g})", self._rows[i].memory, j)


def least_pruned_fitting_level(cost_table: CostTable, device: str | int) -> int | None:
    """The smallest level index that fits `device`, or None when none does."""
    fitting = np.flatnonzero(cost_table.fits[cost_table.device_index(device)])
    return int(fitting[0]) if fitting.size else None


def no_fit_message(cost_table: CostTable, device: str | int) -> str | None:
    """For a device no level fits: what the most pruned level needs vs what it has."""
    i = cost_table.device_index(device)
    if cost_table.fits[i].any():
        return None
    last = len(cost_table.levels) - 1
    return "no level fits; " + str(cost_table.message(i, last))


# --------------------------------------------------------------------------- the system


def head_macs(views: int, feature_dim: int, classifier_macs: int) -> int:
    """Head MACs per frame: pooling V x D features (one op each) + the classifier's MACs."""
    for name, value in (("views", views), ("feature_dim", feature_dim)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise CostModelError(f"{name} must be a whole number >= 1, got {value!r}")
    if isinstance(classifier_macs, bool) or not isinstance(classifier_macs, int | np.integer) \
            or classifier_macs < 0:
        raise CostModelError(f"classifier_macs must be a whole number >= 0, "
                             f"got {classifier_macs!r}")
    return int(views) * int(feature_dim) + int(classifier_macs)


def aggregator_ms(head_mac_count: float, aggregator: Board | Aggregator | str, *,
                  host_fit: HostFit | None = None, fmt: str | None = None,
                  head_bytes: float = 0.0) -> float:
    """Time to pool V features and run the classifier on the aggregator.

    A catalog board (or a fleet `Aggregator` of kind board): overhead + head MACs / R(fmt).
    A host (a name, or an `Aggregator` of kind host): `host_fit.predict(head MACs, head_bytes)`.
    """
    is_number = isinstance(head_mac_count, int | float | np.number) \
        and not isinstance(head_mac_count, bool)
    if not is_number or not math.isfinite(head_mac_count) or head_mac_count < 0:
        raise CostModelError(f"head MACs must be a finite number >= 0, got {head_mac_count!r}")
    board: Board | None = None
    name = aggregator if isinstance(aggregator, str) else None
    if isinstance(aggregator, Board):
        board = aggregator
    elif isinstance(aggregator, Aggregator):
        board, name = aggregator.board, aggregator.name
    if board is not None:
        fmt = _check_format(board, fmt)
        return float(_inference(np.array([float(head_mac_count)]), board, fmt)[0])
    if host_fit is None:
        raise CostModelError(f"aggregator {name!r} is a host outside the catalog: pass host_fit "
                             "(calibrate_host on the ladder) to time it")
    return float(host_fit.predict(float(head_mac_count), float(head_bytes)))
