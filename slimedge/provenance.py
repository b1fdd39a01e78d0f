"""Where a result was made: the CPU and the library versions, recorded beside every artifact
whose bytes depend on them (a trained model, a ladder's measured costs).

Read from package metadata and /proc/cpuinfo, so recording provenance imports nothing heavy.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# Package -> the distributions that provide it (TensorFlow ships as tensorflow or tensorflow-cpu).
_DISTRIBUTIONS = {
    "slimedge": ("slimedge",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly"),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "ai-edge-litert": ("ai-edge-litert",),
    "tflite-micro": ("tflite-micro",),
}


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of Python and of the libraries a model's bytes depend on (installed ones),
    plus those of the `extra` distributions a benchmark also depends on ("not installed" when
    absent, so a table says so)."""
    out = {"python": platform.python_version()}
    for name, dists in _DISTRIBUTIONS.items():
        for dist in dists:
            try:
                out[name] = version(dist)
                break
            except PackageNotFoundError:
                continue
    for dist in extra:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def cpu_name() -> str:
    """The CPU model ("AMD EPYC 7B13", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The ISA extensions that decide which oneDNN/XNNPACK kernels run (AVX-512, AMX...)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
              "amx_bf16", "avx_vnni", "fma", "asimd", "sve")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def available_cpus() -> int:
    """Logical CPUs this process may run on (its affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host() -> dict[str, Any]:
    return {"cpu": cpu_name(), "machine": platform.machine(), "cpu_flags": cpu_flags(),
            "logical_cpus": os.cpu_count(), "available_cpus": available_cpus()}
