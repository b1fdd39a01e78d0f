"""How long one branch inference takes on a board: three selectable cost models.

A cost model is built over a ladder's levels and answers, for a board and a format, the
inference time of every level (`CostModel.inference_ms(board, fmt)` -> (L,) ms). By name
(`make_cost_model`, `COST_MODELS`):

- "mac" (board figures only)::

      t(L, B) = overhead_B + MACs(L) / R_B(f)

  overhead_B = `compute.overhead`, R_B(f) = `board.throughput(f)` (effective MAC/s measured
  on published whole-model benchmarks, so kernel efficiency is in it).

- "per-layer" (counted shape, board scale)::

      t(L, B) = t_mac(L0, B) x I_K(L) / I_K(L0)

  I_K(L) is the instructions per invoke that the kernel profile K the board runs (its board
  file's `kernels` section: core and kernel set, e.g. cortex-m4 + cmsis-nn) predicts for THIS
  ladder's level L, from the level's per-operator work (`layers`) or MACs
  (`slimedge.devices.kernel_profiles`; the profiles are fitted to instructions counted on
  emulated cores, in the form with the lower leave-one-out error). L0 is the least-pruned
  level: the board's published figure sets the time of the full branch (the regime its
  benchmark measured), the counted profile sets how time falls with pruning. Nothing timed on
  the planning host enters: the same ladder and catalog give the same times everywhere. A board
  without a `kernels` section (Edge TPU, GPU boards) gets the "mac" time. The shape is counted
  on int8 and applied to every format. `form(board)` says which applied: the profile's form
  ("per-layer" or "mac") or "board".

- "authors" (the formula of the SlimEdge authors, for side-by-side scoring)::

      t(p, B) = 100 x exp(-2 p) x (1 + 2 (1 - perf_B))   [ms]

  p = the level's pruning fraction; perf_B in [0, 1] is the authors' "device performance"
  factor, which they drew per device. Here it is the board's place on a log scale of the
  throughputs of the boards the model was built for: log(R_B / R_min) / log(R_max / R_min)
  (1 when all are equal). MACs play no part.

`default_cost_model(levels)`: "per-layer" when the levels carry their per-operator work
(`layers`, recorded by every ladder build), else "mac".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from slimedge.devices.catalog import Board
from slimedge.devices.kernel_profiles import KernelProfile, load_profiles
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
    levels: tuple[Mapping[str, Any], ...]
    profiles: Mapping[str, KernelProfile]  # `<core>-<set>` -> profile
    name: str = "per-layer"
    _shapes: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def profile(self, board: Board) -> KernelProfile | None:
        """The kernel profile `board` runs, or None when its file names none."""
        ref = board.kernels
        if ref is None:
            return None
        if ref.key not in self.profiles:
            where = board.path or f"board {board.id!r}"
            raise CostModelError(f"{where}: kernels.set: no kernel profile {ref.key!r} "
                                 f"(profiles: {', '.join(sorted(self.profiles))})")
        return self.profiles[ref.key]

    def instructions(self, board: Board) -> np.ndarray | None:
        """(L,) instructions per invoke of each level under `board`'s profile, or None."""
        profile = self.profile(board)
        if profile is None:
            return None
        if profile.key not in self._shapes:
            self._shapes[profile.key] = profile.instructions(self.levels)
        return self._shapes[profile.key]

    def inference_ms(self, board: Board, fmt: str | None = None) -> np.ndarray:
        base = self.mac.inference_ms(board, fmt)
        shape = self.instructions(board)
        if shape is None or shape[0] <= 0:  # no profile, or nothing to scale by
            return base
        return base[0] * shape / shape[0]

    def form(self, board: Board) -> str:
        profile = self.profile(board)
        return "board" if profile is None else profile.form_for(self.levels)


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
    """ "per-layer" when every level carries its per-operator work (`layers`), else "mac"."""
    has_layers = bool(levels) and all(isinstance(e, Mapping) and "layers" in e for e in levels)
    return "per-layer" if has_layers else "mac"


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
        return PerLayerModel(mac, tuple(levels), load_profiles())
    rates = [math.log10(b.throughput()) for b in boards]
    if not rates:
        raise CostModelError("the authors' cost model needs at least one board to rank")
    return AuthorsModel(p, (min(rates), max(rates)))
