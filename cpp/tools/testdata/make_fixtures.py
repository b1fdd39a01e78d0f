"""Writes the slimedge_aggregate test fixtures in this folder (deterministic, seed 0).

    python cpp/tools/testdata/make_fixtures.py

Inputs are written by slimedge.runtime.frames; each `<case>.expected.txt` is the report
computed by slimedge._core, which ctest requires the C++ program to reproduce byte for byte
on every target. tests/test_cross.py fails when these files are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from slimedge.runtime import frames

HERE = Path(__file__).resolve().parent


def _quant(rng: np.random.Generator, V: int) -> tuple[np.ndarray, np.ndarray]:
    # Non-round scales and weights: a fused multiply-add would change the last bits.
    return (rng.uniform(0.005, 0.2, V).astype(np.float32),
            rng.integers(-20, 21, V).astype(np.int32))


def inputs() -> dict[str, frames.AggregateInput]:
    """The good fixture inputs, by case name."""
    rng = np.random.default_rng(0)
    cases = {}

    V, D = 5, 16
    scale, zp = _quant(rng, V)
    live = np.ones((6, V), bool)
    live[1, 2] = False            # in the table
    live[2, [0, 3]] = False       # in the table
    live[3, 4] = False            # not in the table: renormalize
    live[4, :] = False            # nothing arrived: empty frame
    live[5, [0, 2, 3, 4]] = False  # the table gives the one survivor no weight: empty
    cases["weighted_table"] = frames.AggregateInput(
        features=rng.integers(-128, 128, (6, V, D), dtype=np.int8),
        scale=scale, zero_point=zp, live=live,
        base_weights=rng.uniform(0.1, 2.0, V).astype(np.float32),
        mode="weighted", policy="table",
        table={
            0b00100: np.array([0.3, 0.1, 0.0, 0.45, 0.15], np.float32),
            0b01001: np.array([0.0, 0.2, 0.7, 0.0, 0.1], np.float32),
            0b11101: np.zeros(V, np.float32),
            0b00011: np.array([0.0, 0.0, 0.5, 0.25, 0.25], np.float32),  # unused row
        },
    )

    V, D = 3, 8
    scale, zp = _quant(rng, V)
    cases["max_renormalize"] = frames.AggregateInput(
        features=rng.integers(-128, 128, (4, V, D), dtype=np.int8),
        scale=scale, zero_point=zp,
        live=np.array([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 0, 0]], bool),
        base_weights=np.array([1.0, 0.0, 3.0], np.float32),
        mode="max", policy="renormalize",
    )

    V, D = 4, 8
    scale, zp = _quant(rng, V)
    cases["mean_table"] = frames.AggregateInput(
        features=rng.integers(-128, 128, (3, V, D), dtype=np.int8),
        scale=scale, zero_point=zp,
        live=np.array([[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 0, 1]], bool),
        base_weights=rng.uniform(0.5, 1.5, V).astype(np.float32),
        mode="mean", policy="table",
        table={0b0100: np.array([0.5, 0.25, 0.0, 0.25], np.float32)},
    )
    return cases


def files() -> dict[str, bytes]:
    """Every fixture file's name and content: inputs, expected reports, bad inputs."""
    out = {}
    for name, inp in inputs().items():
        out[f"{name}.bin"] = frames.encode_aggregate_input(inp)
        out[f"{name}.expected.txt"] = frames.aggregate_report(inp).encode()
    good = out["weighted_table.bin"]
    out["truncated.bin"] = good[:-5]
    out["bad_magic.bin"] = frames.MESSAGE_MAGIC + good[4:]  # a feature message's magic
    return out


def main() -> int:
    for name, data in files().items():
        (HERE / name).write_bytes(data)
        print(f"wrote {HERE / name} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
