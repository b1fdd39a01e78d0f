"""Per-device cost table: does a ladder level fit a board, how long does it take, what energy.

Inputs are the ladder's measured per-level costs (`manifest.json` `levels`) and the catalog's
board facts (`slimedge.devices.catalog.Board`). Nothing here hard-codes a board. One module per
part of the model:

- inference time: `slimedge.devices.latency_model` (cost models "per-layer", "mac",
  "authors"); "per-layer" is shaped by the board's kernel profile
  (`slimedge.devices.kernel_profiles`: instructions counted on an emulated core), never by
  timing on the planning host;
- transfer of one feature message: `slimedge.devices.link` (expected or worst wait);
- memory fit: `slimedge.devices.memory`;
- energy per frame and battery life: `slimedge.devices.energy`.

This module puts them together per (device, level):

- `CostTable` precomputes every (device, level) figure as NumPy arrays with the same code that
  `assess` runs for one pair, so the planner's checks are array lookups; it records the cost
  model and link latency it used (`cost_model`, `link_latency`).
- Aggregator: `t_agg = overhead + head_MACs / R` on the aggregator board, or `t_host(head_MACs)`
  from a host fit when the aggregator is a host outside the catalog; head_MACs = V x D
  (pooling) + classifier MACs (`head_macs`).
- System latency of an assignment (views in parallel, one branch per device) is the planner's
  (`PlanContext.latency`): T = max_devices (t_inf + t_tx) + t_agg.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimedge.devices.calibration import (
    BYTES_TERM_GAIN,
    FORM_GAIN,
    LOW_R2,
    HostFit,
    calibrate_host,
)
from slimedge.devices.catalog import Board
from slimedge.devices.energy import battery_life_h, check_period, energy_per_frame_mj
from slimedge.devices.fleet import Aggregator, Fleet
from slimedge.devices.latency_model import (
    COST_MODELS,
    CostModel,
    default_cost_model,
    mac_ms,
    make_cost_model,
)
from slimedge.devices.level_fields import CostModelError, check_format, fractions, number
from slimedge.devices.link import (
    LINK_LATENCIES,
    check_link_latency,
    message_bytes,
    transfer_ms,
)
from slimedge.devices.memory import (
    ACTIVATION_ELEMENT_BYTES,
    RUNTIME_RESIDENT_BYTES,
    MemoryFit,
    memory_fit,
    misfit_text,
)

_check_format = check_format  # the name export/assignment.py imports

__all__ = [
    "ACTIVATION_ELEMENT_BYTES",
    "BYTES_TERM_GAIN",
    "COST_MODELS",
    "FORM_GAIN",
    "LINK_LATENCIES",
    "LOW_R2",
    "RUNTIME_RESIDENT_BYTES",
    "Assessment",
    "CostModel",
    "CostModelError",
    "CostTable",
    "HostFit",
    "aggregator_ms",
    "assess",
    "calibrate_host",
    "default_cost_model",
    "head_macs",
    "inference_ms",
    "least_pruned_fitting_level",
    "make_cost_model",
    "message_bytes",
    "no_fit_message",
    "transfer_ms",
]


def inference_ms(level_entry: Mapping[str, Any], board: Board, fmt: str | None = None) -> float:
    """Board-figure ("mac") time of one branch inference of this level on `board`."""
    fmt = check_format(board, fmt)
    return float(mac_ms(number(level_entry, None, "macs", positive=True), board, fmt))


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
           fmt: str | None = None, device_id: str = "cam00",
           link_latency: str = "expected") -> Assessment:
    """Fit and ("mac") speed of one ladder level on one board (`device_id` sizes the message).

    One level alone cannot be calibrated; `CostTable` times levels under every cost model."""
    fmt = check_format(board, fmt)
    level = f"{level_entry.get('level')}" if isinstance(level_entry, Mapping) else "?"
    macs = number(level_entry, None, "macs", positive=True)
    row = _Row.compute([level_entry], board, fmt, feature_dim, device_id, "int8",
                       mac_ms(np.array([macs]), board, fmt), "board", link_latency)
    return row.assessment(0, f"{device_id} ({board.id})", level)


# --------------------------------------------------------------------------- many at once


@dataclass(frozen=True)
class _Row:
    """Every figure of some levels on one board: the code `assess` and `CostTable` share."""

    board: Board
    fmt: str
    macs: np.ndarray
    inference_ms: np.ndarray
    form: str
    message_bytes: int
    transfer_ms: Mapping[str, float]  # link latency -> ms
    link_latency: str
    memory: MemoryFit

    @classmethod
    def compute(cls, levels: Sequence[Mapping[str, Any]], board: Board, fmt: str,
                feature_dim: int, device_id: str, dtype: str, inference: np.ndarray,
                form: str, link_latency: str) -> _Row:
        macs = np.array([number(e, i, "macs", positive=True) for i, e in enumerate(levels)])
        tx = {k: transfer_ms(board, feature_dim, device_id, dtype, k) for k in LINK_LATENCIES}
        return cls(board, fmt, macs, np.asarray(inference, float), form,
                   message_bytes(feature_dim, device_id, dtype), tx,
                   check_link_latency(link_latency), memory_fit(levels, board, fmt))

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
            "latency_form": self.form,
            "link_latency": self.link_latency,
            "message_bytes": self.message_bytes,
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
            details["message"] = misfit_text(who, level, mem, j)
        inf = float(self.inference_ms[j])
        tx = self.transfer_ms[self.link_latency]
        return Assessment(fits, binding, int(mem.ram_margin[j]), int(mem.storage_margin[j]),
                          inf, tx, inf + tx, self.fmt, details)


@dataclass(frozen=True)
class CostTable:
    """(devices x levels) arrays of latency, energy, fit and margins; rows follow `devices`."""

    devices: tuple[str, ...]
    boards: tuple[str, ...]
    formats: tuple[str, ...]
    levels: np.ndarray  # (L,) level fractions, ascending
    macs: np.ndarray  # (L,)
    inference_ms: np.ndarray  # (N, L) under `cost_model`
    transfer_ms: np.ndarray  # (N,) under `link_latency`
    transfer_ms_expected: np.ndarray  # (N,)
    transfer_ms_worst: np.ndarray  # (N,)
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
    cost_model: str  # "per-layer" | "mac" | "authors"
    link_latency: str  # "expected" | "worst"
    forms: tuple[str, ...]  # (N,) latency form per row (`CostModel.form`)
    message_bytes: np.ndarray  # (N,) encoded feature message per frame
    _rows: tuple[_Row, ...] = field(repr=False, compare=False)

    @classmethod
    def build(cls, ladder_levels: Sequence[Mapping[str, Any]], fleet: Fleet, feature_dim: int,
              *, formats: Mapping[str, str] | None = None, feature_dtype: str = "int8",
              cost_model: str | CostModel | None = None,
              link_latency: str = "expected") -> CostTable:
        """Costs of every ladder level on every device of `fleet` (overrides applied).

        `formats`: device id -> format (default: each board's preferred format).
        `cost_model`: a name in `COST_MODELS`, a `CostModel`, or None (`default_cost_model`).
        `link_latency`: "expected" or "worst" (`slimedge.devices.link`).
        """
        formats = dict(formats or {})
        unknown = sorted(set(formats) - {d.id for d in fleet.devices})
        if unknown:
            raise CostModelError(f"formats: fleet {fleet.name!r} has no device {unknown[0]!r}")
        pairs = [(d.id, d.board, formats.get(d.id)) for d in fleet.devices]
        return cls._build(ladder_levels, pairs, feature_dim, feature_dtype, cost_model,
                          link_latency)

    @classmethod
    def for_boards(cls, ladder_levels: Sequence[Mapping[str, Any]],
                   boards: Mapping[str, Board] | Iterable[Board], feature_dim: int,
                   *, feature_dtype: str = "int8", cost_model: str | CostModel | None = None,
                   link_latency: str = "expected") -> CostTable:
        """Costs on catalog boards themselves (a device per board, named by board id)."""
        items = boards.values() if isinstance(boards, Mapping) else boards
        pairs = [(b.id, b, None) for b in items]
        return cls._build(ladder_levels, pairs, feature_dim, feature_dtype, cost_model,
                          link_latency)

    @classmethod
    def _build(cls, levels: Sequence[Mapping[str, Any]],
               pairs: list[tuple[str, Board, str | None]], feature_dim: int, dtype: str,
               cost_model: str | CostModel | None, link_latency: str) -> CostTable:
        fracs = np.array(fractions(levels))
        if not pairs:
            raise CostModelError("no devices to cost")
        check_link_latency(link_latency)
        model = (cost_model if isinstance(cost_model, CostModel)
                 else make_cost_model(cost_model, levels, [p[1] for p in pairs]))
        rows = []
        for device_id, board, fmt in pairs:
            fmt = check_format(board, fmt)
            rows.append(_Row.compute(levels, board, fmt, feature_dim, device_id, dtype,
                                     model.inference_ms(board, fmt), model.form(board),
                                     link_latency))
        stack = np.stack
        ram_margin = stack([r.memory.ram_margin for r in rows])
        storage_margin = stack([r.memory.storage_margin for r in rows])
        inference = stack([r.inference_ms for r in rows])
        tx = {k: np.array([r.transfer_ms[k] for r in rows]) for k in LINK_LATENCIES}
        return cls(
            devices=tuple(p[0] for p in pairs),
            boards=tuple(p[1].id for p in pairs),
            formats=tuple(r.fmt for r in rows),
            levels=fracs,
            macs=rows[0].macs,
            inference_ms=inference,
            transfer_ms=tx[link_latency],
            transfer_ms_expected=tx["expected"],
            transfer_ms_worst=tx["worst"],
            total_ms=inference + tx[link_latency][:, None],
            fits=(ram_margin >= 0) & (storage_margin >= 0),
            ram_needed=stack([r.memory.ram_needed for r in rows]),
            ram_budget=np.array([r.memory.ram_budget for r in rows], dtype=np.int64),
            ram_margin=ram_margin,
            storage_needed=stack([r.memory.storage_needed for r in rows]),
            storage_budget=np.array([r.memory.storage_budget for r in rows], dtype=np.int64),
            storage_margin=storage_margin,
            binding=stack([r.memory.binding() for r in rows]),
            feature_dim=int(feature_dim),
            cost_model=model.name,
            link_latency=link_latency,
            forms=tuple(r.form for r in rows),
            message_bytes=np.array([r.message_bytes for r in rows], dtype=np.int64),
            _rows=tuple(rows),
        )

    # ------------------------------------------------------------------ energy
    @property
    def battery_powered(self) -> np.ndarray:
        """(N,) whether each row's board states a battery."""
        return np.array([r.board.battery_j is not None for r in self._rows])

    def energy_mj(self, frame_period_ms: float | None = None) -> np.ndarray:
        """(N, L) mJ per frame per device (`slimedge.devices.energy`); with a frame period,
        the idle draw over the rest of the period is included."""
        return np.stack([
            np.asarray(energy_per_frame_mj(r.board, self.inference_ms[i], r.message_bytes,
                                           transfer_ms=float(self.transfer_ms[i]),
                                           frame_period_ms=frame_period_ms), float)
            for i, r in enumerate(self._rows)])

    def battery_life_h(self, frame_period_ms: float) -> np.ndarray:
        """(N, L) hours on one charge at one frame per period; inf where mains-powered."""
        energy = self.energy_mj(check_period(frame_period_ms))
        return np.stack([np.asarray(battery_life_h(r.board, energy[i], frame_period_ms), float)
                         for i, r in enumerate(self._rows)])

    # ------------------------------------------------------------------ lookups
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
        return misfit_text(self._who(i), f"{j} ({self.levels[j]:g})", self._rows[i].memory, j)


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
        fmt = check_format(board, fmt)
        return float(mac_ms(float(head_mac_count), board, fmt))
    if host_fit is None:
        raise CostModelError(f"aggregator {name!r} is a host outside the catalog: pass host_fit "
                             "(calibrate_host on the ladder) to time it")
    return float(host_fit.predict(float(head_mac_count), float(head_bytes)))
