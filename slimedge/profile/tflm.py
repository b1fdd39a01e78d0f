"""TFLite Micro arena measurement, in a subprocess.

The Python TFLM interpreter has no getter for the arena it used: `print_allocations()` writes
"Arena allocation total N bytes" to file descriptor 2, and an arena far too small can crash
the process. So each probe runs in a child process: it builds the interpreter with a given
arena limit, invokes once, and reports the recorded total (or that allocation failed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slimedge.errors import SlimEdgeError

GENEROUS_ARENA = 64 << 20  # large enough for any branch we build; the probe reports the real need
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")


class TFLMError(SlimEdgeError):
    """The TFLite Micro interpreter could not load or run a model."""


@dataclass(frozen=True)
class ArenaProbe:
    ok: bool  # allocated and invoked within the arena limit
    arena_limit: int
    total_bytes: int | None  # recorded arena use (head + tail), when it ran
    head_bytes: int | None  # non-persistent (activations, scratch)
    tail_bytes: int | None  # persistent (tensor structs, op data)
    message: str = ""


_CHILD = r"""
import os, sys, json
import numpy as np
from tflite_micro.python.tflite_micro import runtime
path, arena = sys.argv[1], int(sys.argv[2])
try:
    it = runtime.Interpreter.from_file(path, arena_size=arena)
    d = it.get_input_details(0)
    x = np.zeros(d["shape"], dtype=d["dtype"])
    it.set_input(x, 0)
    it.invoke()
    out = it.get_output(0)
except Exception as exc:  # allocation failure or unsupported op
    print(json.dumps({"ok": False, "message": str(exc).strip().splitlines()[-1]}), flush=True)
    sys.exit(0)
sys.stdout.flush()
it.print_allocations()
sys.stderr.flush()
print(json.dumps({"ok": True, "out_shape": list(out.shape)}), flush=True)
"""


def probe_arena(model_path: str | os.PathLike, arena_limit: int = GENEROUS_ARENA) -> ArenaProbe:
    """Run `model_path` in TFLite Micro with `arena_limit` bytes of arena, in a child process."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise TFLMError(f"{model_path}: no such model file")
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(model_path), str(int(arena_limit))],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=300,
        )
        err.seek(0)
        stderr = err.read()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        # A crash (e.g. SIGSEGV on an arena far too small) counts as "does not fit".
        return ArenaProbe(False, arena_limit, None, None, None,
                          f"TFLM child exited with code {proc.returncode}")
    result = json.loads(lines[-1])
    if not result["ok"]:
        return ArenaProbe(False, arena_limit, None, None, None, result.get("message", ""))

    def grab(rx: re.Pattern[str]) -> int | None:
        m = rx.search(stderr)
        return int(m.group(1)) if m else None

    total = grab(_TOTAL)
    if total is None:
        raise TFLMError(f"{model_path}: TFLM ran but printed no arena total")
    return ArenaProbe(True, arena_limit, total, grab(_HEAD), grab(_TAIL))


def measure_arena(model_path: str | os.PathLike) -> int:
    """The arena bytes this model needs in TFLite Micro: recorded with a generous arena, then
    confirmed by running with exactly that limit (grown by 1 KiB steps if alignment needs it)."""
    first = probe_arena(model_path, GENEROUS_ARENA)
    if not first.ok or first.total_bytes is None:
        raise TFLMError(f"{model_path}: does not run in TFLite Micro: {first.message}")
    need = first.total_bytes
    for _ in range(8):
        if probe_arena(model_path, need).ok:
            return need
        need += 1024
    raise TFLMError(f"{model_path}: recorded arena {first.total_bytes} bytes but no limit up to "
                    f"{need} bytes allocates")


def fits_in_sram(model_path: str | os.PathLike, sram_bytes: int) -> ArenaProbe:
    """Does the model allocate and run with the board's SRAM as the arena limit?"""
    return probe_arena(model_path, sram_bytes)
