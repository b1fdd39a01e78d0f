"""`slimedge demo`: the whole pipeline on built-in defaults, into one work folder.

Stages: dataset (built-in generator) -> model (MVCNN with failout) -> ladder (pruning levels
with measured costs and cached features) -> importance -> plan (for the default mixed fleet)
-> deploy (signed, verified per-device artifacts) -> report.
A stage whose inputs did not change is skipped, so a second run is cheap and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError
from slimedge.pipeline import Stage, WorkFolder, fingerprint

DEMO_FLEET = "mixed12"  # firmware_configs/fleets/mixed12.yaml
QUICK_CLASSES = ("airplane", "bed", "bottle", "car", "chair", "cup", "guitar", "lamp", "monitor",
                 "table")


@dataclass(frozen=True)
class DemoSettings:
    generator: Any  # GeneratorConfig
    train: Any  # TrainConfig
    ladder: Any  # LadderConfig
    plan: dict[str, Any]  # floors relative to the unpruned accuracy, search size


def settings(quick: bool) -> DemoSettings:
    from slimedge.data.generator import GeneratorConfig
    from slimedge.ladder.build import LadderConfig
    from slimedge.model.train import TrainConfig

    if quick:
        return DemoSettings(
            # Fewer classes with more objects each: a model worth planning for in seconds.
            generator=GeneratorConfig.quick(classes=QUICK_CLASSES, objects_per_class=30),
            train=TrainConfig(epochs=10, width=0.5, feature_dim=64, head_hidden=64,
                              failout_rate=0.25, failout_warmup_epochs=2, failout_ramp_epochs=2,
                              patience=4),
            ladder=LadderConfig(levels=(0.0, 0.25, 0.5, 0.75), finetune_epochs=1,
                                latency_repeats=20, calibration_images=64),
            plan={"min_accuracy_rel": 0.9, "k": 1, "min_accuracy_k_rel": 0.8, "pop": 24,
                  "generations": 15},
        )
    return DemoSettings(
        generator=GeneratorConfig.default(),
        train=TrainConfig(epochs=30, failout_rate=0.25, failout_warmup_epochs=3,
                          failout_ramp_epochs=3, patience=6),
        ladder=LadderConfig(),
        plan={"min_accuracy_rel": 0.97, "k": 1, "min_accuracy_k_rel": 0.93, "pop": 64,
              "generations": 80},
    )


def _dataset_stage(work: WorkFolder, s: DemoSettings, workers: int | None,
                   progress: bool) -> Stage:
    from slimedge.data.container import FORMAT_VERSION

    def run(out: Path) -> dict[str, Any]:
        from slimedge.data.generator import generate

        ds = generate(s.generator, workers=workers, progress=progress)
        digest = ds.save(out)
        return {"content_hash": digest, "objects": ds.n_objects, "views": ds.n_views,
                "classes": len(ds.class_names), "image_size": list(ds.image_size)}

    inputs = {"generator": s.generator.to_dict(), "format_version": FORMAT_VERSION}
    return Stage("dataset", "dataset", inputs, run)


def _model_stage(work: WorkFolder, s: DemoSettings, progress: bool) -> Stage:
    def run(out: Path) -> dict[str, Any]:
        from slimedge.data.container import load_dataset
        from slimedge.ladder.build import model_hash
        from slimedge.model.train import train

        result = train(load_dataset(work.path("dataset")), s.train, out_dir=out,
                       progress=progress)
        stage = result.record.get("head_failout") or {}
        return {"model_hash": model_hash(result.record), "val_accuracy": result.val_accuracy,
                "test_accuracy": result.test_accuracy, "best_epoch": result.best_epoch,
                "head_failout_kept_epoch": stage.get("best_epoch")}

    inputs = {"dataset": work.record("dataset").get("content_hash"), "train": s.train.to_dict()}
    return Stage("model", "model", inputs, run)


def _model_on_disk(work: WorkFolder) -> str | None:
    """The hash of the model the work folder holds now, read from its train.json (not from a
    stage record, so a model replaced by hand or by an older version is noticed)."""
    from slimedge.ladder.build import model_hash

    path = work.path("model") / "train.json"
    if not path.is_file():
        return None
    try:
        return model_hash(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise SlimEdgeError(f"{path}: unreadable model record ({exc}); delete the model "
                            "folder to retrain") from exc


def _ladder_stage(work: WorkFolder, s: DemoSettings, progress: bool) -> Stage:
    def run(out: Path) -> dict[str, Any]:
        from slimedge.data.container import load_dataset
        from slimedge.ladder.build import build_ladder

        manifest = build_ladder(load_dataset(work.path("dataset")), work.path("model"), out,
                                s.ladder, progress=progress)
        return {"levels": len(manifest["levels"]), "model_hash": manifest["model_hash"],
                "files_hash": fingerprint(manifest["files"])}

    inputs = {"dataset": work.record("dataset").get("content_hash"),
              "model": _model_on_disk(work), "ladder": s.ladder.to_dict()}
    return Stage("ladder", "ladder", inputs, run)


def _importance_stage(work: WorkFolder) -> Stage:
    def run(out: Path) -> dict[str, Any]:
        from slimedge.artifacts import write_json
        from slimedge.ladder.evaluator import Evaluator
        from slimedge.ladder.importance import view_importance

        ev = Evaluator.from_ladder(work.path("ladder"), "val")
        result = view_importance(ev)
        result["split"] = "val"
        evaluators = {"val": ev, "test": Evaluator.from_ladder(work.path("ladder"), "test")}
        result["vs_failed"] = {split: e.accuracy_vs_failed([0] * ev.n_views)
                               for split, e in evaluators.items()}
        write_json(out, result)
        return {"full_accuracy": result["full_accuracy"]}

    inputs = {"ladder": work.record("ladder").get("files_hash")}
    return Stage("importance", "importance.json", inputs, run)


def _plan_stage(work: WorkFolder, s: DemoSettings, progress: bool) -> Stage:
    """Floors are set relative to the ladder's unpruned accuracy, so the demo asks for the same
    thing whatever the trained model reached."""

    def run(out: Path) -> dict[str, Any]:
        from slimedge.devices import load_fleet, resolve_fleet_path
        from slimedge.plan.context import Constraints, PlanContext
        from slimedge.plan.plan_file import write_plan
        from slimedge.plan.planner import make_plan, plan_summary
        from slimedge.plan.search import SearchSettings

        ladder = work.path("ladder")
        ctx0 = json.loads((ladder / "manifest.json").read_text())
        base = float(ctx0["levels"][0]["val_accuracy"])
        constraints = Constraints(min_accuracy=s.plan["min_accuracy_rel"] * base,
                                  k_failures=s.plan["k"],
                                  min_accuracy_k=s.plan["min_accuracy_k_rel"] * base)
        ctx = PlanContext.from_ladder(ladder, load_fleet(resolve_fleet_path(DEMO_FLEET)),
                                      constraints)
        importance = json.loads(work.path("importance").read_text())
        outcome = make_plan(ctx, SearchSettings(pop=s.plan["pop"],
                                                generations=s.plan["generations"],
                                                progress=progress), importance=importance)
        written = write_plan(out, outcome.plan, outcome.pareto_rows, outcome.png)
        summary = plan_summary(written)
        return {"levels": summary["levels"], "latency_ms": summary["latency_ms"],
                "accuracy": summary["accuracy"]}

    inputs = {"ladder": work.record("ladder").get("files_hash"),
              "importance": work.state.get("importance", {}).get("fingerprint"),
              "fleet": _fleet_files(), "plan": s.plan}
    return Stage("plan", "plan.json", inputs, run)


def _fleet_files() -> dict[str, str]:
    """Hashes of the demo fleet's file and of the board catalog it reads: an edited board or
    fleet file makes the plan (and so the deployment) stale, not just a renamed fleet."""
    from slimedge.artifacts import sha256_file
    from slimedge.devices.catalog import devices_dir
    from slimedge.devices.fleet import resolve_fleet_path

    files = [resolve_fleet_path(DEMO_FLEET), *sorted(devices_dir().glob("*.yaml"))]
    return {f"{p.parent.name}/{p.name}": sha256_file(p) for p in files}


def _deploy_stage(work: WorkFolder, s: DemoSettings, progress: bool) -> Stage:
    def run(out: Path) -> dict[str, Any]:
        from slimedge.export.deploy import export_deployment

        # The deploy gate decides (exactness, int8 vs float by a paired interval and a
        # per-frame margin rule), not a raw agreement floor that near-ties fail by chance.
        summary = export_deployment(DEMO_FLEET, work.path("ladder"), None, out,
                                    dataset=work.path("dataset"), plan=work.path("plan"),
                                    progress=progress)
        gate = summary["gate"]
        return {"agreement": summary["agreement"], "verified": summary["verified"],
                "devices": len(summary["devices"]),
                "gate": {k: gate[k] for k in ("ok", "frames", "float_accuracy", "int8_accuracy",
                                              "accuracy_interval", "near_ties")}}

    from slimedge.export.gate import GATE_SETTINGS

    inputs = {"plan": work.state.get("plan", {}).get("fingerprint"),
              "ladder": work.record("ladder").get("files_hash"),
              "gate": GATE_SETTINGS}
    return Stage("deploy", "deploy", inputs, run)


def _report_stage(work: WorkFolder) -> Stage:
    from slimedge.report import REPORT_VERSION, write_report

    inputs = {name: work.state.get(name, {}).get("fingerprint")
              for name in ("dataset", "model", "ladder", "importance", "plan", "deploy")}
    inputs["version"] = REPORT_VERSION

    def run(out: Path) -> dict[str, Any]:
        return write_report(work, out)

    return Stage("report", "report", inputs, run)



def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    work = WorkFolder(args.work)
    progress = not args.json
    s = settings(args.quick)
    outcomes = []
    # Stages are built one at a time: each reads the records of the ones before it.
    for make in (
        lambda: _dataset_stage(work, s, args.workers, progress),
        lambda: _model_stage(work, s, progress),
        lambda: _ladder_stage(work, s, progress),
        lambda: _importance_stage(work),
        lambda: _plan_stage(work, s, progress),
        lambda: _deploy_stage(work, s, progress),
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
