"""Fits of a per-level cost: is it MAC-linear, or per layer? (kernel profiles, host checks)

`fit_measured` fits any per-level figure: the instructions counted on an emulated core, which
`slimedge.devices.kernel_profiles` turns into the kernel profiles the "per-layer" cost model
uses, or the latencies the ladder build timed on its host (`fit_kernel_set(s)`), which only
`tools/fit_cost_model.py` reports, as a check: no host timing enters a plan.

Two forms, each fitted over the ladder's levels by non-negative least squares on
relative error (every level counts alike, fast or slow):

- "mac" (MAC-linear)::

      t(L) = t0 + MACs(L) / R

- "per-layer" (over the operators of the level's int8 graph, `levels[i]["layers"]`, counted
  by `slimedge.profile.layers`)::

      t(L) = c_op x n_ops + sum_kind MACs_kind(L) / R_kind + out_elements(L) / E

  kinds conv, depthwise, dense, pool (pool "MACs" = input elements read); c_op is the fixed
  cost of dispatching one operator, E the rate at which outputs are requantised and stored.
  Columns that are zero at every level (a branch without depthwise layers) are dropped.

Host timing per kernel set: `levels[i]["latency_ms_kernels"][k]`, the int8 branch timed by
the ladder build under LiteRT's kernel sets (`slimedge.profile.litert.KERNELS`).
`KERNEL_SET_OF_CLASS` names the host set that stands for a board class in that check
(microcontrollers: "reference", bit-exact with TFLite Micro; Linux boards: "xnnpack").

The fit-quality rule (`choose_form`), per kernel set:

1. "board" when the MAC-linear fit has R² < `LOW_R2` or no MAC slope: the host's latency under
   that kernel set does not follow the work (XNNPACK on an AMX host is flat across the demo
   ladder, `docs/benchmarks.md`), so it says nothing about a board (no kernel profile is
   written from such a fit).
2. "per-layer" when its leave-one-out relative RMS error is below `FORM_GAIN` x the MAC-linear
   fit's (the extra terms must cut the out-of-sample error by 10 %).
3. "mac" otherwise (including ladders with too few levels to test the per-layer form).

`calibrate_host` is the older per-format host fit (t0 + MACs/R, optionally + bytes/B) of the
default-kernel latencies the ladder records per format; `tools/fit_cost_model.py` reports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimedge.devices.catalog import EDGETPU, FORMATS, GPU, LINUX, MCU
from slimedge.devices.level_fields import (
    CostModelError,
    host_latency,
    json_float,
    model_bytes,
    number,
)

__all__ = [
    "BYTES_TERM_GAIN",
    "FORM_GAIN",
    "KERNEL_SETS",
    "KERNEL_SET_OF_CLASS",
    "LAYER_COLUMNS",
    "LOW_R2",
    "OP_KINDS",
    "FormFit",
    "HostFit",
    "KernelFit",
    "calibrate_host",
    "choose_form",
    "fit_kernel_set",
    "fit_kernel_sets",
    "fit_measured",
    "has_calibration",
    "layer_work",
]

KERNEL_SETS = ("xnnpack", "builtin", "reference")  # = slimedge.profile.litert.KERNELS
KERNEL_SET_OF_CLASS: Mapping[str, str] = {
    MCU: "reference",
    LINUX: "xnnpack",
    EDGETPU: "xnnpack",
    GPU: "xnnpack",
}
OP_KINDS = ("conv", "depthwise", "dense", "pool")  # kinds with a MAC term (= profile.layers)

# The bytes term of the host fit is kept only when its leave-one-out relative RMS error is
# below this fraction of the MACs-only fit's (it must cut the out-of-sample error by 10%).
BYTES_TERM_GAIN = 0.9
# The per-layer form is chosen only when it cuts the MAC-linear form's LOO error by 10 %.
FORM_GAIN = 0.9
# A fit with R² below this says MACs explain that latency poorly.
LOW_R2 = 0.8

_TERMS = ("macs", "macs+bytes")


# --------------------------------------------------------------------------- fitting helpers


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


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else math.nan


# --------------------------------------------------------------------------- kernel-set fits


@dataclass(frozen=True)
class FormFit:
    """One model form fitted to one kernel set's measured latencies (ms)."""

    form: str  # "mac" or "per-layer"
    columns: tuple[str, ...]  # what each coefficient multiplies
    coef: tuple[float, ...]  # ms per unit of each column
    predicted_ms: tuple[float, ...]  # per level
    r2: float
    max_rel_error: float
    loo_rel_rms: float  # nan when there are too few levels to leave one out

    @property
    def ms_per_mac(self) -> float:
        """The MAC slope: of MACs ("mac") or of conv MACs ("per-layer"); 0 when flat."""
        name = "macs" if self.form == "mac" else "macs_conv"
        return dict(zip(self.columns, self.coef, strict=True)).get(name, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "coefficients_ms": dict(zip(self.columns, self.coef,
                                                               strict=True)),
                "predicted_ms": list(self.predicted_ms), "r2": json_float(self.r2),
                "max_rel_error": self.max_rel_error,
                "loo_rel_rms": json_float(self.loo_rel_rms)}


@dataclass(frozen=True)
class KernelFit:
    """Both forms fitted to one kernel set, and the form the rule picks."""

    kernel_set: str
    levels: tuple[float, ...]
    measured_ms: tuple[float, ...]
    fits: Mapping[str, FormFit]  # "mac" always; "per-layer" when the levels carry `layers`
    form: str  # "per-layer", "mac" or "board"
    reason: str

    @property
    def chosen(self) -> FormFit | None:
        """The fit of the chosen form (None for "board": the board's figures are used)."""
        return self.fits.get(self.form)

    def to_dict(self) -> dict[str, Any]:
        return {"kernel_set": self.kernel_set, "levels": list(self.levels),
                "measured_ms": list(self.measured_ms), "form": self.form,
                "reason": self.reason,
                "fits": {k: f.to_dict() for k, f in self.fits.items()}}


LAYER_COLUMNS = ("n_ops", *(f"macs_{k}" for k in OP_KINDS), "out_elements")


def layer_work(levels: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """(levels x `LAYER_COLUMNS`) per-operator work of each level (`levels[i]["layers"]`), or
    None when a level has no `layers`."""
    if not all(isinstance(e, Mapping) and "layers" in e for e in levels):
        return None
    names = LAYER_COLUMNS
    rows = []
    for i, e in enumerate(levels):
        layers = e["layers"]
        if not isinstance(layers, list) or not layers:
            raise CostModelError(f"levels[{i}] (level {e.get('level')}): field 'layers' must be "
                                 "a non-empty list of operators")
        row = dict.fromkeys(names, 0.0)
        for j, op in enumerate(layers):
            where = f"levels[{i}] (level {e.get('level')}) layers[{j}]"
            kind = op.get("kind") if isinstance(op, Mapping) else None
            if kind not in (*OP_KINDS, "other"):
                raise CostModelError(f"{where}: kind {kind!r} is not one of "
                                     f"{', '.join((*OP_KINDS, 'other'))}")
            row["n_ops"] += 1
            if kind != "other":
                row[f"macs_{kind}"] += number(op, None, "macs")
            row["out_elements"] += number(op, None, "out_elements")
        rows.append([row[n] for n in names])
    return np.array(rows, float)


def _layer_columns(levels: Sequence[Mapping[str, Any]]) -> tuple[list[str], np.ndarray] | None:
    """Per-layer design matrix without the columns that are zero at every level, or None."""
    X = layer_work(levels)
    if X is None:
        return None
    keep = [j for j in range(X.shape[1]) if np.any(X[:, j] > 0)]
    return [LAYER_COLUMNS[j] for j in keep], X[:, keep]


def _fit_form(form: str, columns: list[str], X: np.ndarray, y: np.ndarray) -> FormFit:
    coef = _nnls_relative(X, y)
    pred = X @ coef
    return FormFit(form, tuple(columns), tuple(float(c) for c in coef),
                   tuple(float(p) for p in pred), _r2(y, pred),
                   float(np.max(np.abs((y - pred) / y))), _loo_rel_rms(X, y))


def has_calibration(levels: Sequence[Mapping[str, Any]], kernel_set: str) -> bool:
    """Whether every level carries its latency under `kernel_set` (`latency_ms_kernels`)."""
    return bool(levels) and all(
        isinstance(e, Mapping) and isinstance(e.get("latency_ms_kernels"), Mapping)
        and kernel_set in e["latency_ms_kernels"] for e in levels)


def fit_kernel_set(levels: Sequence[Mapping[str, Any]], kernel_set: str) -> KernelFit:
    """Fit both forms to the levels' latencies under `kernel_set` and apply the rule."""
    if kernel_set not in KERNEL_SETS:
        raise CostModelError(f"kernel set {kernel_set!r} is not one of {', '.join(KERNEL_SETS)}")
    if not isinstance(levels, Sequence) or len(levels) < 2:
        raise CostModelError(f"a latency fit of kernel set {kernel_set} needs at least 2 "
                             "levels")
    y = np.array([number(e, i, "latency_ms_kernels", kernel_set, positive=True)
                  for i, e in enumerate(levels)])
    return fit_measured(levels, y, kernel_set)


def fit_measured(levels: Sequence[Mapping[str, Any]], measured: Sequence[float],
                 label: str) -> KernelFit:
    """Both forms fitted to any per-level cost of `levels` (ms, or instructions counted on an
    emulated board), and the rule's choice; `label` names what was measured."""
    y = np.asarray(measured, float)
    if y.shape != (len(levels),) or not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise CostModelError(f"{label}: expected one positive figure per level "
                             f"({len(levels)}), got {list(measured)!r}")
    macs = np.array([number(e, i, "macs", positive=True) for i, e in enumerate(levels)])
    fits = {"mac": _fit_form("mac", ["t0", "macs"], np.c_[np.ones_like(y), macs], y)}
    layer = _layer_columns(levels)
    if layer is not None:
        fits["per-layer"] = _fit_form("per-layer", layer[0], layer[1], y)
    form, reason = choose_form(fits)
    return KernelFit(label, tuple(number(e, i, "level") for i, e in enumerate(levels)),
                     tuple(float(v) for v in y), fits, form, reason)


def fit_kernel_sets(levels: Sequence[Mapping[str, Any]]) -> dict[str, KernelFit]:
    """`fit_kernel_set` for every kernel set every level was timed under."""
    return {k: fit_kernel_set(levels, k) for k in KERNEL_SETS if has_calibration(levels, k)}


def choose_form(fits: Mapping[str, FormFit]) -> tuple[str, str]:
    """The fit-quality rule (module docstring): ("per-layer" | "mac" | "board", why)."""
    mac = fits["mac"]
    if math.isnan(mac.r2) or mac.r2 < LOW_R2 or mac.ms_per_mac <= 0:
        r2 = "undefined" if math.isnan(mac.r2) else f"{mac.r2:.3f}"
        return "board", (f"MAC-linear R² {r2} < {LOW_R2} or no MAC slope: latency under this "
                         "kernel set does not follow the work here; board figures used")
    layer = fits.get("per-layer")
    if layer is None:
        return "mac", "no per-layer data (levels carry no 'layers')"
    if math.isnan(layer.loo_rel_rms) or math.isnan(mac.loo_rel_rms):
        return "mac", "too few levels to test the per-layer form out of sample"
    if layer.ms_per_mac <= 0:
        return "mac", "per-layer fit has no conv MAC slope"
    if layer.loo_rel_rms < FORM_GAIN * mac.loo_rel_rms:
        return "per-layer", (f"per-layer LOO rel RMS {layer.loo_rel_rms:.3f} < {FORM_GAIN} x "
                             f"MAC-linear {mac.loo_rel_rms:.3f}")
    return "mac", (f"per-layer LOO rel RMS {layer.loo_rel_rms:.3f} >= {FORM_GAIN} x "
                   f"MAC-linear {mac.loo_rel_rms:.3f}")


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
            "r_host_mac_per_s": json_float(self.r_host_mac_per_s),
            "b_host_byte_per_s": json_float(self.b_host_byte_per_s),
            "r2": json_float(self.r2),
            "max_rel_error": self.max_rel_error,
            "loo_rel_rms": {k: json_float(v) for k, v in self.loo_rel_rms.items()},
            "warning": self.warning,
            "residuals": [dict(r) for r in self.residuals],
            "host": dict(self.host),
        }



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
    macs = np.array([number(e, i, "macs", positive=True) for i, e in enumerate(levels)])
    nbytes = np.array([model_bytes(e, i, fmt) for i, e in enumerate(levels)])
    y = np.array([host_latency(e, i, fmt) for i, e in enumerate(levels)])
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

