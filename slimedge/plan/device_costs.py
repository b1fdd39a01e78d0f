"""What a whole device costs at one ladder level, however many views its camera(s) see.

A device runs one artifact (one level) for all of its views (`slimedge.export.assignment`), and
its agent loads it into one engine (one LiteRT or TFLite Micro interpreter) that it invokes once
per view, one view after the other, each frame (`slimedge.runtime.agent`, the frame loop). So,
for a device with m views at level j (m = 1 is the cost table's row as it is):

- time: its branches run in series and each view's feature message is sent:
  m x (t_inf(j) + t_tx);
- memory, what the runtime loads: one model, one interpreter, one arena (LiteRT: model +
  activations + the runtime process; TFLite Micro: one tensor arena, the model in flash), reused
  for every view: the cost table's fit as it is;
- energy per frame (active + radio, `slimedge.devices.energy`): m inferences and m messages;
- battery life (battery-powered boards): the same with the idle draw over the frame period.

A device listed as down (`--down`) costs nothing and runs nothing: its views are never live.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimedge.devices.cost import CostTable
from slimedge.devices.energy import battery_life_h, energy_per_frame_mj
from slimedge.devices.fleet import Fleet


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
    ram = cost.ram_needed.astype(np.int64)
    storage = cost.storage_needed.astype(np.int64)
    fits = cost.fits.copy()
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
