#!/usr/bin/env python3
"""The table `docs/benchmarks.md` takes from a finished `slimedge simulate` run: wall time and
rate of the run, plan time per scenario, and per generator and cost model the plan and every
baseline (latency ratio vs unpruned and vs best uniform, energy ratio: median / p90 / max;
fits; floors met on val and test), beside the paper's "up to 4.7x".

    slimedge simulate --ladder slimedge-work/ladder --scenarios 1000 --out sim1000
    python tools/simulate_table.py sim1000          # markdown; --json for one object

The rate is over the scenarios computed in the run that wrote the summary (a resumed run
counts only what it computed), and over every run logged in the folder's `runs.jsonl`; CPU,
library versions and the ladder's hashes are printed with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slimedge.ladder.store import read_manifest
from slimedge.provenance import versions
from slimedge.simulate.commands import SUMMARY_FILE
from slimedge.simulate.markdown import (
    PAPER_CLAIM,
    counts_table,
    floors_table,
    runs_lines,
    table,
)


def report(folder: Path) -> dict:
    path = folder / SUMMARY_FILE
    if not path.is_file():
        raise SystemExit(f"{folder}: no {SUMMARY_FILE} (run slimedge simulate --out {folder})")
    info = json.loads(path.read_text())
    manifest = read_manifest(info["ladder"])
    computed = info["computed_scenarios"]
    return {
        "command": info["command"], "cpu": info["cpu"], "workers": info["workers"],
        "versions": versions(("dask", "distributed", "pyarrow", "pymoo")),
        "ladder": info["ladder"], "ladder_manifest_sha256": info["ladder_sha256"],
        "model_hash": manifest["model_hash"],
        "scenarios": info["scenarios"], "computed_scenarios": computed,
        "wall_s": info["wall_s"],
        "seconds_per_scenario": info["wall_s"] / computed if computed else None,
        "plan_seconds_median": info["plan_seconds"]["median"],
        "runs": info.get("runs", []),
        "all_runs_wall_s": info.get("all_runs_wall_s"),
        "all_runs_computed_scenarios": info.get("all_runs_computed_scenarios"),
        "counts": info["counts"], "summary": info["summary"],
    }


def markdown(r: dict) -> str:
    rate = (f"{r['seconds_per_scenario']:.2f} s per scenario (wall, all workers)"
            if r["seconds_per_scenario"] else "nothing computed in this run")
    lines = [f"`{r['command']}`", "",
             f"CPU: {r['cpu']}; {r['workers']} worker processes; versions: "
             + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + "; ladder model "
             f"`{r['model_hash'][:12]}` (manifest `{r['ladder_manifest_sha256'][:12]}`).", "",
             f"{r['computed_scenarios']} scenarios computed in {r['wall_s']:.1f} s: {rate}; "
             f"one plan (search + contingency + baselines, one cost model) "
             f"{r['plan_seconds_median']:.2f} s median on one worker.", "",
             *runs_lines(r),
             PAPER_CLAIM, "", table(r["summary"]), "", floors_table(r["summary"]), "",
             counts_table(r["counts"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the --out folder of a slimedge simulate run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = report(args.folder)
    print(json.dumps(r) if args.json else markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
