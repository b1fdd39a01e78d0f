#!/usr/bin/env python3
"""The plan and every baseline, side by side, for several fleets and cost models, under the same
floors: latency, energy per frame, nominal / expected / worst-k accuracy on val and test, and
each baseline's latency and energy over the plan's ("does not fit" where it does not fit memory).

    python tools/plan_compare.py --ladder slimedge-work/ladder \\
        --fleets mixed12,pi4x12,published3class --cost-models per-layer,authors

Floors default to the demo's (0.97 / 0.93 of the unpruned val accuracy, k = 1). Each (fleet,
cost model) is planned with the default search; the importance is computed once per ladder.
Prints one table per (fleet, cost model); `--json` prints one object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

import slimedge
from slimedge.devices import load_fleet, resolve_fleet_path
from slimedge.ladder.store import read_manifest
from slimedge.plan import PlanInfeasibleError
from slimedge.plan.context import Constraints, PlanContext
from slimedge.plan.planner import importance_of, make_plan
from slimedge.plan.search import SearchSettings


def row(name: str, fig: dict, plan: dict | None) -> dict:
    val, test = fig["val"], fig.get("test") or {}
    out = {"name": name, "levels": fig["levels"], "latency_ms": fig["latency_ms"],
           "energy_mj": fig["energy_mj"], "fits": fig["fits"],
           "meets": fig["meets"]["all"],
           "val": {k: val[k] for k in ("accuracy", "expected_accuracy", "worst_k_accuracy")},
           "test": {k: test.get(k) for k in ("accuracy", "expected_accuracy",
                                             "worst_k_accuracy")}}
    if plan is not None:
        out["latency_vs_plan"] = fig.get("latency_vs_plan")
        out["energy_vs_plan"] = fig.get("energy_vs_plan")
    return out


def compare(ladder: str, fleet_name: str, cost_model: str, constraints: Constraints,
            importance: dict, settings: SearchSettings) -> dict:
    ctx = PlanContext.from_ladder(ladder, load_fleet(resolve_fleet_path(fleet_name)),
                                  constraints, cost_model=cost_model)
    t0 = time.perf_counter()
    try:
        out = make_plan(ctx, settings, importance=importance, plot=False)
    except PlanInfeasibleError as exc:
        return {"fleet": fleet_name, "cost_model": ctx.cost.cost_model, "infeasible": str(exc),
                "baselines": exc.summary.get("baselines", {})}
    plan = out.plan
    fig = {**plan["predicted"], "levels": [v["level_index"] for v in plan["views"]],
           "fits": plan["predicted"]["meets"]["memory"]}
    return {"fleet": fleet_name, "cost_model": ctx.cost.cost_model,
            "link_latency": ctx.cost.link_latency, "seconds": time.perf_counter() - t0,
            "plan": row("plan", fig, None),
            "baselines": [row(n, b, plan) for n, b in plan["baselines"].items()]}


def _ratio(x: object) -> str:
    return f"{x:.2f}x" if isinstance(x, int | float) else str(x)


def _acc(d: dict, k: str) -> str:
    return "-" if d.get(k) is None else f"{d[k]:.3f}"


def print_table(res: dict) -> None:
    print(f"\n{res['fleet']} — cost model {res['cost_model']}, link "
          f"{res.get('link_latency', '?')}")
    if "infeasible" in res:
        print(f"  no plan: {res['infeasible']}")
        return
    print(f"{'':<16}{'latency ms':>11}{'mJ/frame':>10}{'nom val':>8}{'exp val':>8}"
          f"{'wk val':>8}{'nom test':>9}{'exp test':>9}{'wk test':>8}{'meets':>6}"
          f"{'lat ratio':>13}{'E ratio':>13}  levels")
    for r in [res["plan"], *res["baselines"]]:
        v, t = r["val"], r["test"]
        print(f"{r['name']:<16}{r['latency_ms']:>11.4g}{r['energy_mj']:>10.4g}"
              f"{_acc(v, 'accuracy'):>8}{_acc(v, 'expected_accuracy'):>8}"
              f"{_acc(v, 'worst_k_accuracy'):>8}{_acc(t, 'accuracy'):>9}"
              f"{_acc(t, 'expected_accuracy'):>9}{_acc(t, 'worst_k_accuracy'):>8}"
              f"{str(r['meets']):>6}{_ratio(r.get('latency_vs_plan', '')):>13}"
              f"{_ratio(r.get('energy_vs_plan', '')):>13}  "
              f"{'-'.join(str(j) for j in r['levels'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ladder", required=True)
    ap.add_argument("--fleets", default="mixed12,pi4x12,published3class")
    ap.add_argument("--cost-models", default="per-layer,authors")
    ap.add_argument("--min-accuracy-rel", type=float, default=0.97)
    ap.add_argument("--k-failures", type=int, default=1)
    ap.add_argument("--min-accuracy-k-rel", type=float, default=0.93)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    manifest = read_manifest(args.ladder)
    full = float(manifest["levels"][0]["val_accuracy"])
    constraints = Constraints(min_accuracy=round(args.min_accuracy_rel * full, 4),
                              k_failures=args.k_failures,
                              min_accuracy_k=round(args.min_accuracy_k_rel * full, 4))
    fleets = [f.strip() for f in args.fleets.split(",") if f.strip()]
    models = [m.strip() for m in args.cost_models.split(",") if m.strip()]
    first = PlanContext.from_ladder(args.ladder, load_fleet(resolve_fleet_path(fleets[0])),
                                    constraints)
    imp = importance_of(first)
    imp = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
           for k, v in imp.items()}
    settings = SearchSettings(seed=args.seed)
    results = [compare(args.ladder, f, m, constraints, imp, settings)
               for f in fleets for m in models]
    summary = {"slimedge": slimedge.__version__, "python": platform.python_version(),
               "ladder": args.ladder, "model_hash": manifest["model_hash"][:16],
               "unpruned_val_accuracy": full, "constraints": constraints.to_dict(),
               "results": results}
    if args.json:
        print(json.dumps(summary, default=float))
        return 0
    print(f"slimedge {summary['slimedge']}, python {summary['python']}; ladder "
          f"{args.ladder} (model {summary['model_hash']}, unpruned val accuracy {full:.4f}); "
          f"floors {constraints.to_dict()}")
    for res in results:
        print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
