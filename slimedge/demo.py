"""`slimedge demo`: the whole pipeline on built-in defaults, into one work folder.

Stages: dataset (built-in generator) -> model (MVCNN with failout) -> ladder (pruning levels
with measured costs and cached features) -> importance -> plan (for the default mixed fleet)
-> simulate (a small sweep of random fleets, plan vs every baseline) -> deploy (signed,
verified per-device artifacts) -> fleet (the deployment run as a local fleet, one device
SIGKILLed mid-stream) -> report.
A stage whose inputs did not change is skipped, so a second run is cheap and an
interrupted run resumes where it stopped.

`--seed` drives every learning and search draw (training's weights, object order, failout and
augmentation; the ladder's calibration and fine-tuning; the planner's search). The dataset
does not follow it: it is the fixed world every seed learns from, so runs with different seeds
differ in what was learnt, not in what was seen.

A stage whose goal the data cannot meet (an infeasible plan) is "unmet": its reason goes to the
console, the report and the summary, the stages that need its output are "blocked", and the
run goes on with the rest (the report is still written) and exits 0. Only a defect stops the
run (StageError: non-zero exit, the stage and cause named, with its log).

The console shows one line per stage and progress bars; what third-party libraries print
(warnings, TensorFlow and LiteRT logs) goes to `<work>/logs/<stage>.log` (slimedge.console).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError, StageError
from slimedge.pipeline import OK, Stage, StageOutcome, WorkFolder, fingerprint

DEMO_FLEET = "mixed12"  # firmware_configs/fleets/mixed12.yaml
LOGS_DIR = "logs"  # <work>/logs/<stage>.log: what third-party libraries printed
SIMULATE_SCENARIOS = {False: 3, True: 2}  # random fleets per generator (by --quick)
# one scenario per task: the workers share the sweep evenly (a published-generator scenario on a
# fresh process takes ~1.5x a catalog one), so the stage stays under a minute on 2 cores
SIMULATE_CHUNK = 1
QUICK_CLASSES = ("airplane", "bed", "bottle", "car", "chair", "cup", "guitar", "lamp", "monitor",
                 "table")


@dataclass(frozen=True)
class DemoSettings:
    generator: Any  # GeneratorConfig
    train: Any  # TrainConfig
    ladder: Any  # LadderConfig
    plan: dict[str, Any]  # floors relative to the unpruned accuracy, search size


def settings(quick: bool, seed: int = 0) -> DemoSettings:
    """The demo's settings; `seed` for training, the ladder and the search (not the dataset)."""
    from slimedge.data.generator import GeneratorConfig
    from slimedge.ladder.build import LadderConfig
    from slimedge.model.train import TrainConfig

    if quick:
        return DemoSettings(
            # Fewer classes with more objects each: a model worth planning for in seconds.
            generator=GeneratorConfig.quick(classes=QUICK_CLASSES, objects_per_class=30),
            train=TrainConfig(epochs=10, width=0.5, feature_dim=64, head_hidden=64,
                              failout_rate=0.25, failout_warmup_epochs=2, failout_ramp_epochs=2,
                              patience=4, seed=seed),
            ladder=LadderConfig(levels=(0.0, 0.25, 0.5, 0.75), finetune_epochs=1,
                                latency_repeats=20, calibration_images=64, seed=seed),
            plan={"min_accuracy_rel": 0.9, "k": 1, "min_accuracy_k_rel": 0.8, "pop": 24,
                  "generations": 15, "seed": seed},
        )
    return DemoSettings(
        generator=GeneratorConfig.default(),
        train=TrainConfig(epochs=30, failout_rate=0.25, failout_warmup_epochs=3,
                          failout_ramp_epochs=3, patience=6, seed=seed),
        ladder=LadderConfig(seed=seed),
        plan={"min_accuracy_rel": 0.97, "k": 1, "min_accuracy_k_rel": 0.93, "pop": 64,
              "generations": 80, "seed": seed},
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
    return Stage("model", "model", inputs, run, needs=("dataset",))


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

    from slimedge.ladder.store import FEATURE_VARIANTS

    # The feature variants it caches: a ladder from before them is rebuilt once.
    inputs = {"dataset": work.record("dataset").get("content_hash"),
              "model": _model_on_disk(work), "ladder": s.ladder.to_dict(),
              "feature_variants": list(FEATURE_VARIANTS)}
    return Stage("ladder", "ladder", inputs, run, needs=("dataset", "model"))


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
    return Stage("importance", "importance.json", inputs, run, needs=("ladder",))


def _plan_stage(work: WorkFolder, s: DemoSettings, progress: bool) -> Stage:
    """Floors are set relative to the ladder's unpruned accuracy, so the demo asks for the same
    thing whatever the trained model reached. No configuration meeting them is an answer about
    the data (the stage is unmet, with the planner's explanation), not a defect."""
    from slimedge.plan import PlanInfeasibleError

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
                                                seed=s.plan["seed"], progress=progress),
                            importance=importance)
        written = write_plan(out, outcome.plan, outcome.pareto_rows, outcome.png)
        summary = plan_summary(written)
        return {"levels": summary["levels"], "latency_ms": summary["latency_ms"],
                "accuracy": summary["accuracy"]}

    inputs = {"ladder": work.record("ladder").get("files_hash"),
              "importance": work.state.get("importance", {}).get("fingerprint"),
              "fleet": _fleet_files(), "plan": s.plan}
    return Stage("plan", "plan.json", inputs, run, needs=("ladder", "importance"),
                 unmet=(PlanInfeasibleError,))


def _simulate_stage(work: WorkFolder, quick: bool, workers: int | None,
                    progress: bool) -> Stage:
    """A small sweep of random fleets (`slimedge simulate`) over the demo's ladder."""
    sweep = {"scenarios": SIMULATE_SCENARIOS[quick], "seed": 0, "chunk": SIMULATE_CHUNK}

    def run(out: Path) -> dict[str, Any]:
        import argparse as _argparse

        from slimedge.artifacts import atomic_dir
        from slimedge.simulate import COST_MODELS, GENERATORS
        from slimedge.simulate.commands import finish
        from slimedge.simulate.runner import run_sweep

        ladder = work.path("ladder")
        with atomic_dir(out) as tmp:
            run = run_sweep(ladder, sweep["scenarios"], out=tmp, workers=workers,
                            seed=sweep["seed"], chunk=sweep["chunk"], progress=progress)
            args = _argparse.Namespace(ladder=str(ladder), scenarios=sweep["scenarios"],
                                       seed=sweep["seed"], out=str(tmp), plot=True,
                                       argv=["simulate", "--ladder", str(ladder),
                                             "--scenarios", str(sweep["scenarios"])])
            summary = finish(run, args, GENERATORS, COST_MODELS)
        plan = summary["summary"]["catalog"]["authors"]["plan"]["ratio_vs_unpruned"]
        return {"scenarios": summary["scenarios"], "wall_s": round(summary["wall_s"], 3),
                "catalog_authors_ratio_vs_unpruned": plan}

    inputs = {"ladder": work.record("ladder").get("files_hash"), "sweep": sweep,
              "fleet": _fleet_files()}
    return Stage("simulate", "simulate", inputs, run, needs=("ladder",))


def _fleet_files() -> dict[str, str]:
    """Hashes of the demo fleet's file and of the board catalog and kernel profiles it reads:
    an edited board, profile or fleet file makes the plan (and so the deployment) stale, not
    just a renamed fleet."""
    from slimedge.artifacts import sha256_file
    from slimedge.devices.catalog import devices_dir, kernels_dir
    from slimedge.devices.fleet import resolve_fleet_path

    files = [resolve_fleet_path(DEMO_FLEET), *sorted(devices_dir().glob("*.yaml")),
             *sorted(kernels_dir().glob("*.yaml"))]
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
    return Stage("deploy", "deploy", inputs, run, needs=("dataset", "ladder", "plan"))


def _fleet_stage(work: WorkFolder) -> Stage:
    """The deployment run as a local fleet (a broker, one agent process per device, the
    aggregator, the controller) with the device whose loss costs the most SIGKILLed
    mid-stream: contingency switch, replan, push, accuracy after."""
    from slimedge.fleet.demo_run import DEMO_RUN

    def run(out: Path) -> dict[str, Any]:
        from slimedge.fleet.demo_run import run_demo_fleet

        return run_demo_fleet(out, work.path("deploy"), work.path("importance"),
                              work.path("plan"))

    inputs = {name: work.state.get(name, {}).get("fingerprint")
              for name in ("deploy", "importance", "plan")}
    inputs["run"] = DEMO_RUN
    return Stage("fleet", "fleet", inputs, run, needs=("deploy",))


def _report_stage(work: WorkFolder, names: list[str]) -> Stage:
    """The report of the stages `names` (every stage before it): rebuilt when any of them
    changed its output, its status or its reason."""
    from slimedge.report import REPORT_VERSION, write_report

    inputs: dict[str, Any] = {name: [work.state.get(name, {}).get("fingerprint"),
                                     work.status(name), work.reason(name)] for name in names}
    inputs["version"] = REPORT_VERSION

    def run(out: Path) -> dict[str, Any]:
        return write_report(work, out, names)

    return Stage("report", "report", inputs, run)


def _stages(work: WorkFolder, s: DemoSettings, args: argparse.Namespace, progress: bool
            ) -> list[tuple[str, Callable[[], Stage]]]:
    """The demo's stages in run order, as (name, builder). Each is built just before it runs:
    its inputs are the records of the ones before it."""
    stages: list[tuple[str, Callable[[], Stage]]] = [
        ("dataset", lambda: _dataset_stage(work, s, args.workers, progress)),
        ("model", lambda: _model_stage(work, s, progress)),
        ("ladder", lambda: _ladder_stage(work, s, progress)),
        ("importance", lambda: _importance_stage(work)),
        ("plan", lambda: _plan_stage(work, s, progress)),
        ("simulate", lambda: _simulate_stage(work, args.quick, args.workers, progress)),
        # Export reports progress as lines, not a bar: the console keeps one line per stage
        # and the deployment's own table is in the report.
        ("deploy", lambda: _deploy_stage(work, s, False)),
        ("fleet", lambda: _fleet_stage(work)),
    ]
    names = [name for name, _ in stages]
    return [*stages, ("report", lambda: _report_stage(work, names))]


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.console import Console

    t_start = time.perf_counter()
    show = not args.json
    seed = int(getattr(args, "seed", 0) or 0)
    work = WorkFolder(args.work)
    logs = work.root / LOGS_DIR
    console = Console()
    try:
        if show:
            console.say(f"slimedge demo{' --quick' if args.quick else ''}, seed {seed}, work "
                        f"folder {work.root} (library messages: {logs}/)")
        with console.capture(logs / "demo.log", stdout=True):
            s = settings(args.quick, seed)  # imports TensorFlow: its start-up logs go there
            from slimedge.model.determinism import make_deterministic

            # Every stage under the same TensorFlow settings, whichever of them run this time
            # (a resumed run may start at the ladder, whose fine-tuning trains too).
            make_deterministic(s.train.threads)
        stages = _stages(work, s, args, progress=show)
        outcomes = []
        for i, (name, make) in enumerate(stages, 1):
            tag = f"[{i}/{len(stages)}] {name}"
            log = logs / f"{name}.log"
            if show:
                console.begin(f"{tag} ...")
            try:
                with console.capture(log, stdout=True):
                    outcome = work.run(make(), force=args.force)
            except StageError as exc:
                if show:
                    console.say(f"{tag:<18} failed (library messages: {log})")
                raise StageError(f"{exc} (library messages: {log})") from exc
            if show:
                console.say(_stage_line(tag, outcome))
            outcomes.append(outcome)
    finally:
        console.close()
    return {
        "work": str(work.root),
        "quick": bool(args.quick),
        "seed": seed,
        "stages": {o.name: {"status": o.status, "seconds": round(o.seconds, 3), **o.record,
                            **({"reason": o.reason} if o.reason else {})}
                   for o in outcomes},
        "unmet": {o.name: o.reason for o in outcomes if not o.ok},
        "figures": _figures(work),
        "logs": str(logs),
        "report": str(work.path("report") / "index.md"),
        "seconds": round(time.perf_counter() - t_start, 3),
    }


# -- what the person reads --------------------------------------------------------------------

def _brief(outcome: StageOutcome) -> str:
    """A stage's result in a few words, from its record."""
    r = outcome.record
    try:
        if outcome.name == "dataset":
            return f"{r['objects']} objects x {r['views']} views, {r['classes']} classes"
        if outcome.name == "model":
            return f"test accuracy {r['test_accuracy']:.3f} (float), val {r['val_accuracy']:.3f}"
        if outcome.name == "ladder":
            return f"{r['levels']} levels"
        if outcome.name == "plan":
            return (f"levels {','.join(map(str, r['levels']))}: {r['latency_ms']:.1f} ms, "
                    f"val accuracy {r['accuracy']:.3f}")
        if outcome.name == "deploy":
            return (f"{r['devices']} devices, "
                    f"{'verified' if r.get('verified') else 'NOT verified'}")
        if outcome.name == "fleet":
            rec = r.get("recovery") or {}
            return (f"{r['answered']}/{r['frames']} frames answered, {r['killed']} killed, "
                    f"{r['mismatches']} differ from the evaluator; controller: "
                    f"{rec.get('decision') or 'no decision in the run'}")
        if outcome.name == "simulate":
            ratio = r["catalog_authors_ratio_vs_unpruned"]
            return (f"{r['scenarios']} random fleets; plan vs unpruned (catalog, authors' "
                    f"model): median {ratio['median']:.2f}x, max {ratio['max']:.2f}x")
        if outcome.name == "report":
            return ", ".join(r.get("sections", []))
    except (KeyError, TypeError, ValueError):  # a record from an older version
        pass
    return ""


def _stage_line(tag: str, outcome: StageOutcome) -> str:
    status = {"skipped": "up to date"}.get(outcome.status, outcome.status)
    if not outcome.ok:
        return f"{tag:<18} {status:<10} {(outcome.reason or '').splitlines()[0]}"
    took = f"{outcome.seconds:6.1f} s" if outcome.status == "ran" else ""
    return f"{tag:<18} {status:<10} {took:>8}  {_brief(outcome)}".rstrip()


def _figures(work: WorkFolder) -> dict[str, Any]:
    """The figures the run ends with, read from the artifacts of the stages that succeeded:
    test accuracy (float Keras unpruned; the planner's int8 prediction at the plan's levels;
    the deploy gate's float pipeline and deployed int8 system at those levels), the plan's
    latency against the unpruned and uniform baselines, and whether the deployment verified."""
    out: dict[str, Any] = {}
    if work.status("model") == OK:
        out["float_test_accuracy"] = work.record("model").get("test_accuracy")
    if work.status("plan") == OK and work.path("plan").is_file():
        plan = json.loads(work.path("plan").read_text())
        p, base = plan["predicted"], plan.get("baselines", {})
        out["int8_test_accuracy"] = (p.get("test") or {}).get("accuracy")
        out["latency_ms"] = p["latency_ms"]
        for name in ("unpruned", "uniform"):
            if name in base:
                out[f"{name}_latency_ms"] = base[name]["latency_ms"]
                out[f"{name}_fits"] = bool(base[name].get("fits", True))
                out[f"{name}_int8_test_accuracy"] = (base[name].get("test") or {}).get("accuracy")
    if work.status("deploy") == OK:
        record = work.record("deploy")
        out["deployment_verified"] = bool(record.get("verified"))
        out["devices"] = record.get("devices")
        if record.get("gate"):
            out["gate"] = record["gate"]
    return out


def summary_text(summary: dict[str, Any]) -> str:
    """The few lines `slimedge demo` ends with (text mode)."""
    f, unmet = summary["figures"], summary.get("unmet", {})

    def acc(key: str) -> str:
        return f"{f[key]:.3f}" if f.get(key) is not None else "?"

    lines = [f"done in {_duration(summary['seconds'])}"
             + (f"; not met: {', '.join(unmet)}" if unmet else "")]
    gate = f.get("gate") or {}
    if "float_test_accuracy" in f:
        text = f"float {acc('float_test_accuracy')} unpruned (Keras)"
        if gate:
            text += (f"; at the plan's levels float {gate['float_accuracy']:.3f}, int8 "
                     f"{gate['int8_accuracy']:.3f} (deployed system, {gate['frames']} frames)")
        elif "int8_test_accuracy" in f:
            text += f"; at the plan's levels int8 {acc('int8_test_accuracy')} (planner)"
        lines.append(f"  test accuracy  {text}")
    if "latency_ms" in f:
        ms = f["latency_ms"]
        # a baseline that does not fit memory is no denominator
        vs = [f"{name} {f[key]:.1f} ms ("
              + (f"{f[key] / ms:.2f}x" if f.get(f"{name}_fits", True) else "does not fit") + ")"
              for name, key in (("unpruned", "unpruned_latency_ms"),
                                ("uniform", "uniform_latency_ms")) if f.get(key)]
        lines.append(f"  plan latency   {ms:.1f} ms; " + ", ".join(vs))
    elif "plan" in unmet:
        lines.append(f"  plan           not met: {unmet['plan'].splitlines()[0]}")
    if "deployment_verified" in f:
        verified = "verified" if f["deployment_verified"] else "NOT verified"
        passed = (f"; deploy gate {'passed' if gate['ok'] else 'FAILED'} "
                  f"({gate['near_ties']}/{gate['frames']} frames near-ties)" if gate else "")
        lines.append(f"  deployment     {verified} ({f.get('devices')} devices, signed){passed}")
    elif "deploy" in unmet:
        lines.append(f"  deployment     not made: {unmet['deploy'].splitlines()[0]}")
    lines.append(f"  report         {summary['report']}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec} s" if minutes else f"{seconds:.1f} s"
