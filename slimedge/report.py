"""The demo's report folder: a Markdown page plus figures, rebuilt from the work folder's
artifacts. It opens with the stages' table (status, time, and why a stage has no output);
each stage that succeeded contributes its section, and one whose goal was not met (or that was
blocked by one) a section that says why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slimedge.artifacts import atomic_dir
from slimedge.pipeline import BLOCKED, OK, UNMET, WorkFolder

REPORT_VERSION = 6


def _dataset_section(work: WorkFolder, out: Path) -> list[str]:
    from slimedge.data.contact_sheet import write_contact_sheet
    from slimedge.data.container import load_dataset

    ds = load_dataset(work.path("dataset"))
    write_contact_sheet(ds, out / "contact_sheet.png", n_objects=min(12, len(ds.class_names)))
    counts = ds.split_counts()
    h, w = ds.image_size
    return [
        "## Dataset",
        "",
        f"- {ds.n_objects} objects, {ds.n_views} views each, {h}x{w} grayscale, "
        f"{len(ds.class_names)} classes",
        "- splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        f"- content hash `{ds.content_hash()[:16]}`",
        "",
        "![contact sheet: objects x views](contact_sheet.png)",
        "",
    ]


def _model_section(work: WorkFolder) -> list[str]:
    record = json.loads((work.path("model") / "train.json").read_text())
    cfg = record["config"]
    lines = [
        "## Model",
        "",
        f"- branch `{cfg['backbone']}` (width {cfg['width']}), {record['branch']['params']:,} "
        f"parameters, D = {cfg['feature_dim']}; head pooling `{cfg['pooling']}`",
        f"- failout rate {cfg['failout_rate']} ({cfg['failout_schedule']}, "
        f"{cfg['failout_sampler']}); best epoch {record['best_epoch']} of "
        f"{record['epochs_run']}",
    ]
    stage = record.get("head_failout")
    if stage:
        start = stage["history"][0]
        lines.append(
            f"- head failout stage: {len(stage['history']) - 1} epochs at rate "
            f"{stage['rate']:.3f} ({cfg['head_failout_sampler']}) on frozen branch features; "
            f"kept epoch {stage['best_epoch']} (val accuracy {start['val_accuracy']:.3f} → "
            f"{stage['val_accuracy']:.3f}, with {record['history'][0]['val_failed_views']} views "
            f"failed {start['val_accuracy_failed']:.3f} → {stage['val_accuracy_failed']:.3f})")
    lines.append(f"- val accuracy {record['val_accuracy']:.3f}")
    if record.get("test"):
        lines.append(f"- test accuracy {record['test']['accuracy']:.3f} (float Keras branch)")
    host = record.get("host")
    if host:
        from slimedge.ladder.build import model_hash

        threads = host["threads"]
        lines.append(
            f"- model hash `{model_hash(record)[:12]}` (seed {record['seed']}), trained on "
            f"{host['cpu']} with {threads['intra_op']} threads, TensorFlow "
            f"{record['versions'].get('tensorflow', '?')}, op determinism on: the same seed "
            "on the same CPU gives the same hash, another CPU another one")
    return lines + [""]


def _ladder_section(work: WorkFolder, out: Path) -> list[str]:
    from slimedge.ladder.plots import plot_ladder_costs
    from slimedge.ladder.store import read_manifest

    manifest = read_manifest(work.path("ladder"))
    levels = manifest["levels"]
    plot_ladder_costs(levels, out / "ladder_costs.png")
    rows = [
        "| level | achieved | params | MACs | int8 .tflite B | TFLM arena B | peak act. B "
        "| int8 ms | val acc | test acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in levels:
        rows.append(
            f"| {e['level']:.2f} | {e['achieved']:.3f} | {e['params']:,} | {e['macs']:,} | "
            f"{e['tflite_int8_bytes']:,} | {e['tflm_arena_bytes']:,} | "
            f"{e['peak_activation_bytes']:,} | {e['latency_ms_int8']:.3f} | "
            f"{e['val_accuracy']:.3f} | {e.get('test_accuracy', float('nan')):.3f} |")
    return ["## Pruning ladder", "",
            f"Criterion `{manifest['criterion']}`, channels rounded to multiples of "
            f"{manifest['channel_multiple']}; host {manifest['host']['cpu']}, one thread.",
            "", *rows, "", "![ladder costs](ladder_costs.png)", ""]


def _importance_section(work: WorkFolder, out: Path) -> list[str]:
    from slimedge.ladder.plots import plot_importance, plot_vs_failed

    result = json.loads(work.path("importance").read_text())
    plot_importance(result, out / "importance.png")
    plot_vs_failed({f"level 0, {k}": v for k, v in result["vs_failed"].items()},
                   out / "vs_failed.png")
    rows = ["| view | single-view acc | leave-one-out drop | Shapley | published ratio |",
            "|---|---|---|---|---|"]
    for v, (single, loo, shap, ratio) in enumerate(zip(
            result["single_view_accuracy"], result["leave_one_out"], result["shapley"],
            result["ratio"], strict=True)):
        rows.append(f"| {v} | {single:.3f} | {loo:+.3f} | {shap:.4f} | {ratio:.3f} |")
    curve = result["vs_failed"]["test"]
    failed = ", ".join(f"k={r['k']}: {r['mean']:.3f} (worst {r['worst']:.3f})"
                       for r in curve)
    return ["## View importance (val split, every view at level 0)", "",
            f"Full accuracy {result['full_accuracy']:.3f}; exact Shapley values over all "
            f"{result['evaluations'] + 1} live sets.", "", *rows, "",
            "![view importance](importance.png)", "",
            "## Accuracy vs failed views (int8 features, level 0)", "",
            f"Test split, mean and worst over failure sets: {failed}", "",
            "![accuracy vs failed views](vs_failed.png)", ""]


def _plan_section(work: WorkFolder, out: Path) -> list[str]:
    import shutil

    plan_path = work.path("plan")
    plan = json.loads(plan_path.read_text())
    png_name = (plan.get("pareto") or {}).get("png")
    png = plan_path.parent / png_name if png_name else None
    lines = ["## Plan for the mixed fleet", ""]
    c = plan["constraints"]
    fleet = plan["fleet"]["name"]
    lines.append(f"Fleet `{fleet}`; floors: nominal accuracy ≥ {c['min_accuracy']:.3f}, "
                 f"worst accuracy with any {c['k_failures']} device(s) failed ≥ "
                 f"{c.get('min_accuracy_k') or 0:.3f} (val).")
    lines += ["", "| configuration | levels | latency ms | × plan | nominal | expected | "
              "worst-k | test nominal | meets floors |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [("**plan**", [v["level_index"] for v in plan["views"]], plan["predicted"], 1.0)]
    rows += [(name, b["levels"], b, b.get("latency_vs_plan") or float("nan"))
             for name, b in plan["baselines"].items()]
    for name, levels, fig, ratio in rows:
        val, test = fig["val"], fig.get("test") or {}
        meets = fig.get("meets", {}).get("all", True)
        lines.append(
            f"| {name} | {','.join(map(str, levels))} | {fig['latency_ms']:.1f} | "
            f"{ratio if isinstance(ratio, str) else format(ratio, '.2f')} | "
            f"{val['accuracy']:.3f} | {val['expected_accuracy']:.3f} | "
            f"{val['worst_k_accuracy']:.3f} | {test.get('accuracy', float('nan')):.3f} | "
            f"{'yes' if meets else 'no'} |")
    lines += ["", "Per device (plan):", "", "| view | device | board | level | total ms | "
              "memory margin |", "|---|---|---|---|---|---|"]
    for v in plan["views"]:
        lines.append(f"| {v['view']} | {v['device']} | {v['board']} | {v['level']:.2f} | "
                     f"{v['total_ms']:.2f} | {v['ram_margin_bytes']:,} B ({v['ram_kind']}) |")
    if png is not None and png.is_file():
        shutil.copyfile(png, out / "pareto.png")
        lines += ["", "![Pareto front](pareto.png)"]
    return lines + [""]


def _simulate_section(work: WorkFolder, out: Path) -> list[str]:
    import shutil

    from slimedge.simulate.markdown import PAPER_CLAIM, table

    folder = work.path("simulate")
    info = json.loads((folder / "summary.json").read_text())
    lines = ["## Random fleets (slimedge simulate)", "",
             f"{info['scenarios_per_generator']} random fleets per generator "
             f"({', '.join(info['generators'])}), planned and set against every baseline under "
             f"each cost model in {info['wall_s']:.1f} s. {PAPER_CLAIM}", "",
             table(info["summary"]), ""]
    cdf = (info.get("plots") or {}).get("ratio_cdf")
    if cdf and (folder / cdf).is_file():
        shutil.copyfile(folder / cdf, out / "simulate_ratio_cdf.png")
        lines += ["![latency ratio CDF](simulate_ratio_cdf.png)", ""]
    return lines


def _deploy_section(work: WorkFolder) -> list[str]:
    from slimedge.export.deploy import markdown_table, summary_from_deployment

    summary = summary_from_deployment(work.path("deploy"))
    return ["## Deployment (signed, verified)", "", markdown_table(summary), ""]


def _fleet_section(work: WorkFolder, out: Path) -> list[str]:
    from slimedge.fleet.demo_run import report_lines

    return report_lines(work.path("fleet"), out)


SECTIONS = {
    "dataset": _dataset_section,
    "model": lambda work, out: _model_section(work),
    "ladder": _ladder_section,
    "importance": _importance_section,
    "plan": _plan_section,
    "simulate": _simulate_section,
    "deploy": lambda work, out: _deploy_section(work),
    "fleet": _fleet_section,
}
TITLES = {"dataset": "Dataset", "model": "Model", "ladder": "Pruning ladder",
          "importance": "View importance", "plan": "Plan for the mixed fleet",
          "simulate": "Random fleets",
          "deploy": "Deployment", "fleet": "Local fleet"}


def _stages_section(work: WorkFolder, names: list[str]) -> list[str]:
    seed = work.state.get("model", {}).get("record", {}).get("seed")
    rows = ["## Stages", "", "| stage | status | seconds | note |", "|---|---|---|---|"]
    for name in names:
        status = work.status(name) or "not run"
        entry = work.state.get(name, {})
        note = (work.reason(name) or "").splitlines()[0] if status != OK else ""
        rows.append(f"| {name} | {status} | {entry.get('seconds', 0):.1f} | {note} |")
    if seed is not None:
        rows += ["", f"Seed {seed}."]
    return rows + [""]


def _not_done_section(work: WorkFolder, name: str) -> list[str]:
    """Why a stage has no output: its goal was not met (the reason as the stage gave it, e.g.
    the planner's explanation), or it needs one that has none."""
    status = work.status(name)
    title = TITLES.get(name, name.capitalize())
    what = "goal not met" if status == UNMET else "not run"
    lines = [f"## {title}: {what}", ""]
    lines += [f"> {line}" if line else ">" for line in (work.reason(name) or "").splitlines()]
    return lines + [""]


def write_report(work: WorkFolder, out: Path, names: list[str] | None = None) -> dict[str, Any]:
    """Rebuild `out` (atomically) from what the work folder holds for the stages `names`
    (default: those with a section); returns the record."""
    names = list(SECTIONS) if names is None else names
    with atomic_dir(out) as tmp:
        lines = ["# SlimEdge demo report", "", *_stages_section(work, names)]
        sections, not_done = [], []
        for name in names:
            status = work.status(name)
            if status in (UNMET, BLOCKED):
                lines += _not_done_section(work, name)
                not_done.append(name)
            elif name in SECTIONS and status == OK and work.path(name).exists():
                lines += SECTIONS[name](work, tmp)
                sections.append(name)
        (tmp / "index.md").write_text("\n".join(lines) + "\n")
    return {"sections": sections, "not_done": not_done}
