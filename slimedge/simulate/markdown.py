"""`simulate.md` and the table `docs/benchmarks.md` takes: per generator and cost model, each
method's latency ratios (vs unpruned, vs best uniform), energy ratio and constraint
satisfaction, beside the paper's "up to 4.7x"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAPER_CLAIM = ('The paper (arXiv 2512.22136 v2) reports "up to 4.7x" lower inference time over '
               "random fleets: max_j t_j(0) / max_j t_j(p_j) under its assumed formula "
               "t = 100 e^(-2p) (1 + 2 (1 - perf)) and an accuracy surrogate, i.e. a ratio "
               "against the unpruned fleet (our `ratio_vs_unpruned` under the `authors` cost "
               "model); `ratio_vs_uniform` is the same plan against the fastest uniform "
               "pruning level that meets the same floors.")


def _f(x: Any, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _triple(s: Mapping[str, Any]) -> str:
    return f"{_f(s['median'])} / {_f(s['p90'])} / {_f(s['max'])}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def table(summary: Mapping[str, Any]) -> str:
    """The markdown table of a summary (median / p90 / max for each ratio)."""
    lines = ["| generator | cost model | method | latency ratio vs unpruned | latency ratio vs "
             "best uniform | energy ratio vs unpruned | fits | meets floors (val) | "
             "meets floors (test) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for gen, by_cm in summary.items():
        for cm, by_m in by_cm.items():
            for m, s in by_m.items():
                name = f"**{m}**" if m == "plan" else m
                lines.append(f"| {gen} | {cm} | {name} | {_triple(s['ratio_vs_unpruned'])} | "
                             f"{_triple(s['ratio_vs_uniform'])} | {_triple(s['energy_ratio'])} "
                             f"| {_pct(s['feasible'])} | {_pct(s['satisfied_val'])} | "
                             f"{_pct(s['satisfied_test'])} |")
    return "\n".join(lines)


def floors_table(summary: Mapping[str, Any]) -> str:
    """Each floor apart (share of the feasible scenarios, val / test) and the median expected
    accuracy: what `meets floors` is made of."""
    lines = ["| generator | cost model | method | nominal floor met (val / test) | worst-k floor "
             "met (val / test) | expected accuracy, median (val / test) |",
             "|---|---|---|---|---|---|"]
    for gen, by_cm in summary.items():
        for cm, by_m in by_cm.items():
            for m, s in by_m.items():
                if "met_nominal_val" not in s:
                    continue  # a summary from before the floors were kept apart
                name = f"**{m}**" if m == "plan" else m
                lines.append(
                    f"| {gen} | {cm} | {name} | {_pct(s['met_nominal_val'])} / "
                    f"{_pct(s['met_nominal_test'])} | {_pct(s['met_worst_k_val'])} / "
                    f"{_pct(s['met_worst_k_test'])} | {_f(s['expected_accuracy_val'], 3)} / "
                    f"{_f(s['expected_accuracy_test'], 3)} |")
    return "\n".join(lines)


def counts_table(counts: Mapping[str, Any]) -> str:
    """Per generator: scenarios, feasible, relative floors used, multi-camera fleets, plans
    proven optimal (`results.counts`)."""
    lines = ["| generator | scenarios | feasible | absolute floor infeasible: relative used | "
             "multi-camera fleets | plans proven optimal |", "|---|---|---|---|---|---|"]
    for gen, n in counts.items():
        lines.append(f"| {gen} | {n['scenarios']} | {n['feasible']} | "
                     f"{n['relative_fallback'] if gen == 'published' else 'n/a (relative)'} | "
                     f"{n['multi_camera']} | {_proven(n)} |")
    return "\n".join(lines)


def _proven(c: Mapping[str, Any]) -> str:
    """Plans whose answer the search proved optimal, of the plans made (scenarios x cost
    models); "-" for a summary from before it was counted."""
    return f"{c['plans_proven']} of {c['plans']}" if "plans" in c else "-"


def runs_lines(info: Mapping[str, Any]) -> list[str]:
    """Every run logged into the folder (`runs.jsonl`), one table row each, then their sum;
    empty for a folder from before the run log."""
    runs = info.get("runs") or []
    if not runs:
        return []
    out = ["| run started (UTC) | computed | reused | wall s | s per scenario | workers | "
           "completed |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        n = run["computed_scenarios"]
        per = f"{run['wall_s'] / n:.2f}" if n else "-"
        out.append(f"| {run.get('started_utc', '?')} | {n} | {run.get('reused_scenarios', '?')}"
                   f" | {run['wall_s']:.1f} | {per} | {run.get('workers', '?')} | "
                   f"{'yes' if run.get('completed') else 'no (interrupted)'} |")
    n, wall = info["all_runs_computed_scenarios"], info["all_runs_wall_s"]
    out += ["", f"All {len(runs)} logged runs into this folder: {n} scenarios computed in "
            f"{wall:.1f} s of wall time" + (f" ({wall / n:.2f} s per scenario)." if n else "."),
            ""]
    return out


def document(info: Mapping[str, Any]) -> str:
    """simulate.md: the command, the run, the table, the counts and the figures."""
    c = info["counts"]
    rate = info["scenarios"] / info["wall_s"] if info["wall_s"] > 0 else float("nan")
    lines = [
        "# slimedge simulate", "",
        f"Command: `{info['command']}`", "",
        f"Ladder: `{info['ladder']}` (manifest sha256 {info['ladder_sha256'][:16]}), seed "
        f"{info['seed']}; {info['scenarios_per_generator']} scenarios per generator "
        f"({', '.join(info['generators'])}); cost models: "
        f"{', '.join(info['cost_models'])}; workers: {info['workers']}; CPU: {info['cpu']}.",
        "",
        f"This run: {info['computed_scenarios']} scenarios computed, "
        f"{info['reused_scenarios']} reused from earlier chunks, in {info['wall_s']:.1f} s "
        f"({rate:.3f} scenarios/s over the whole request); one plan (search, contingency and "
        f"baselines) took {info['plan_seconds']['median']:.2f} s median on one core.", "",
        *runs_lines(info),
        "Ratios are median / p90 / max over the scenarios where they are defined (both "
        "configurations fit memory; the best uniform level also meets the floors). `fits`: "
        "share of all scenarios in which the method's configuration fits memory; `meets "
        "floors`: share of the feasible scenarios (the planner found a configuration meeting "
        "every floor) in which it fits and meets the nominal and worst-k floors on that split.",
        "", PAPER_CLAIM, "", table(info["summary"]), "", floors_table(info["summary"]), "",
        counts_table(c)]
    lines += ["", "Figures:", ""]
    for name, file in info["plots"].items():
        lines.append(f"![{name}]({file})")
    lines.append("")
    return "\n".join(lines)
