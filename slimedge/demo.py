"""`slimedge demo`: the whole pipeline on built-in defaults, into one work folder.

Stages so far: dataset (built-in generator) -> report. Each later stage adds itself here.
A stage whose inputs did not change is skipped, so a second run is cheap and an interrupted
run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from slimedge.pipeline import Stage, WorkFolder


def _dataset_stage(work: WorkFolder, quick: bool, workers: int | None, progress: bool) -> Stage:
    from slimedge.data.container import FORMAT_VERSION
    from slimedge.data.generator import GeneratorConfig

    config = GeneratorConfig.quick() if quick else GeneratorConfig.default()

    def run(out: Path) -> dict[str, Any]:
        from slimedge.data.generator import generate

        ds = generate(config, workers=workers, progress=progress)
        digest = ds.save(out)
        return {"content_hash": digest, "objects": ds.n_objects, "views": ds.n_views,
                "classes": len(ds.class_names), "image_size": list(ds.image_size)}

    inputs = {"generator": config.to_dict(), "format_version": FORMAT_VERSION}
    return Stage("dataset", "dataset", inputs, run)


def _report_stage(work: WorkFolder) -> Stage:
    from slimedge.report import REPORT_VERSION, write_report

    inputs = {"dataset": work.record("dataset").get("content_hash"), "version": REPORT_VERSION}

    def run(out: Path) -> dict[str, Any]:
        return write_report(work, out)

    return Stage("report", "report", inputs, run)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    work = WorkFolder(args.work)
    progress = not args.json
    outcomes = []
    # Stages are built one at a time: each reads the records of the ones before it.
    for make in (
        lambda: _dataset_stage(work, args.quick, args.workers, progress),
        lambda: _report_stage(work),
    ):
        stage = make()
        if progress:
            print(f"[demo] {stage.name} ...", file=sys.stderr, flush=True)
        outcome = work.run(stage, force=args.force)
        if progress:
            print(f"[demo] {stage.name}: {outcome.status} ({outcome.seconds:.1f} s)",
                  file=sys.stderr, flush=True)
        outcomes.append(outcome)
    return {
        "work": str(work.root),
        "quick": bool(args.quick),
        "stages": {o.name: {"status": o.status, "seconds": round(o.seconds, 3), **o.record}
                   for o in outcomes},
        "report": str(work.path("report") / "index.md"),
    }
