#!/usr/bin/env python3
"""Benchmark: wall time of one plan (search + contingency table + baselines) on one core.

Default case: the mixed12 fleet (12 devices, one view each) and a synthetic ladder of realistic
size (10 levels, N = 300 val objects, V = 12, D = 128, a 128-unit hidden layer), default search
settings, k = 2 failures. `--ladder PATH` runs the same on a real ladder. Floors default to
fractions of the unpruned accuracy (`--min-accuracy-rel`, `--min-accuracy-k-rel`) so the same
command makes sense on any ladder; absolute floors override them.

The demo's floors (what `slimedge demo` plans with: 0.97 / 0.93 of the unpruned accuracy,
k = 1): `--min-accuracy-rel 0.97 --k-failures 1 --min-accuracy-k-rel 0.93`.

The process is pinned to one CPU and BLAS to one thread before NumPy loads. `--repeats N` runs
the plan N times (a fresh accuracy memo each time) and reports the median and every run: the
machine may be shared, so single runs are noisy. Prints provenance (versions, ladder hash,
settings) and a table of phases; `--json` prints one object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import numpy as np  # noqa: E402
import pymoo  # noqa: E402

import slimedge  # noqa: E402
from slimedge.devices import load_fleet, resolve_fleet_path  # noqa: E402
from slimedge.ladder.store import read_manifest  # noqa: E402
from slimedge.plan.context import Constraints, PlanContext  # noqa: E402
from slimedge.plan.planner import importance_of, make_plan  # noqa: E402
from slimedge.plan.search import (  # noqa: E402
    DEFAULT_GENERATIONS,
    DEFAULT_PATIENCE,
    DEFAULT_POP,
    DEFAULT_STALL_EVALUATIONS,
    ENUMERATE_BUDGET,
    SearchSettings,
)
from slimedge.plan.synthetic import SyntheticSpec, write_synthetic_ladder  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ladder", default=None, help="ladder directory (default: synthetic)")
    ap.add_argument("--fleet", default="mixed12")
    ap.add_argument("--min-accuracy", type=float, default=None)
    ap.add_argument("--min-accuracy-rel", type=float, default=0.93,
                    help="floor as a fraction of the unpruned val accuracy")
    ap.add_argument("--k-failures", type=int, default=2)
    ap.add_argument("--min-accuracy-k", type=float, default=None)
    ap.add_argument("--min-accuracy-k-rel", type=float, default=0.87)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pop", type=int, default=DEFAULT_POP)
    ap.add_argument("--generations", type=int, default=DEFAULT_GENERATIONS)
    ap.add_argument("--patience", type=int, default=DEFAULT_PATIENCE)
    ap.add_argument("--stall-evaluations", type=int, default=DEFAULT_STALL_EVALUATIONS)
    ap.add_argument("--prefer", default="latency")
    ap.add_argument("--enumerate-budget", type=int, default=ENUMERATE_BUDGET,
                    help="boxes of at most this many configurations are enumerated exactly")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-plot", dest="plot", action="store_false")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    tmp = None
    t0 = time.perf_counter()
    if args.ladder is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-plan-")
        args.ladder = os.path.join(tmp.name, "ladder")
        write_synthetic_ladder(args.ladder, SyntheticSpec())
    t_ladder = time.perf_counter() - t0
    manifest = read_manifest(args.ladder)
    full = manifest["levels"][0].get("val_accuracy")
    fleet = load_fleet(resolve_fleet_path(args.fleet))
    a_min = args.min_accuracy if args.min_accuracy is not None else args.min_accuracy_rel * full
    a_k = (args.min_accuracy_k if args.min_accuracy_k is not None
           else args.min_accuracy_k_rel * full)
    constraints = Constraints(min_accuracy=round(a_min, 4), k_failures=args.k_failures,
                              min_accuracy_k=round(a_k, 4) if args.k_failures else None)
    settings = SearchSettings(pop=args.pop, generations=args.generations, seed=args.seed,
                              patience=args.patience or None, prefer=args.prefer,
                              stall_evaluations=args.stall_evaluations or None,
                              enumerate_budget=args.enumerate_budget)

    t0 = time.perf_counter()
    ctx = PlanContext.from_ladder(args.ladder, fleet, constraints)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    imp = importance_of(ctx)
    t_imp = time.perf_counter() - t0
    runs = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        out = make_plan(ctx, settings, importance=imp, plot=args.plot)
        runs.append((time.perf_counter() - t0, out))
    t_plan, out = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    s = out.plan["search"]
    pred = out.plan["predicted"]
    ev = ctx.evaluator
    result = {
        "provenance": {
            "slimedge": slimedge.__version__, "pymoo": pymoo.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpus_pinned": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else None,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "ladder": args.ladder if tmp is None else "synthetic (SyntheticSpec defaults)",
            "model_hash": manifest["model_hash"][:16],
            "levels": ev.n_levels, "objects": int(len(ev.labels)), "views": ev.n_views,
            "feature_dim": int(ev.features.shape[-1]), "fleet": fleet.name,
        },
        "settings": settings.to_dict(),
        "constraints": constraints.to_dict(),
        "seconds": {
            "load": t_load, "importance": t_imp, "search": s["seconds"],
            "contingency+baselines+figures": t_plan - s["seconds"],
            "make_plan": t_plan,
            "plan_total": t_load + t_imp + t_plan,
        },
        "make_plan_runs": [r[0] for r in runs],
        "search_stages": s.get("stages"),
        "synthetic_ladder_seconds": t_ladder if tmp is not None else None,
        "search": {k: s[k] for k in ("generations_run", "evaluations", "unique_candidates",
                                     "feasible_candidates", "accuracy_evaluations",
                                     "accuracy_cache_hits", "failure_sets")},
        "plan": {"levels": [v["level_index"] for v in out.plan["views"]],
                 "latency_ms": pred["latency_ms"], "energy_mj": pred.get("energy_mj"),
                 "accuracy": pred["val"]["accuracy"],
                 "expected_accuracy": pred["val"]["expected_accuracy"],
                 "worst_k_accuracy": pred["val"]["worst_k_accuracy"]},
        "baselines": {n: {"latency_ms": b["latency_ms"], "accuracy": b["val"]["accuracy"],
                          "energy_mj": b.get("energy_mj"), "fits": b["fits"],
                          "meets": b["meets"]["all"]}
                      for n, b in out.plan["baselines"].items()},
    }
    if tmp is not None:
        tmp.cleanup()
    if args.json:
        print(json.dumps(result))
        return 0
    p = result["provenance"]
    print(f"slimedge {p['slimedge']}  pymoo {p['pymoo']}  numpy {p['numpy']}  "
          f"python {p['python']} ({p['machine']}), {p['cpus_pinned']} CPU pinned, "
          f"BLAS threads {p['blas_threads']}")
    print(f"ladder: {p['ladder']} (model {p['model_hash']}), L={p['levels']} N={p['objects']} "
          f"V={p['views']} D={p['feature_dim']}; fleet {p['fleet']}")
    print(f"constraints: {constraints.to_dict()}")
    print(f"settings: pop {args.pop}, generations {args.generations}, patience "
          f"{args.patience}, seed {args.seed}, prefer {args.prefer}; make_plan runs (s): "
          + ", ".join(f"{t:.2f}" for t in result["make_plan_runs"]) + " (median below)")
    print()
    print(f"{'phase':<32}{'seconds':>10}")
    for k, v in result["seconds"].items():
        print(f"{k:<32}{v:>10.2f}")
    print()
    for name, st in (result["search_stages"] or {}).items():
        print(f"  search stage {name:<17}{st.get('seconds', float('nan')):>10.2f}  "
              + ", ".join(f"{k} {v}" for k, v in st.items() if k != "seconds"))
    print()
    for k, v in result["search"].items():
        print(f"{k:<32}{v:>10}")
    pl = result["plan"]
    print(f"\nplan levels {pl['levels']}: {pl['latency_ms']:.4g} ms, "
          f"{pl['energy_mj']:.4g} mJ/frame, accuracy "
          f"{pl['accuracy']:.4f}, expected {pl['expected_accuracy']:.4f}, worst-k "
          f"{pl['worst_k_accuracy']:.4f}")
    print(f"{'baseline':<18}{'latency ms':>12}{'mJ/frame':>10}{'accuracy':>10}{'fits':>6}"
          f"{'meets':>7}{'latency ratio':>15}")
    for n, b in result["baselines"].items():
        ratio = (f"{b['latency_ms'] / pl['latency_ms']:.2f}x" if b["fits"]
                 else "does not fit")
        print(f"{n:<18}{b['latency_ms']:>12.4g}{b['energy_mj']:>10.4g}{b['accuracy']:>10.4f}"
              f"{str(b['fits']):>6}{str(b['meets']):>7}{ratio:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
