"""Energy per frame of a device, and how long a battery-powered node lasts.

Per device, per frame (mJ), with the board's power figures (`power.active`, `power.idle`,
`link.energy_per_byte`, all sourced in the board file)::

    E = P_active x t_inf + e_byte x message_bytes [+ P_idle x max(0, T - t_inf - t_tx)]

t_inf is the branch's inference time under the chosen cost model, message_bytes the encoded
feature message (`slimedge.devices.link`). The bracketed idle term is charged only when a frame
period T is given: the energy a frame costs on top of being on, without it; the whole draw of
the node over one period, with it (what drains a battery). The radio's time on air is in
e_byte; the idle figure covers keeping the link up between frames. The aggregator is not
charged here (mains-powered in every fleet so far).

Battery life of a node with `battery.capacity` C (J), one frame every T::

    life_h = C / (E_with_idle / T) / 3600

(inf for a board without a battery: mains-powered).
"""

from __future__ import annotations

import math

import numpy as np

from slimedge.devices.catalog import Board
from slimedge.devices.level_fields import CostModelError

# Assumption where a frame rate is needed and none is given: one frame per second, the rate
# of a monitoring camera fleet that reports about once a second.
DEFAULT_FRAME_PERIOD_MS = 1000.0


def check_period(frame_period_ms: float) -> float:
    if isinstance(frame_period_ms, bool) or not isinstance(frame_period_ms, int | float) \
            or not math.isfinite(frame_period_ms) or frame_period_ms <= 0:
        raise CostModelError(f"frame period must be a time > 0 in ms, got {frame_period_ms!r}")
    return float(frame_period_ms)


def energy_per_frame_mj(board: Board, inference_ms: float | np.ndarray, message_bytes: int,
                        *, transfer_ms: float = 0.0,
                        frame_period_ms: float | None = None) -> float | np.ndarray:
    """Energy (mJ) one frame costs `board` (module docstring); arrays over levels allowed."""
    t_inf = np.asarray(inference_ms, float)
    energy = board.power.active_w * t_inf + board.link.energy_per_byte_j * message_bytes * 1e3
    if frame_period_ms is not None:
        rest = np.maximum(0.0, check_period(frame_period_ms) - t_inf - transfer_ms)
        energy = energy + board.power.idle_w * rest
    return float(energy) if np.ndim(energy) == 0 else energy


def battery_life_h(board: Board, energy_with_idle_mj: float | np.ndarray,
                   frame_period_ms: float) -> float | np.ndarray:
    """Hours a full battery lasts at one frame per period (inf without a battery)."""
    energy = np.asarray(energy_with_idle_mj, float)
    if board.battery_j is None:
        out = np.full(energy.shape, math.inf)
    else:
        watts = energy / check_period(frame_period_ms)  # mJ per ms = W
        out = board.battery_j / watts / 3600.0
    return float(out) if np.ndim(out) == 0 else out
