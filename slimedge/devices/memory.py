"""Does a ladder level fit a board's memory: needs, budgets, margins, and why not.

For the format that runs:

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
constraint with the largest shortfall relative to its budget ('' when the level fits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimedge.devices.catalog import MCU, Board
from slimedge.devices.level_fields import model_bytes, number

# Resident memory of the LiteRT runtime process on a hosted board, added to every model's RAM
# need. Measured on the x86_64 build host (Python 3.11 + NumPy + ai-edge-litert 2.3.0, one
# interpreter after invoke(): 38.2 MiB VmRSS), rounded
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


@dataclass(frozen=True)
class MemoryFit:
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


def memory_fit(levels: Sequence[Mapping[str, Any]], board: Board, fmt: str) -> MemoryFit:
    idx = range(len(levels))
    model = np.array([model_bytes(levels[i], i, fmt) for i in idx], dtype=np.int64)
    if board.board_class == MCU:
        arena = np.array([number(levels[i], i, "tflm_arena_bytes", positive=True) for i in idx],
                         dtype=np.int64)
        return MemoryFit("arena", "flash", arena, board.model_memory_bytes, model,
                       board.model_storage_bytes, {"arena": arena})
    act = np.array([number(levels[i], i, "peak_activation_bytes") for i in idx],
                   dtype=np.int64) * ACTIVATION_ELEMENT_BYTES[fmt]
    runtime = RUNTIME_RESIDENT_BYTES[board.board_class]
    return MemoryFit("ram", "storage", model + act + runtime, board.model_memory_bytes, model,
                   board.model_storage_bytes,
                   {"model": model, "activations": act, "runtime": runtime})


def _need_text(kind: str, needed: int, budget: int) -> str:
    what = {"arena": "arena", "flash": "flash", "ram": "RAM", "storage": "storage"}[kind]
    return f"needs {needed:,} B of {what}, has {budget:,} B"


def misfit_text(who: str, level: str, mem: MemoryFit, j: int) -> str:
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

