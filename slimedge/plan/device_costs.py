"""What a whole device costs at one ladder level, however many views its camera(s) see.

A device runs one artifact (one level) for all of its views (`slimedge.export.assignment`), and
its runtime holds one interpreter per view, invoked one after the other each frame. So, for a
device with m views at level j (m = 1 is the cost table's row as it is):

- time: its branches run in series and each view's feature message is sent:
  m x (t_inf(j) + t_tx);
- memory, what the runtime loads:
  - LiteRT boards (linux, edgetpu, gpu): the runtime process once, plus model + activations per
    interpreter: m x (model + activations) + resident;
  - microcontrollers (TFLite Micro): one tensor arena per interpreter, m x arena; the model is
    read in place from flash by both, so flash holds it once;
  storage (flash / disk) holds the one artifact;
- energy per frame (active + radio, `slimedge.devices.energy`): m inferences and m messages;
- battery life (battery-powered boards): the same with the idle draw over the frame period.

A device listed as down (`--down`) costs nothing and runs nothing: its views are never live.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slimedge.devices.cost import CostTable
from slimedge.devices.energy import battery_life_h, energy_per_frame_mj
from slimedge.devices.fleet import Fleet
from slimedge.devices.memory import RUNTIME_RESIDENT_BYTES


@dataclass(frozen=True)
class DeviceCosts:
    """(N devices, L levels) arrays, rows following `fleet.devices`."""

    views: tuple[int, ...]  # (N,) views per device (m)
    time_ms: np.ndarray  # m x (inference + transfer)
    ram_needed: np.ndarray
    storage_needed: np.ndarray
    fits: np.ndarray  # bool
    energy_mj: np.ndarray  # per frame, active + radio
    life_h: np.ndarray  # hours on one charge; inf where mains-powered
    battery_powered: np.ndarray  # (N,) bool


def device_costs(cost: CostTable, fleet: Fleet, frame_period_ms: float) -> DeviceCosts:
    """Whole-device figures of every level (module docstring)."""
    m = np.array([len(d.views) for d in fleet.devices], np.int64)
    resident = np.array([RUNTIME_RESIDENT_BYTES.get(d.board.board_class, 0)
                         for d in fleet.devices], np.int64)
    ram = m[:, None] * cost.ram_needed - ((m - 1) * resident)[:, None]
    storage = cost.storage_needed.astype(np.int64)
    fits = (ram <= cost.ram_budget[:, None]) & (storage <= cost.storage_budget[:, None])
    time_ms = m[:, None] * cost.total_ms
    energy, life = [], []
    for r, d in enumerate(fleet.devices):
        inf = m[r] * cost.inference_ms[r]
        nbytes = int(m[r] * cost.message_bytes[r])
        energy.append(np.asarray(energy_per_frame_mj(d.board, inf, nbytes), float))
        drain = energy_per_frame_mj(d.board, inf, nbytes,
                                    transfer_ms=float(m[r] * cost.transfer_ms[r]),
                                    frame_period_ms=frame_period_ms)
        life.append(np.asarray(battery_life_h(d.board, drain, frame_period_ms), float))
    powered = np.array([d.board.battery_j is not None for d in fleet.devices])
    return DeviceCosts(tuple(int(x) for x in m), time_ms, ram, storage, fits,
                       np.stack(energy), np.stack(life), powered)


def multi_view_misfit(cost: CostTable, costs: DeviceCosts, row: int, level: int,
                      device_views: Sequence[int]) -> str | None:
    """Why a device with several views does not fit at `level` (None when it fits or has one
    view: the cost table's own message covers that)."""
    if costs.fits[row, level] or len(device_views) < 2:
        return None
    parts = []
    if costs.ram_needed[row, level] > cost.ram_budget[row]:
        parts.append(f"needs {int(costs.ram_needed[row, level]):,} B of RAM/arena for "
                     f"{len(device_views)} interpreters (views {list(device_views)}), has "
                     f"{int(cost.ram_budget[row]):,} B")
    if costs.storage_needed[row, level] > cost.storage_budget[row]:
        parts.append(f"needs {int(costs.storage_needed[row, level]):,} B of storage, has "
                     f"{int(cost.storage_budget[row]):,} B")
    return (f"{cost.devices[row]} ({cost.boards[row]}): level {level} "
            f"({cost.levels[level]:g}) " + "; ".join(parts))
