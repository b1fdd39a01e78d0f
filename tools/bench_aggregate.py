#!/usr/bin/env python3
"""Benchmark: the C++ aggregation core vs the NumPy reference, same inputs, same run.

Default case: B=2000 frames, V=12 views, D=256, int8 features with per-view scale/zero point,
random live masks (B, V). Both single-threaded; medians of repeats. Prints a table with the
ratio; `--json` prints one object whose key `speedup` is the smallest ratio over the modes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_aggregate import pool_reference  # noqa: E402

import slimedge  # noqa: E402
from slimedge import _core  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--views", type=int, default=12)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--live", type=float, default=0.75, help="probability a view is live")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    B, V, D = args.batch, args.views, args.dim
    feats = rng.integers(-128, 128, (B, V, D), dtype=np.int8)
    mask = rng.random((B, V)) < args.live
    scale = rng.uniform(0.01, 0.1, V).astype(np.float32)
    zp = rng.integers(-20, 20, V).astype(np.int32)
    weights = rng.uniform(0.5, 2.0, V).astype(np.float32)

    rows = []
    for mode in ("max", "mean", "weighted"):
        w = weights if mode == "weighted" else None
        ours, _ = _core.pool(feats, mask, w, mode=mode, scale=scale, zero_point=zp)
        ref, _ = pool_reference(feats, mask, w, mode, scale, zp)
        max_err = float(np.abs(ours - ref).max())
        def ours_fn(w=w, mode=mode):
            return _core.pool(feats, mask, w, mode=mode, scale=scale, zero_point=zp)

        t_cpp = median_seconds(ours_fn, args.repeats)
        t_np = median_seconds(
            lambda w=w, mode=mode: pool_reference(feats, mask, w, mode, scale, zp), args.repeats
        )
        rows.append(
            {
                "mode": mode,
                "cpp_ms": t_cpp * 1e3,
                "numpy_ms": t_np * 1e3,
                "speedup": t_np / t_cpp,
                "max_abs_diff": max_err,
            }
        )

    result = {
        "case": {"batch": B, "views": V, "dim": D, "dtype": "int8", "live_probability": args.live,
                 "seed": args.seed, "repeats": args.repeats, "threads": 1},
        "modes": rows,
        "speedup": min(r["speedup"] for r in rows),
        "versions": {"slimedge": slimedge.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "machine": platform.machine(),
                     "processor": platform.processor() or platform.machine(),
                     "core_module": Path(_core.__file__).name},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"pool: B={B} V={V} D={D} int8, live p={args.live}, median of {args.repeats}, 1 thread")
    print(f"{'mode':<10}{'C++ ms':>10}{'NumPy ms':>12}{'ratio':>9}{'max |diff|':>13}")
    for r in rows:
        print(f"{r['mode']:<10}{r['cpp_ms']:>10.3f}{r['numpy_ms']:>12.3f}{r['speedup']:>8.1f}x"
              f"{r['max_abs_diff']:>13.2e}")
    print(f"speedup (smallest over modes): {result['speedup']:.1f}x")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
