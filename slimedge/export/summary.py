"""An export's summary (what `slimedge export --json` prints and the demo reports), its
Markdown table with the deploy gate's figures, and the same summary read back from a signed
deployment alone."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimedge.devices.catalog import MCU
from slimedge.devices.fleet import Fleet
from slimedge.export.aggregator_files import AGGREGATOR_DIR
from slimedge.export.artifacts import Built, DeviceResult
from slimedge.export.assignment import PlanChoice
from slimedge.export.inputs import SigningKey


def edgetpu_cell(checks: Mapping[str, Any]) -> str | None:
    tpu = checks.get("edgetpu")
    if tpu is None:
        return None
    if tpu["ready"]:
        return "ready"
    first = tpu["first_cpu_op"]
    if first is not None:
        return f"CPU from op {first['index']} {first['op']}"
    return "not ready: " + tpu["reasons"][0]


def device_row(r: DeviceResult, manifest: Mapping[str, Any]) -> dict[str, Any]:
    a, s = r.a, r.assessment
    d = s.details
    mcu = a.board.board_class == MCU
    return {
        "device": a.device,
        "board": a.board.id,
        "class": a.board.board_class,
        "views": list(a.views),
        "level_index": a.level_index,
        "level": float(manifest["levels"][a.level_index]["level"]),
        "format": a.fmt,
        "runtime": a.board.runtime,
        "artifact": r.artifact,
        "artifact_bytes": r.nbytes,
        "tflm_arena_bytes": r.arena,
        "arena_budget_bytes": a.board.model_memory_bytes if mcu else None,
        "memory_kind": d["ram_kind"],
        "memory_needed_bytes": d["ram_needed_bytes"],
        "memory_budget_bytes": d["ram_budget_bytes"],
        "memory_margin_bytes": s.ram_margin_bytes,
        "storage_margin_bytes": s.storage_margin_bytes,
        "fits": s.fits,
        "host_latency_ms": float(manifest["levels"][a.level_index]["latency_ms"][a.fmt]),
        "predicted_inference_ms": s.inference_ms,
        "predicted_latency_ms": s.total_ms,
        "agreement": r.alone_agreement,
        "feature_error_mean": r.error.mean_rel if r.error else None,
        "feature_error_max": r.error.max_rel if r.error else None,
        "feature_error_max_lsb": r.error.max_lsb if r.error else None,
        "static_vs_cached_equal": (r.checks["static_vs_cached"]["equal_fraction"]
                                   if "static_vs_cached" in r.checks else None),
        "edgetpu": edgetpu_cell(r.checks),
        "firmware_files": len(r.firmware) or None,
    }


def build_summary(out: Path, fleet: Fleet, manifest: Mapping[str, Any],
                  results: Sequence[DeviceResult], system: Mapping[str, Any], written: Any,
                  key: SigningKey, generated: bool, view_levels: Sequence[int],
                  level_source: str, choice: PlanChoice | None, dataset_where: str,
                  warnings: list[str], built: Built, extra_notes: list[str]) -> dict[str, Any]:
    """`system`: the export's system checks ("gate", "agreement", "head")."""
    from slimedge.export.manifest import PUBLIC_KEY_NAME

    if generated:
        key_note = (f"no key given and none in {key.private.parent}: generated a new key pair "
                    "there; provision its public_key.pem on the devices")
    elif key.given:
        key_note = "signed with the given private key"
    else:
        key_note = f"signed with the existing key pair in {key.private.parent}"
    notes = [key_note, *extra_notes]
    return {
        "deployment": str(out),
        "deployment_id": written.deployment_id,
        "fleet": fleet.name,
        "views": fleet.views,
        "levels": [int(x) for x in view_levels],
        "level_source": level_source,
        "plan": str(choice.path) if choice else None,
        "contingency": bool(choice is not None and choice.contingency is not None),
        "dataset": dataset_where,
        "devices": [device_row(r, manifest) for r in results],
        "agreement": system["agreement"]["agreement"],
        "agreement_detail": system["agreement"],
        "gate": system["gate"],
        "head": system["head"],
        "static_vs_cached": built.cache_report(),
        "verified": True,
        "key": {"private_key": str(key.private),
                "public_key": str(out / PUBLIC_KEY_NAME),
                "fingerprint": written.signing_key,
                "generated": generated},
        "warnings": list(warnings),
        "notes": notes,
    }


def _kib(n: int | None) -> str:
    if n is None:
        return "—"
    if abs(n) >= 10 * 2**20:
        return f"{n / 2**20:,.0f} MiB"
    return f"{n / 1024:,.1f} KiB"


def _ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The per-device table of an export summary, as Markdown (for the demo report)."""
    head = ("| device | board | views | level | format | artifact | TFLM arena / budget | "
            "host ms | predicted ms | memory margin | agreement | feature error mean / max | "
            "Edge TPU |")
    lines = [head, "|" + "---|" * 13]
    for r in summary["devices"]:
        arena = (f"{_kib(r['tflm_arena_bytes'])} / {_kib(r['arena_budget_bytes'])}"
                 if r["tflm_arena_bytes"] is not None else "—")
        margin = f"{_kib(r['memory_margin_bytes'])} {r['memory_kind']}"
        err = ("—" if r["feature_error_mean"] is None else
               f"{r['feature_error_mean']:.2%} / {r['feature_error_max']:.2%}")
        agree = "—" if r["agreement"] is None else f"{r['agreement']:.1%}"
        views = ",".join(str(v) for v in r["views"])
        lines.append(
            f"| {r['device']} | {r['board']} | {views} | {r['level_index']} ({r['level']:g}) | "
            f"{r['format']} | {_kib(r['artifact_bytes'])} | {arena} | "
            f"{_ms(r['host_latency_ms'])} | {_ms(r['predicted_latency_ms'])} | {margin} | "
            f"{agree} | {err} | {r['edgetpu'] or '—'} |")
    lines.append("")
    lines.extend(gate_table(summary.get("gate")))
    lines.append("")
    lines.append(f"Deployment `{summary['deployment']}` "
                 f"{'verified' if summary['verified'] else 'NOT verified'}, signed with "
                 f"{summary['key']['fingerprint']}.")
    lines.append("")
    lines.append("Per-device agreement: top-1 agreement with the float pipeline of the system "
                 "with only that device's features from its artifact (all others float). "
                 "Feature error: |dequantized − float| relative to "
                 "the largest |float feature| of the device's views. Predicted ms: cost-model "
                 "inference + transfer on the board; host ms: the ladder's LiteRT measurement.")
    for w in summary.get("warnings", []):
        lines.append(f"\n- warning: {w}")
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def gate_table(gate: Mapping[str, Any] | None) -> list[str]:
    """The deploy gate's figures as Markdown lines (see `slimedge.export.gate`)."""
    if not gate:
        return ["Deploy gate: not recorded in this deployment."]
    ex = gate["exactness"]
    int8_devices = sorted(d for d, e in ex["devices"].items() if e["int8"])
    other = sorted(d for d, e in ex["devices"].items() if not e["int8"])
    exact = sum(1 for d in int8_devices if ex["devices"][d]["exact"])
    lo, hi = gate["accuracy_interval"]
    m, dq = gate["margin_quantiles"], gate["delta"]["quantiles"]
    quant = ", ".join(f"{k} {_num(v)}" for k, v in m.items())
    dquant = ", ".join(f"{k} {_num(dq.get(k))}" for k in ("min", "q50", "max"))
    rows = [
        (f"exactness: artifacts → core pooling → exported head vs the {ex['reference']}",
         f"{ex['equal_frames']}/{ex['frames']} frames equal; {exact}/{len(int8_devices)} int8 "
         "devices bit-exact" + (f"; float formats: {', '.join(other)}" if other else "")),
        ("test accuracy: float / deployed",
         f"{_pct(gate['float_accuracy'])} / {_pct(gate['int8_accuracy'])} "
         f"({gate['frames']} frames)"),
        (f"accuracy loss (float − deployed), one-sided {gate['confidence']:.0%} interval",
         f"{_pct(gate['accuracy_loss'])} in [{_pct(lo)}, {_pct(hi)}]; tolerance "
         f"{_pct(gate['tolerance'])}"),
        (f"δ per frame ({gate['delta']['steps']:g} × one-step logit quantization error)",
         dquant),
        ("near ties (float top-2 margin ≤ δ)", f"{gate['near_ties']} of {gate['frames']}"),
        ("disagreeing frames above δ", str(len(gate["disagreeing_above_delta"]))),
        ("raw top-1 agreement with float", _pct(gate["agreement"])),
        ("float top-2 margin quantiles", quant),
    ]
    lines = [f"Deploy gate: {'passed' if gate['ok'] else 'REFUSED'}.", "",
             "| check | result |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", f"Method: {gate['method']}."]
    lines += [f"\n- gate failure: {f}" for f in gate.get("failures", [])]
    return lines


def summary_from_deployment(deploy_dir: str | os.PathLike) -> dict[str, Any]:
    """The export summary's table fields, read back from a deployment's signed manifest and
    its aggregator/head.json (signature and file hashes verified first; models not loaded)."""
    from slimedge.export.verify import verify_deployment

    root = Path(deploy_dir)
    report = verify_deployment(root, load_artifacts=False)
    report.raise_if_failed()
    m = report.manifest
    head = json.loads((root / AGGREGATOR_DIR / "head.json").read_text())
    checks = head.get("export_checks", {})
    system = checks.get("system_agreement", {})
    rows = []
    for d in m.devices:
        c = d.checks
        mem, err, cost = c.get("memory", {}), c.get("feature_error", {}), c.get("cost_model", {})
        rows.append({
            "device": d.device, "board": d.board, "views": list(d.views),
            "level_index": d.level_index, "level": d.level, "format": d.format,
            "runtime": d.runtime, "artifact": d.artifact, "artifact_bytes": d.bytes,
            "tflm_arena_bytes": d.tflm_arena_bytes,
            "arena_budget_bytes": d.memory_budget_bytes if d.is_mcu else None,
            "memory_kind": mem.get("ram_kind"),
            "memory_margin_bytes": d.memory_margin_bytes,
            "host_latency_ms": cost.get("host_latency_ms"),
            "predicted_latency_ms": d.predicted_latency_ms,
            "agreement": c.get("agreement_alone"),
            "feature_error_mean": err.get("mean_rel"), "feature_error_max": err.get("max_rel"),
            "edgetpu": edgetpu_cell(c),
        })
    return {"deployment": str(root), "deployment_id": m.deployment_id, "devices": rows,
            "agreement": system.get("agreement"), "agreement_detail": system,
            "gate": checks.get("gate"), "verified": True,
            "key": {"fingerprint": m.signing_key}, "warnings": []}
