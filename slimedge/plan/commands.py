"""Handler of `slimedge plan`: search per-view levels for a fleet and write the plan.

When no configuration meets the constraints the handler raises `PlanInfeasibleError`: its message
is the explanation, its `summary` the machine-readable answer (`{"infeasible": [...]}`) and
its `exit_code` 3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slimedge.plan import PlanError
from slimedge.plan.search import (
    DEFAULT_FRONT_THRESHOLDS,
    DEFAULT_GENERATIONS,
    DEFAULT_PATIENCE,
    DEFAULT_POP,
    DEFAULT_STALL_EVALUATIONS,
    PREFER,
)

COST_MODEL_CHOICES = ("authors", "per-layer", "mac")


def add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", required=True, help="fleet name (firmware_configs/fleets) or file")
    p.add_argument("--ladder", required=True, help="ladder directory (slimedge ladder build)")
    p.add_argument("--min-accuracy", type=float, required=True,
                   help="floor on nominal accuracy (fraction, val split)")
    p.add_argument("--k-failures", type=int, default=None,
                   help="failure sets of size 1..K: worst-K accuracy and contingency rows "
                        "(default 1)")
    p.add_argument("--min-accuracy-k", type=float, default=None,
                   help="floor on the worst accuracy with any K devices failed")
    p.add_argument("--max-latency-ms", type=float, default=None, help="system latency cap")
    p.add_argument("--epsilon", type=float, default=2e-4,
                   help="failure sets at or below this probability are left out of the "
                        "expected accuracy (their mass is reported)")
    p.add_argument("--out", required=True, help="plan JSON to write (.pareto.csv/.png beside)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pop", type=int, default=DEFAULT_POP, help="NSGA-II population")
    p.add_argument("--generations", type=int, default=DEFAULT_GENERATIONS,
                   help="NSGA-II generations after the latency scan and energy chains (0: none)")
    p.add_argument("--stall-evaluations", type=int, default=DEFAULT_STALL_EVALUATIONS,
                   help="stop NSGA-II after this many accuracy evaluations without a lower "
                        "latency (0: never)")
    p.add_argument("--patience", type=int, default=DEFAULT_PATIENCE,
                   help="stop NSGA-II after this many generations without a lower latency "
                        "(default, 0: no such limit)")
    p.add_argument("--front-thresholds", type=int, default=DEFAULT_FRONT_THRESHOLDS,
                   help="latency thresholds the energy chains of the front start from")
    p.add_argument("--objectives", default=None,
                   help="latency,accuracy then any of energy, battery, memory (default: "
                        "latency,accuracy,energy and battery where a device runs on one)")
    p.add_argument("--prefer", default="latency", choices=PREFER,
                   help="which point of the front is the plan: least latency, least energy "
                        "per frame, or the balanced knee (see the plan's selection_rule)")
    p.add_argument("--cost-model", default=None, choices=COST_MODEL_CHOICES,
                   help="device inference-time model (default: per-layer where the ladder "
                        "carries its calibration, else mac)")
    p.add_argument("--link-latency", default="expected", choices=("expected", "worst"),
                   help="link wait: the expected one (half a connection interval) or the "
                        "worst case")
    p.add_argument("--down", default=None, metavar="DEV,...",
                   help="devices permanently failed: their views are never live")
    p.add_argument("--frame-period-ms", type=float, default=None,
                   help="one frame per this many ms, for battery life (default 1000)")
    p.add_argument("--split", default="val", choices=["val", "test"],
                   help="split the search is scored on")
    p.add_argument("--importance", default=None,
                   help="view importance JSON (slimedge importance --out) to reuse")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="score candidates on this Dask scheduler (needs dask.distributed, "
                        "which slimedge does not install)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false")
    p.add_argument("--no-plot", dest="plot", action="store_false")


def _load_importance(path: str, manifest_model_hash: str, views: int) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlanError(f"{p}: cannot read view importance ({exc})") from None
    for key in ("shapley", "ratio"):
        if not isinstance(data.get(key), list) or len(data[key]) != views:
            raise PlanError(f"{p}: field '{key}' must list {views} values (one per view)")
    owner = data.get("ladder_model_hash")
    if owner is not None and owner != manifest_model_hash:
        raise PlanError(f"{p}: importance of ladder model {str(owner)[:12]}, not of this "
                        f"ladder's model ({manifest_model_hash[:12]})")
    return data


def parse_down(text: str | None) -> tuple[str, ...]:
    """`--down cam01,cam04` -> ("cam01", "cam04"); the devices are checked against the fleet
    by `PlanContext.build`."""
    if text is None:
        return ()
    ids = tuple(d.strip() for d in text.split(","))
    if not all(ids):
        raise PlanError(f"--down: expected device ids separated by commas, got {text!r}")
    return ids


def _dask_client(address: str) -> Any:
    try:
        from dask.distributed import Client
    except ImportError:
        raise PlanError("--dask: dask.distributed is not installed (pip install "
                        "'dask[distributed]')") from None
    return Client(address)


def plan(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.devices import load_fleet, resolve_fleet_path
    from slimedge.plan.context import Constraints, PlanContext
    from slimedge.plan.plan_file import side_paths, write_plan
    from slimedge.plan.planner import make_plan, plan_summary
    from slimedge.plan.search import SearchSettings

    fleet = load_fleet(resolve_fleet_path(args.fleet))
    k = args.k_failures if args.k_failures is not None else 1
    constraints = Constraints(min_accuracy=args.min_accuracy, k_failures=k,
                              min_accuracy_k=args.min_accuracy_k,
                              max_latency_ms=args.max_latency_ms, epsilon=args.epsilon)
    objectives = None
    if args.objectives:
        from slimedge.plan.problem import check_objectives

        try:
            objectives = check_objectives(o.strip() for o in args.objectives.split(",")
                                          if o.strip())
        except ValueError as exc:
            raise PlanError(f"--{exc}") from None
    settings = SearchSettings(pop=args.pop, generations=args.generations, seed=args.seed,
                              objectives=objectives, patience=args.patience or None,
                              stall_evaluations=args.stall_evaluations or None,
                              progress=not getattr(args, "json", False), prefer=args.prefer,
                              front_thresholds=args.front_thresholds).validate()
    down = parse_down(args.down)
    options: dict[str, Any] = {"down": down, "cost_model": args.cost_model,
                               "link_latency": args.link_latency}
    if args.frame_period_ms is not None:
        options["frame_period_ms"] = args.frame_period_ms
    ctx = PlanContext.from_ladder(args.ladder, fleet, constraints, split=args.split, **options)
    importance = (_load_importance(args.importance, ctx.ladder["model_hash"], ctx.views)
                  if args.importance else None)
    client = _dask_client(args.dask) if getattr(args, "dask", None) else None
    try:
        outcome = make_plan(ctx, settings, importance=importance, baselines=args.baselines,
                            plot=args.plot, client=client)
    finally:
        if client is not None:
            client.close()
    written = write_plan(args.out, outcome.plan, outcome.pareto_rows, outcome.png)
    csv_path, png_path = side_paths(args.out)
    summary = plan_summary(written)
    summary["path"] = str(args.out)
    summary["pareto_csv"] = str(csv_path)
    summary["pareto_png"] = str(png_path) if outcome.png else None
    return summary
