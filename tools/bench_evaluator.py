#!/usr/bin/env python3
"""Benchmark: one system-accuracy evaluation (a level per view + a live mask → accuracy),
as the planner calls it, vs the same computation with NumPy pooling (the reference in tests/).

With LADDER, the real cached features of that ladder's split are used; without it, a
synthetic ladder of the given size (random int8 features, random 2-layer classifier).
Medians of repeats, single thread, both in the same run; `--json` prints one object.

    tools/bench_evaluator.py [LADDER] [--split val] [--objects 1000 --levels 10 --dim 128]
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
from slimedge.ladder.classifier import NumpyClassifier  # noqa: E402
from slimedge.ladder.evaluator import Evaluator  # noqa: E402


def synthetic(n: int, levels: int, views: int, dim: int, classes: int, seed: int) -> Evaluator:
    rng = np.random.default_rng(seed)
    clf = NumpyClassifier(
        [rng.normal(size=(dim, 128)).astype(np.float32),
         rng.normal(size=(128, classes)).astype(np.float32)],
        [np.zeros(128, np.float32), np.zeros(classes, np.float32)], [True, False])
    return Evaluator(rng.integers(-128, 128, (levels, n, views, dim), dtype=np.int8),
                     rng.uniform(0.01, 0.1, levels).astype(np.float32),
                     rng.integers(-10, 10, levels).astype(np.int32),
                     rng.integers(0, classes, n), clf, "max")


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ladder", nargs="?")
    ap.add_argument("--split", default="val")
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--levels", type=int, default=10)
    ap.add_argument("--views", type=int, default=12)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--classes", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    model_hash = None
    if args.ladder:
        from slimedge.ladder.store import read_manifest

        ev = Evaluator.from_ladder(args.ladder, args.split)
        model_hash = read_manifest(args.ladder)["model_hash"]
        source = f"ladder {args.ladder} ({args.split})"
    else:
        ev = synthetic(args.objects, args.levels, args.views, args.dim, args.classes, args.seed)
        source = "synthetic"
    rng = np.random.default_rng(args.seed)
    V = ev.n_views
    cases = [(rng.integers(0, ev.n_levels, V), rng.random(V) < 0.8) for _ in range(16)]
    for _, live in cases:
        live[rng.integers(V)] = True

    def ours() -> None:
        for lv, live in cases:
            ev.accuracy(lv, live)

    def reference() -> None:
        for lv, live in cases:
            feats, scale, zp = ev.gather(lv)
            pooled, empty = pool_reference(feats, live, None, ev.mode, scale, zp)
            pred = ev.classifier.predict(pooled)
            pred[empty] = -1
            np.mean(pred == ev.labels)

    # Same answers first: the benchmark compares equal work.
    for lv, live in cases:
        feats, scale, zp = ev.gather(lv)
        pooled, empty = pool_reference(feats, live, None, ev.mode, scale, zp)
        pred = ev.classifier.predict(pooled)
        pred[empty] = -1
        assert np.mean(pred == ev.labels) == ev.accuracy(lv, live)

    repeats = max(3, args.repeats // len(cases))
    t_ours = median_ms(ours, repeats) / len(cases)
    t_ref = median_ms(reference, repeats) / len(cases)
    N, D = ev.features.shape[1], ev.features.shape[3]
    result = {
        "source": source, "objects": int(N), "views": V, "dim": int(D),
        "levels": ev.n_levels, "pool_mode": ev.mode, "model_hash": model_hash,
        "evaluator_ms": t_ours, "numpy_pooling_ms": t_ref, "speedup": t_ref / t_ours,
        "evaluations_per_s": 1e3 / t_ours,
        "versions": {"slimedge": slimedge.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "machine": platform.machine()},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"one evaluation: {source}, N={N} V={V} D={D}, {ev.n_levels} levels, "
          f"pool {ev.mode}, median, 1 thread")
    print(f"{'':<28}{'ms / evaluation':>16}")
    print(f"{'evaluator (C++ pooling)':<28}{t_ours:>16.3f}")
    print(f"{'same with NumPy pooling':<28}{t_ref:>16.3f}")
    print(f"ratio {result['speedup']:.1f}x; {result['evaluations_per_s']:.0f} evaluations/s")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
          + (f"; model {model_hash[:12]}" if model_hash else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
