#!/usr/bin/env python3
"""Latency-model fit of a ladder, and the predicted latency of each level on every catalog board.

    tools/fit_cost_model.py LADDER [--json] [--catalog DIR] [--measure] [--cost-model NAME]
    tools/fit_cost_model.py --write-profile [DIR]      (then LADDER is optional)

The cost model's shape comes from the kernel profiles (`slimedge.devices.kernel_profiles`):
both forms, MAC-linear and per-layer, fitted to the instructions per invoke counted on emulated
cores (`firmware_configs/kernels/counted/`). `--write-profile` refits them from those counts
and writes `<core>-<set>.yaml` into DIR (default: the catalog's `firmware_configs/kernels`).
For a ladder the tool prints, per profile and form, predicted / counted instructions level by
level, the speed-up over the least-pruned level counted, predicted by each form on THIS
ladder's levels, and measured on this host (`latency_ms_kernels`, the host's LiteRT kernel set
of the same name; CMSIS-NN against the host's reference kernels, bit-exact with TFLite Micro):
a check of host timing against the counts, which the planner never uses.

For each kernel set the ladder timed its int8 branch under (`latency_ms_kernels`; `--measure`
times them now from the level files, with the per-operator MACs, for a ladder built before
they were recorded): both model forms, MAC-linear and per-layer
(`slimedge.devices.calibration`), with predicted / measured per level, R², leave-one-out
error, and the form the fit-quality rule picks. With `--reference-csv` (instructions per
inference counted on emulated boards, one column `instructions_<cpu>_<kernels>` or, in a folder
named for the CPU, `instructions_<kernels>`, per kernel set; `level` and `macs` columns): both
forms fitted to those counts, and, where the ladder is the one counted (same MACs at every
level), the speed-up over the least-pruned level that the cost model predicts for each catalog
board with that CPU beside the counted one. Then, for every format whose host latency
the ladder measured at every level: the fit
t_host = t0 + MACs/R_host (+ bytes/B_host where that term earns its place), its R², largest
relative error, leave-one-out errors and a per-level residual table. Then one table per catalog
board (its preferred format): predicted inference ms per level under `--cost-model`
(default: the ladder's default, `slimedge.devices.latency_model`), with levels that do not fit
the board marked. Prints its provenance: the ladder's model and dataset
hashes, the measuring host, and the versions used here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy

import slimedge
from slimedge.devices import load_catalog
from slimedge.devices.calibration import KERNEL_SET_OF_CLASS, fit_kernel_sets, fit_measured
from slimedge.devices.catalog import FORMATS, devices_dir, kernels_dir
from slimedge.devices.cost import (
    COST_MODELS,
    CostTable,
    aggregator_ms,
    calibrate_host,
    head_macs,
)
from slimedge.devices.kernel_profiles import (
    fit_counted,
    load_profiles,
    profile_yaml,
)
from slimedge.errors import SlimEdgeError
from slimedge.ladder.store import level_dir, read_manifest


def measure_calibration(ladder: Path, levels: list[dict[str, Any]], repeats: int) -> None:
    """Time each level's int8 branch under every LiteRT kernel set and count its per-operator
    work (what the ladder build records), for levels that lack them; in place."""
    from slimedge.profile.layers import layer_costs
    from slimedge.profile.litert import KERNELS, measure_latency

    for i, entry in enumerate(levels):
        path = level_dir(ladder, int(entry.get("index", i))) / "branch_int8.tflite"
        if "latency_ms_kernels" not in entry:
            entry["latency_ms_kernels"] = {
                k: measure_latency(path, repeats=repeats, kernels=k).median_ms for k in KERNELS}
        if "layers" not in entry:
            entry["layers"] = layer_costs(path)


def measured_formats(levels: list[dict[str, Any]]) -> list[str]:
    """Formats with a host latency at every level (int8 also from `latency_ms_int8`)."""
    out = []
    for fmt in FORMATS:
        def has(e: dict[str, Any], fmt: str = fmt) -> bool:
            lat = e.get("latency_ms")
            return (isinstance(lat, dict) and fmt in lat) or (
                fmt == "int8" and "latency_ms_int8" in e)
        if all(has(e) for e in levels):
            out.append(fmt)
    return out


def write_profiles(out_dir: Path, counted: Path | None = None) -> list[Path]:
    """Refit every counted column (`counted/sources.yaml`) and write its profile file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for col in fit_counted(counted):
        path = out_dir / f"{col.key}.yaml"
        path.write_text(profile_yaml(col.document()))
        written.append(path)
    return written


def _host_set(kernel_set: str) -> str:
    """The host LiteRT kernel set timed for a profile's set: CMSIS-NN computes TFLite Micro's
    arithmetic, which the host's reference kernels reproduce bit for bit."""
    return "reference" if kernel_set == "cmsis-nn" else kernel_set


def counted_check(levels: list[dict[str, Any]], counted: Path | None = None) -> list[dict]:
    """Per counted column: both forms' predicted / counted instructions per level, and the
    speed-up over level 0 counted, predicted on this ladder by the profile and timed here."""
    profiles = load_profiles()
    out = []
    for col in fit_counted(counted):
        same = len(col.levels) == len(levels) and all(
            int(a["macs"]) == int(b["macs"]) for a, b in zip(col.levels, levels, strict=False))
        counts = np.array(col.counts)
        forms = {}
        for name, f in col.fit.fits.items():
            pred = np.array(f.predicted_ms)  # fit_measured's unit is the counts' (instructions)
            forms[name] = {"predicted": pred.tolist(), "ratio": (pred / counts).tolist(),
                           "max_rel_error": f.max_rel_error,
                           "loo_rel_rms": None if math.isnan(f.loo_rel_rms) else f.loo_rel_rms}
        profile = profiles.get(col.key)
        ladder_speedup = None
        if profile is not None:
            inst = profile.instructions(levels)
            ladder_speedup = {"form": profile.form_for(levels),
                              "speedup": (inst[0] / inst).tolist()}
        host_set = _host_set(col.kernel_set)
        host = [e.get("latency_ms_kernels", {}).get(host_set) for e in levels]
        host_speedup = ([host[0] / h for h in host] if all(host) else None)
        out.append({"profile": col.key, "column": col.column, "source": dict(col.source),
                    "chosen": col.fit.form, "reason": col.fit.reason,
                    "in_catalog": profile is not None,
                    "levels": [e["level"] for e in col.levels],
                    "macs": [e["macs"] for e in col.levels], "counts": list(col.counts),
                    "counted_speedup": (counts[0] / counts).tolist(), "forms": forms,
                    "same_ladder": same, "ladder_speedup": ladder_speedup,
                    "host_kernel_set": host_set, "host_speedup": host_speedup})
    return out


def _first_cortex(text: str) -> str | None:
    match = re.search(r"cortex-[a-z]\d+", text.lower())
    return match.group(0) if match else None


def reference_check(path: Path, levels: list[dict[str, Any]], table: CostTable,
                    catalog: dict[str, Any]) -> dict[str, Any]:
    """Fit both forms to emulated-board instruction counts; compare predicted speed-ups."""
    try:
        rows = list(csv.DictReader(path.open(newline="")))
        ref_macs = [float(r["macs"]) for r in rows]
        ref_levels = [float(r["level"]) for r in rows]
    except (OSError, KeyError, ValueError) as exc:
        raise SlimEdgeError(f"{path}: not a reference CSV with level and macs columns "
                            f"({exc})") from None
    same = len(rows) == len(levels) and all(
        abs(a - float(e["macs"])) < 0.5 for a, e in zip(ref_macs, levels, strict=False))
    # The ladder's per-operator work applies only where it is the ladder that was counted.
    entries = ([dict(e) for e in levels] if same else
               [{"level": lv, "macs": m} for lv, m in zip(ref_levels, ref_macs, strict=True)])
    columns = [c for c in rows[0] if c.startswith("instructions_")] if rows else []
    out = {"path": str(path), "same_ladder": same, "columns": []}
    for col in columns:
        name = col[len("instructions_"):]
        cpu = _first_cortex(name) or _first_cortex(path.parent.name)
        counts = [float(r[col]) for r in rows]
        fit = fit_measured(entries, counts, col).to_dict()
        boards = []
        if same and cpu:
            for i, board_id in enumerate(table.devices):
                board = catalog[board_id]
                if board.board_class in ("mcu", "linux") and _first_cortex(board.cpu.core) == cpu:
                    t = table.inference_ms[i]
                    boards.append({"board": board_id, "form": table.forms[i],
                                   "predicted_speedup": (t[0] / t).tolist()})
        out["columns"].append({"column": col, "cpu": cpu, "fit": fit, "boards": boards,
                               "counted_speedup": [counts[0] / c for c in counts]})
    return out


def analyse(ladder: Path, catalog_dir: Path | None, *, measure: bool = False,
            cost_model: str | None = None, repeats: int = 30,
            reference_csvs: list[Path] | None = None) -> dict[str, Any]:
    manifest = read_manifest(ladder)
    levels = manifest["levels"]
    if measure:
        measure_calibration(ladder, levels, repeats)
    kernel_fits = fit_kernel_sets(levels)
    host_fits = {fmt: calibrate_host(levels, fmt, host=manifest.get("host"))
                 for fmt in measured_formats(levels)}
    catalog = load_catalog(catalog_dir)
    aggregator = None
    if "head_classifier_macs" in manifest:
        # The head pools V x D features and runs the classifier: timed on every board, and on
        # a host by the float32 host fit (the aggregator's classifier runs in float).
        hm = head_macs(int(manifest["views"]), int(manifest["feature_dim"]),
                       int(manifest["head_classifier_macs"]))
        host_fmt = "float32" if "float32" in host_fits else next(iter(host_fits), None)
        aggregator = {
            "head_macs": hm,
            "boards_ms": {b.id: aggregator_ms(hm, b) for b in catalog.values()},
            "host_fit_format": host_fmt,
            "host_ms": (aggregator_ms(hm, "host", host_fit=host_fits[host_fmt])
                        if host_fmt else None),
        }
    table = CostTable.for_boards(levels, catalog, int(manifest["feature_dim"]),
                                 cost_model=cost_model)
    counted = counted_check(levels)
    boards = []
    for i, board_id in enumerate(table.devices):
        boards.append({
            "board": board_id,
            "format": table.formats[i],
            "kernel_profile": (catalog[board_id].kernels.key
                               if catalog[board_id].kernels else None),
            "form": table.forms[i],
            "inference_ms": table.inference_ms[i].tolist(),
            "transfer_ms": float(table.transfer_ms[i]),
            "fits": table.fits[i].tolist(),
            "binding": [b or None for b in table.binding[i].tolist()],
        })
    return {
        "ladder": str(ladder),
        "model_hash": manifest["model_hash"],
        "dataset_hash": manifest["dataset_hash"],
        "feature_dim": int(manifest["feature_dim"]),
        "levels": [float(e["level"]) for e in levels],
        "macs": [float(e["macs"]) for e in levels],
        "host": manifest.get("host"),
        "ladder_versions": manifest.get("versions"),
        "counted": counted,
        "kernel_fits": {k: f.to_dict() for k, f in kernel_fits.items()},
        "reference_checks": [reference_check(p, levels, table, catalog)
                             for p in reference_csvs or []],
        "kernel_set_of_class": dict(KERNEL_SET_OF_CLASS),
        "calibration_measured_now": bool(measure),
        "host_fits": [f.to_dict() for f in host_fits.values()],
        "cost_model": table.cost_model,
        "link_latency": table.link_latency,
        "boards": boards,
        "aggregator": aggregator,
        "versions": {
            "slimedge": slimedge.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "machine": platform.machine(),
            "catalog": str(catalog_dir or devices_dir()),
        },
    }


def _rate(x: float | str | None, unit: str) -> str:
    if x is None:
        return "n/a"
    if x == "inf":
        return "inf (no slope)"
    return f"{float(x) / 1e9:.4g} G{unit}/s"


def print_report(r: dict[str, Any]) -> None:
    print(f"ladder {r['ladder']}  model_hash {r['model_hash']}  dataset_hash {r['dataset_hash']}")
    print(f"measured on: {json.dumps(r['host'])}")
    if r["ladder_versions"]:
        print(f"ladder versions: {json.dumps(r['ladder_versions'])}")
    print("this run: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()))
    print_counted(r)
    print_kernel_fits(r)
    for ref in r["reference_checks"]:
        print_reference_check(ref, r["levels"])
    for f in r["host_fits"]:
        r2 = "n/a" if f["r2"] is None else f"{f['r2']:.4f}"
        loo = ", ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}"
                        for k, v in f["loo_rel_rms"].items())
        print(f"\nhost fit {f['format']}: terms {f['terms']}  t0 {f['t0_ms']:.4f} ms  "
              f"R_host {_rate(f['r_host_mac_per_s'], 'MAC')}  "
              f"B_host {_rate(f['b_host_byte_per_s'], 'B')}")
        print(f"  R² {r2}  max |rel error| {f['max_rel_error']:.3f}  LOO rel RMS: {loo}")
        if f["warning"]:
            print(f"  warning: {f['warning']}")
        print(f"  {'level':>6}{'MACs':>13}{'bytes':>10}{'measured':>11}{'predicted':>11}"
              f"{'resid ms':>10}{'rel':>8}")
        for row in f["residuals"]:
            print(f"  {row['level']:>6.3g}{row['macs']:>13,.0f}{row['bytes']:>10,.0f}"
                  f"{row['measured_ms']:>11.4f}{row['predicted_ms']:>11.4f}"
                  f"{row['residual_ms']:>10.4f}{row['rel_error']:>8.3f}")
    print(f"\npredicted inference ms per level on each catalog board, cost model "
          f"{r['cost_model']} (preferred format; form: which latency form applied; "
          "'!' = does not fit: a=arena f=flash r=RAM s=storage; tx: expected link wait)")
    head = "".join(f"{lv:>10.3g}" for lv in r["levels"])
    print(f"{'board':<18}{'fmt':<8}{'form':<10}{'tx ms':>8}{head}")
    marks = {"arena": "a", "flash": "f", "ram": "r", "storage": "s"}
    for b in r["boards"]:
        cells = []
        for ms, fits, binding in zip(b["inference_ms"], b["fits"], b["binding"], strict=True):
            mark = "" if fits else "!" + marks[binding]
            cells.append(f"{_ms(ms) + mark:>10}")
        print(f"{b['board']:<18}{b['format']:<8}{b['form']:<10}{b['transfer_ms']:>8.3f}"
              f"{''.join(cells)}")
    agg = r["aggregator"]
    if agg:
        print(f"\naggregator: head {agg['head_macs']:,} MACs (V x D pooling + classifier); ms: "
              + ", ".join(f"{k} {_ms(v)}" for k, v in agg["boards_ms"].items())
              + (f"; a host (host fit {agg['host_fit_format']}) {_ms(agg['host_ms'])}"
                 if agg["host_ms"] is not None else ""))


def _row(label: str, xs: list[float] | None, width: int = 24, fmt: str = ">7.2f") -> str:
    cells = "".join(f"{x:{fmt}}" for x in xs) if xs is not None else "  n/a"
    return f"    {label:<{width}}{cells}"


def print_counted(r: dict[str, Any]) -> None:
    """The kernel profiles' fits to the counted instructions, and the checks against them."""
    print("\nkernel profiles: both forms fitted to instructions per invoke counted on emulated "
          "cores (firmware_configs/kernels/counted); the cost model uses the chosen form")
    print(f"  {'profile':<22}{'form':<11}{'max|rel|':>10}{'LOO rel RMS':>13}  chosen")
    for c in r["counted"]:
        for name, f in c["forms"].items():
            loo = "n/a" if f["loo_rel_rms"] is None else f"{f['loo_rel_rms']:.3f}"
            mark = "yes" if name == c["chosen"] else ""
            print(f"  {c['profile']:<22}{name:<11}{f['max_rel_error']:>10.3f}{loo:>13}  {mark}")
    for c in r["counted"]:
        src = c["source"]
        print(f"\n{c['profile']}: {src['counts']} column {src['column']} (model "
              f"{src['model_hash']}); chosen {c['chosen']}: {c['reason']}"
              + ("" if c["in_catalog"] else "; no profile file in the catalog"))
        print("  " + f"{'level':>6}{'counted':>15}"
              + "".join(f"{name + ' ratio':>18}" for name in c["forms"]))
        for j, lv in enumerate(c["levels"]):
            cells = "".join(f"{c['forms'][n]['ratio'][j]:>18.3f}" for n in c["forms"])
            print(f"  {lv:>6.3g}{c['counts'][j]:>15,.0f}{cells}")
        print("  speed-up over the least-pruned level (ratio = predicted / counted above):")
        print(_row("", c["levels"], fmt=">7.3g"))
        print(_row("counted", c["counted_speedup"]))
        if c["ladder_speedup"]:
            note = "" if c["same_ladder"] else " (another ladder)"
            print(_row(f"profile {c['ladder_speedup']['form']}{note}",
                       c["ladder_speedup"]["speedup"]))
        print(_row(f"host {c['host_kernel_set']} (timed)", c["host_speedup"]))


def print_kernel_fits(r: dict[str, Any]) -> None:
    """Per kernel set: measured ms, and predicted / measured per level for each model form."""
    fits = r["kernel_fits"]
    if not fits:
        print("\nno kernel-set latencies in this ladder (rebuild it, or pass --measure)")
        return
    note = " (measured now, --measure)" if r["calibration_measured_now"] else ""
    print(f"\nhost-timed latency per LiteRT kernel set{note}: both forms, a check only (the "
          "planner uses the kernel profiles above, never host timing)")
    print(f"  {'kernel set':<11}{'runs on':<20}{'form':<11}{'R²':>8}{'max|rel|':>10}"
          f"{'LOO rel RMS':>13}  chosen")
    for k, f in fits.items():
        runs = ", ".join(c for c, ks in r["kernel_set_of_class"].items() if ks == k) or "-"
        for name, ff in f["fits"].items():
            r2 = "n/a" if ff["r2"] is None else f"{ff['r2']:.3f}"
            loo = "n/a" if ff["loo_rel_rms"] is None else f"{ff['loo_rel_rms']:.3f}"
            mark = "yes" if name == f["form"] else (
                "neither: board figures" if f["form"] == "board" and name == "mac" else "")
            print(f"  {k:<11}{runs:<20}{name:<11}{r2:>8}{ff['max_rel_error']:>10.3f}"
                  f"{loo:>13}  {mark}")
    print("\nlevel by level; ratio = predicted / measured")
    for k, f in fits.items():
        forms = list(f["fits"])
        classes = [c for c, ks in r["kernel_set_of_class"].items() if ks == k]
        runs = f" (runs on: {', '.join(classes)})" if classes else ""
        print(f"\nkernel set {k}{runs}: chosen form {f['form']}: {f['reason']}")
        print(f"  {'level':>6}{'MACs':>13}{'measured ms':>13}"
              + "".join(f"{name + ' ms':>15}{'ratio':>7}" for name in forms)
              + f"{'meas x L0':>11}")
        m0 = f["measured_ms"][0]
        for j, (lv, meas) in enumerate(zip(f["levels"], f["measured_ms"], strict=True)):
            cells = ""
            for name in forms:
                pred = f["fits"][name]["predicted_ms"][j]
                cells += f"{pred:>15.4f}{pred / meas:>7.3f}"
            print(f"  {lv:>6.3g}{r['macs'][j]:>13,.0f}{meas:>13.4f}{cells}{m0 / meas:>11.2f}")
        for name in forms:
            ff = f["fits"][name]
            r2 = "n/a" if ff["r2"] is None else f"{ff['r2']:.4f}"
            loo = "n/a" if ff["loo_rel_rms"] is None else f"{ff['loo_rel_rms']:.3f}"
            coefs = ", ".join(f"{c} {v:.3g}" for c, v in ff["coefficients_ms"].items())
            print(f"  {name}: R² {r2}  max |rel error| {ff['max_rel_error']:.3f}  "
                  f"LOO rel RMS {loo}  ms per unit: {coefs}")


def print_reference_check(ref: dict[str, Any], levels: list[float]) -> None:
    same = ("the same ladder (MACs equal at every level)" if ref["same_ladder"] else
            "another ladder (MACs differ): forms fitted on its own MACs, MAC-linear only")
    print(f"\nemulated-board instruction counts {ref['path']}: {same}")
    for c in ref["columns"]:
        f = c["fit"]
        parts = []
        for name, ff in f["fits"].items():
            loo = "n/a" if ff["loo_rel_rms"] is None else f"{ff['loo_rel_rms']:.3f}"
            parts.append(f"{name} max |rel error| {ff['max_rel_error']:.3f} LOO {loo}")
        print(f"  {c['column']}: chosen {f['form']}; " + "; ".join(parts))
        if c["boards"]:
            print(f"    speed-up over the least-pruned level: counted vs predicted "
                  f"({c['cpu']} boards)")
            print("    " + f"{'':<22}" + "".join(f"{lv:>7.3g}" for lv in levels))
            print("    " + f"{'counted':<22}"
                  + "".join(f"{x:>7.2f}" for x in c["counted_speedup"]))
            for b in c["boards"]:
                label = f"{b['board']} ({b['form']})"
                print("    " + f"{label:<22}"
                      + "".join(f"{x:>7.2f}" for x in b["predicted_speedup"]))


def _ms(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "inf"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ladder", type=Path, nargs="?",
                    help="ladder directory (holds manifest.json)")
    ap.add_argument("--write-profile", type=Path, nargs="?", const=True, default=None,
                    metavar="DIR", help="refit the kernel profiles from the counted "
                    "instructions and write them into DIR (default: firmware_configs/kernels)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--catalog", type=Path, default=None,
                    help="board catalog directory (default: firmware_configs/devices)")
    ap.add_argument("--measure", action="store_true",
                    help="time the kernel sets and count per-operator MACs now where the "
                         "ladder does not record them")
    ap.add_argument("--cost-model", choices=COST_MODELS, default=None,
                    help="cost model of the per-board table (default: the ladder's default)")
    ap.add_argument("--reference-csv", type=Path, action="append", default=[],
                    help="instructions per inference counted on an emulated board "
                         "(repeatable; see the module docstring)")
    args = ap.parse_args(argv)
    if args.write_profile is None and args.ladder is None:
        ap.error("give a LADDER, --write-profile, or both")
    try:
        if args.write_profile is not None:
            out = kernels_dir() if args.write_profile is True else args.write_profile
            for path in write_profiles(out):
                print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
        if args.ladder is None:
            return 0
        result = analyse(args.ladder, args.catalog, measure=args.measure,
                         cost_model=args.cost_model, reference_csvs=args.reference_csv)
    except SlimEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
