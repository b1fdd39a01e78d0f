#!/usr/bin/env python3
"""Benchmark: host latency of every ladder level's int8 branch, under LiteRT's three kernel
sets, with the speed-up of each level over level 0 measured in the same run.

- xnnpack: LiteRT's default (XNNPACK delegate), what a Linux board runs;
- builtin: LiteRT's optimized builtin kernels without the delegate;
- reference: the reference kernels, bit-exact with TFLite Micro (what an MCU computes).

Levels are timed round-robin (one batch of invokes per level per round) so that load drift on
a shared machine hits every level alike; each figure is the median over rounds of the
per-invoke median. One thread. `--json` prints one object.

    tools/bench_ladder_latency.py LADDER [--rounds 7] [--invokes 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from slimedge.profile.litert import KERNELS  # xnnpack, builtin, reference


def _interpreter(path: Path, kernels: str):
    from slimedge.profile.litert import interpreter

    it = interpreter(path, num_threads=1, kernels=kernels)
    d = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    it.set_tensor(d["index"], rng.integers(-128, 128, d["shape"], dtype=np.int8))
    return it


def _median_invoke_ms(it, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ladder")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--invokes", type=int, default=50)
    ap.add_argument("--reference-invokes", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from slimedge.ladder.store import level_dir, read_manifest

    manifest = read_manifest(args.ladder)
    levels = manifest["levels"]
    paths = [level_dir(args.ladder, e["index"]) / "branch_int8.tflite" for e in levels]
    its = {k: [_interpreter(p, k) for p in paths] for k in KERNELS}
    for k in KERNELS:  # warm up
        for it in its[k]:
            _median_invoke_ms(it, 3)
    samples = {k: [[] for _ in paths] for k in KERNELS}
    for _ in range(args.rounds):
        for k in KERNELS:
            n = args.reference_invokes if k == "reference" else args.invokes
            for i, it in enumerate(its[k]):
                samples[k][i].append(_median_invoke_ms(it, n))
    ms = {k: [statistics.median(s) for s in samples[k]] for k in KERNELS}
    rows = []
    for i, e in enumerate(levels):
        row = {"level": e["level"], "macs": e["macs"], "tflite_int8_bytes": e["tflite_int8_bytes"]}
        for k in KERNELS:
            row[f"{k}_ms"] = ms[k][i]
            row[f"{k}_speedup"] = ms[k][0] / ms[k][i]
        rows.append(row)
    result = {
        "ladder": str(args.ladder), "model_hash": manifest["model_hash"],
        "backbone": manifest.get("backbone"), "rows": rows,
        "versions": {"ai-edge-litert": version("ai-edge-litert"), "numpy": np.__version__,
                     "python": platform.python_version(), "machine": platform.machine()},
        "rounds": args.rounds, "invokes": args.invokes,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"int8 branch latency per level, 1 thread, median of {args.rounds} rounds; "
          f"ladder model {manifest['model_hash'][:12]} ({manifest.get('backbone')})")
    head = f"{'level':>6}{'MACs':>12}"
    for k in KERNELS:
        head += f"{k + ' ms':>15}{'x L0':>7}"
    print(head)
    for r in rows:
        line = f"{r['level']:>6.2f}{r['macs']:>12,}"
        for k in KERNELS:
            line += f"{r[k + '_ms']:>15.3f}{r[k + '_speedup']:>7.2f}"
        print(line)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
