"""How long one branch inference takes on a board: three selectable cost models.

A cost model is built over a ladder's levels and answers, for a board and a format, the
inference time of every level (`CostModel.inference_ms(board, fmt)` -> (L,) ms). By name
(`make_cost_model`, `COST_MODELS`):

- "mac" (board figures only)::

      t(L, B) = overhead_B + MACs(L) / R_B(f)

  overhead_B = `compute.overhead`, R_B(f) = `board.throughput(f)` (effective MAC/s measured
  on published whole-model benchmarks, so kernel efficiency is in it).

- "per-layer" (measured shape, board scale)::

      t(L, B) = t_mac(L0, B) x t_K(L) / t_K(L0)

  t_K is the fit, over the ladder's levels, of the branch's latency measured under the kernel
  set K that B's class runs (`slimedge.devices.calibration.KERNEL_SET_OF_CLASS`: TFLite
  Micro's reference arithmetic on microcontrollers, XNNPACK on Linux boards), in the form the
  fit-quality rule picks for K (per-layer, or MAC-linear; `calibration.choose_form`). L0 is
  the least-pruned level: the board's published figure sets the time of the full branch (the
  regime its benchmark measured), the measurement sets how time falls with pruning. Where the
  rule says K's latency does not follow the work on the measuring host ("board"), or the
  ladder carries no calibration for K, this is the "mac" time. The shape is measured on int8
  and applied to every format. `form(board)` says which applied.

- "authors" (the formula of the SlimEdge authors, for side-by-side scoring)::

      t(p, B) = 100 x exp(-2 p) x (1 + 2 (1 - perf_B))   [ms]

  p = the level's pruning fraction; perf_B in [0, 1] is the authors' "device performance"
  factor, which they drew per device. Here it is the board's place on a log scale of the
  throughputs of the boards the model was built for: log(R_B / R_min) / log(R_max / R_min)
  (1 when all are equal). MACs play no part.

`default_cost_model(levels)`: "per-layer" when the ladder carries calibration for a kernel set
a board class runs, else "mac".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from slimedge.devices.calibration import (
    KERNEL_SET_OF_CLASS,
    KernelFit,
    fit_kernel_set,
    has_calibration,
)
from slimedge.devices.catalog import Board
from slimedge.devices.level_fields import CostModelError, check_format, fractions, number

COST_MODELS = ("per-layer", "mac", "authors")


@runtime_checkable
class CostModel(Protocol):
    """Per-(board, level) inference time over the levels the model was built on."""

    name: str

    def inference_ms(self, board: Board, fmt: str | None = None) -> np.ndarray:
        """(L,) ms of one branch inference of each level on `board` in `fmt`."""
        ...

    def form(self, board: Board) -> str:
        """Which form produced `board`'s times: "per-layer", "mac" (measured) or "board"."""
        ...


def mac_ms(macs: np.ndarray | float, board: Board, fmt: str) -> np.ndarray:
    """overhead_B + MACs / R_B(fmt), in ms (the "mac" form; also the aggregator's time)."""
    return (board.compute.overhead_s + np.asarray(macs, float) / board.throughput(fmt)) * 1e3


@dataclass(frozen=True)
class MacModel:
    macs: np.ndarray  # (L,)
    name: str = "mac"

    def inference_ms(self, board: Board, fmt: str | None = None) -> np.ndarray:
        return mac_ms(self.macs, board, check_format(board, fmt))

    def form(self, board: Board) -> str:
        return "board"


@dataclass(frozen=True)
class PerLayerModel:
    mac: MacModel
    fits: Mapping[str, KernelFit]  # kernel set -> fit (only those the ladder calibrates)
    name: str = "per-layer"

    def _fit(self, board: Board) -> KernelFit | None:
        return self.fits.get(KERNEL_SET_OF_CLASS[board.board_class])

    def inference_ms(self, board: Board, fmt: str | None = None) -> np.ndarray:
        base = self.mac.inference_ms(board, fmt)
        fit = self._fit(board)
        chosen = fit.chosen if fit is not None else None
        if chosen is None:
            return base
        shape = np.asarray(chosen.predicted_ms, float)
        if shape[0] <= 0:  # a fit that predicts nothing for the full branch cannot scale
            return base
        return base[0] * shape / shape[0]

    def form(self, board: Board) -> str:
        fit = self._fit(board)
        return fit.form if fit is not None else "board"


@dataclass(frozen=True)
class AuthorsModel:
    fractions: np.ndarray  # (L,) pruning fractions p
    log_range: tuple[float, float]  # log10 of the lowest and highest throughput
    name: str = "authors"

    def perf(self, board: Board, fmt: str | None = None) -> float:
        """The board's performance factor in [0, 1] (module docstring)."""
        lo, hi = self.log_range
        r = math.log10(board.throughput(check_format(board, fmt)))
        if hi <= lo:
            return 1.0
        return float(min(1.0, max(0.0, (r - lo) / (hi - lo))))

    def inference_ms(self, board: Board, fmt: str | None = None) -> np.ndarray:
        return 100.0 * np.exp(-2.0 * self.fractions) * (1.0 + 2.0 * (1.0 - self.perf(board, fmt)))

    def form(self, board: Board) -> str:
        return "authors"


def default_cost_model(levels: Sequence[Mapping[str, Any]]) -> str:
    """ "per-layer" when the levels carry calibration for a kernel set a board class runs."""
    needed = set(KERNEL_SET_OF_CLASS.values())
    return "per-layer" if any(has_calibration(levels, k) for k in needed) else "mac"


def make_cost_model(name: str | None, levels: Sequence[Mapping[str, Any]],
                    boards: Iterable[Board]) -> CostModel:
    """The cost model `name` (None: `default_cost_model`) over `levels`, for `boards`."""
    name = default_cost_model(levels) if name is None else name
    if name not in COST_MODELS:
        raise CostModelError(f"cost model {name!r}: expected one of {', '.join(COST_MODELS)}")
    p = np.array(fractions(list(levels)))
    macs = np.array([number(e, i, "macs", positive=True) for i, e in enumerate(levels)])
    mac = MacModel(macs)
    if name == "mac":
        return mac
    if name == "per-layer":
        kernel_sets = sorted(set(KERNEL_SET_OF_CLASS.values()))
        fits = {k: fit_kernel_set(levels, k) for k in kernel_sets
                if has_calibration(levels, k) and len(levels) >= 2}
        return PerLayerModel(mac, fits)
    rates = [math.log10(b.throughput()) for b in boards]
    if not rates:
        raise CostModelError("the authors' cost model needs at least one board to rank")
    return AuthorsModel(p, (min(rates), max(rates)))
