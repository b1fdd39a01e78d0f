"""Handler of `slimedge simulate`: the sweep, then the results Parquet, the summary JSON, the
plots and `simulate.md` in `--out`.

`--json` prints `scenarios`, `wall_s`, `results` (the Parquet path) and
`summary[generator][cost_model][method]` (`results.summarize`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from slimedge.simulate import COST_MODELS, GENERATORS, SimulateError

RESULTS_FILE = "results.parquet"
SUMMARY_FILE = "summary.json"
MARKDOWN_FILE = "simulate.md"


def add_simulate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ladder", required=True, help="ladder directory (slimedge ladder build)")
    p.add_argument("--scenarios", type=int, required=True,
                   help="random fleets per generator")
    p.add_argument("--generator", default="all", choices=(*GENERATORS, "all"),
                   help="catalog mixes, the authors' published generator, or both")
    p.add_argument("--cost-model", default="both", choices=(*COST_MODELS, "both"),
                   help="device inference-time model the plans and baselines are scored with")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler to run on (default: a local cluster, one process per "
                        "core)")
    p.add_argument("--workers", type=int, default=None,
                   help="local cluster processes (default: one per core; not with --scheduler)")
    p.add_argument("--seed", type=int, default=0, help="seed every scenario derives from")
    p.add_argument("--out", default="slimedge-simulate",
                   help="folder for chunks, results, summary, plots and simulate.md "
                        "(a rerun resumes)")
    p.add_argument("--no-plot", dest="plot", action="store_false")


def choices(value: str, known: tuple[str, ...], every: str) -> tuple[str, ...]:
    return known if value == every else (value,)


def finish(run: Any, args: argparse.Namespace, generators: tuple[str, ...],
           cost_models: tuple[str, ...]) -> dict[str, Any]:
    """Results, summary, plots and simulate.md from the run's chunks."""
    from slimedge.artifacts import atomic_file, write_json
    from slimedge.provenance import cpu_name
    from slimedge.simulate.markdown import document
    from slimedge.simulate.results import counts, plan_seconds, read_rows, summarize
    from slimedge.simulate.runner import read_runs
    from slimedge.simulate.state import ladder_digest

    out = Path(args.out)
    rows = read_rows(run.paths())
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    table = ds.dataset([str(p) for p in run.paths()], format="parquet").to_table()
    with atomic_file(out / RESULTS_FILE, "wb") as fh:
        pq.write_table(table, fh)
    summary = summarize(rows)
    plots: dict[str, str] = {}
    if args.plot:
        from slimedge.simulate.plots import write_plots

        plots = write_plots(rows, out)
    n = int(args.scenarios)
    runs, bad_runs = read_runs(out)
    info = {
        "command": "slimedge " + " ".join(shlex.quote(a) for a in getattr(
            args, "argv", sys.argv[1:])),
        "ladder": str(args.ladder), "ladder_sha256": ladder_digest(args.ladder),
        "seed": int(args.seed), "scenarios": n * len(generators),
        "scenarios_per_generator": n, "generators": list(generators),
        "cost_models": list(cost_models), "workers": run.workers or "(none started)",
        "cpu": cpu_name(), "wall_s": run.wall_s,
        "computed_scenarios": sum(c.scenarios for c in run.computed),
        "reused_scenarios": sum(c.scenarios for c in run.reused),
        # every run into this folder (a resumed sweep's cost is the sum of its runs)
        "runs": runs, "unreadable_run_lines": bad_runs,
        "all_runs_wall_s": sum(float(r["wall_s"]) for r in runs),
        "all_runs_computed_scenarios": sum(int(r["computed_scenarios"]) for r in runs),
        "plan_seconds": plan_seconds(rows), "counts": counts(rows), "summary": summary,
        "plots": plots,
    }
    write_json(out / SUMMARY_FILE, info)
    with atomic_file(out / MARKDOWN_FILE) as fh:
        fh.write(document(info))
    return {"scenarios": n * len(generators), "wall_s": run.wall_s,
            "results": str(out / RESULTS_FILE), "summary": summary}


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.simulate.runner import run_sweep

    if args.scheduler and args.workers is not None:
        raise SimulateError("--workers: only for the local cluster; the scheduler at "
                            "--scheduler has its own workers")
    if not Path(args.ladder).is_dir():
        raise SimulateError(f"--ladder {args.ladder}: no such folder")
    generators = choices(args.generator, GENERATORS, "all")
    cost_models = choices(args.cost_model, COST_MODELS, "both")
    run = run_sweep(args.ladder, args.scenarios, out=args.out, generators=generators,
                    cost_models=cost_models, scheduler=args.scheduler, workers=args.workers,
                    seed=args.seed, progress=not getattr(args, "json", False))
    return finish(run, args, generators, cost_models)


def summary_text(summary: dict[str, Any]) -> str:
    """What `slimedge simulate` prints without --json: the table and where things are."""
    from slimedge.simulate.markdown import table

    return (f"{summary['scenarios']} scenarios in {summary['wall_s']:.1f} s; rows: "
            f"{summary['results']}\n\n{table(summary['summary'])}")
