"""How a fleet run with the controller recovered from each death: the `recovery` key of
`slimedge fleet up --controller --json`.

Per killed (or hung) device, times in seconds after the first frame's capture:

- `killed_s`: the injection; `detected_s`: the controller declared it dead (its failure
  detector, the aggregator's rule); `switched_s`: the aggregator switched to the contingency
  weights of the live set without it (events.jsonl `contingency_switch`);
- `replanned_s`, `exported_s`, `pushed_s`, `acked_s`: the controller's phases (controller.jsonl);
  `at_frame`: the frame F the fleet switched to the new deployment at;
- `decision` (switched | keep-contingency | ...), and where the floors could not be met the
  `shortfall`;
- `accuracy`: per phase, `before` (frames captured before the kill), `degraded` (from the kill
  to F-1, or to the end when nothing was pushed) and `recovered` (from F on): measured on the
  answered frames, the evaluator's on the same frames and live sets (each frame with the
  deployment it was pooled with), and the planner's prediction for the phase (test split, the
  one replayed): the plan in service, its contingency row without the device, the new plan.
- `returned`: when the device was restarted, the controller's decision to plan with it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.fleet.run_folder import RunFacts, read_jsonl, stretch

CONTROLLER_LOG = "controller.jsonl"
CONTROLLER_DEPLOYMENTS = "controller-deployments"  # not the aggregator's deployments/


def decisions(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(Path(run_dir) / CONTROLLER_LOG)
            if r.get("event") == "decision"]


def switches(run_dir: Path, events: Sequence[Mapping[str, Any]]) -> list[tuple[int, Path]]:
    """(first frame, deployment folder) of every switch the controller made, in order: the
    frame the aggregator applied it at (events.jsonl `switch_applied`), else the frame the
    controller asked for."""
    applied: dict[str, int] = {}
    for e in events:
        if e.get("event") == "switch_applied" and isinstance(e.get("frame"), int):
            applied.setdefault(str(e.get("deployment_id")), int(e["frame"]))
    out = []
    for d in decisions(run_dir):
        if d.get("decision") != "switched" or d.get("at_frame") is None:
            continue
        deploy = deployment_path(run_dir, d["deployment"])
        frame = applied.get(_deployment_id(deploy), int(d["at_frame"]))
        out.append((frame, deploy))
    return sorted(out, key=lambda x: x[0])


def deployment_path(run_dir: Path, recorded: str) -> Path:
    """A deployment the controller made, found in this run folder: the path recorded is where
    the run was written, which a run folder written whole and then moved no longer has."""
    here = Path(run_dir) / CONTROLLER_DEPLOYMENTS / Path(recorded).name
    return here if here.is_dir() else Path(recorded)


def _deployment_id(deploy: Path) -> str:
    import json

    try:
        return str(json.loads((deploy / "manifest.json").read_text())["deployment_id"])
    except (OSError, ValueError, KeyError):
        return ""


def _since(f: RunFacts, t_ns: Any) -> float | None:
    return None if not isinstance(t_ns, int) or not t_ns else round(f.since_start(t_ns), 3)


def _contingency_switch(events: Sequence[Mapping[str, Any]], views: list[int],
                        after_ns: int) -> int | None:
    for e in events:
        t = e.get("t_ns")
        if (e.get("event") == "contingency_switch" and isinstance(t, int) and t >= after_ns
                and set(views) - set(e.get("views") or [])):
            return t
    return None


def _phase(f: RunFacts, sel: np.ndarray, predicted: float | None) -> dict[str, Any]:
    s = stretch(f, sel)
    return {"frames": s["frames"], "answered": s["answered"], "lost": s["lost"],
            "accuracy": s["accuracy"], "evaluator_accuracy": s["evaluator_accuracy"],
            "mismatches": s["mismatches"], "predicted_accuracy": predicted}


def _test(pred: Mapping[str, Any] | None) -> float | None:
    return None if not pred else pred.get("test_accuracy")


def _in_service(run_dir: Path, device: str) -> dict[str, Any]:
    """The predictions of the plan the controller started with: as planned, and with
    `device` dead (its contingency row)."""
    from slimedge.fleet.controller_plan import degraded_of, predicted_of
    from slimedge.plan.plan_file import read_plan

    started = next((r for r in read_jsonl(Path(run_dir) / CONTROLLER_LOG)
                    if r.get("event") == "started"), None)
    if started is None:
        return {}
    path = Path(started["current"]["plan"])
    plan = read_plan(path)
    return {"before": predicted_of(plan).to_dict(),
            "degraded": degraded_of(plan, path.parent / "ladder", [device]).to_dict(),
            "after": None}


def recovery(f: RunFacts, run_dir: Path, injections: Sequence[Mapping[str, Any]],
             events: Sequence[Mapping[str, Any]], views_of: Mapping[str, Sequence[int]]
             ) -> list[dict[str, Any]]:
    """One row per killed or hung device (module docstring)."""
    rows = decisions(run_dir)
    frame_ids = np.arange(f.frames)
    t = np.asarray(f.t_s(frame_ids))
    out = []
    for inj in injections:
        if inj.get("kind") not in ("kill", "hang"):
            continue
        device, t_kill = str(inj["device"]), int(inj["t_ns"])
        views = [int(v) for v in views_of[device]]
        d = next((r for r in rows if device in (r.get("lost") or [])
                  and int(r["phases"]["detected_ns"]) >= t_kill), None)
        killed_s = f.since_start(t_kill)
        row: dict[str, Any] = {
            "device": device, "views": views, "killed_s": round(killed_s, 3),
            "switched_s": _since(f, _contingency_switch(events, views, t_kill)),
            "detected_s": None, "replanned_s": None, "exported_s": None, "pushed_s": None,
            "acked_s": None, "at_frame": None, "decision": None}
        kill_frame = int(np.searchsorted(t, killed_s))  # first frame captured after the kill
        before = frame_ids < kill_frame
        end = f.frames
        if d is not None:
            ph = d["phases"]
            row.update({"detected_s": _since(f, ph.get("detected_ns")),
                        "replanned_s": _since(f, ph.get("replanned_ns")),
                        "exported_s": _since(f, ph.get("exported_ns")),
                        "pushed_s": _since(f, ph.get("pushed_ns")),
                        "acked_s": _since(f, ph.get("acked_ns")),
                        "at_frame": d.get("at_frame"), "decision": d["decision"],
                        "changed": sorted(d.get("changed") or {}),
                        "shortfall": d.get("shortfall"), "message": d.get("message"),
                        "deployment": (None if d.get("deployment") is None else
                                       str(deployment_path(run_dir, d["deployment"]))),
                        "floors": d.get("floors"),
                        "predicted": {k: d.get(k) for k in ("before", "degraded", "after")}})
            back = next((r for r in rows if device in (r.get("returned") or [])
                         and int(r["phases"]["detected_ns"]) > int(ph["detected_ns"])), None)
            if back is not None:
                bp = back["phases"]
                row["returned"] = {"detected_s": _since(f, bp.get("detected_ns")),
                                   "replanned_s": _since(f, bp.get("replanned_ns")),
                                   "acked_s": _since(f, bp.get("acked_ns")),
                                   "at_frame": back.get("at_frame"),
                                   "decision": back["decision"],
                                   "changed": sorted(back.get("changed") or {})}
                if back.get("at_frame") is not None and back["decision"] == "switched":
                    end = min(end, int(back["at_frame"]))
        if d is None:  # no decision in the run: its detection, and what the plan predicts
            row["predicted"] = _in_service(run_dir, device)
            dead = [r["at_ns"] for r in read_jsonl(Path(run_dir) / CONTROLLER_LOG)
                    if r.get("event") == "state" and r.get("device") == device
                    and r.get("state") == "dead" and int(r.get("at_ns") or 0) >= t_kill]
            row["detected_s"] = _since(f, min(dead)) if dead else None
        F = row["at_frame"] if row["decision"] == "switched" else None
        F = None if F is None else min(int(F), f.frames)
        degraded = (frame_ids >= kill_frame) & (frame_ids < (F if F is not None else end))
        pred = row.get("predicted") or {}
        row["accuracy"] = {
            "before": _phase(f, before, _test(pred.get("before"))),
            "degraded": _phase(f, degraded, _test(pred.get("degraded"))),
            "recovered": (None if F is None else
                          _phase(f, (frame_ids >= F) & (frame_ids < end),
                                 _test(pred.get("after")))),
        }
        out.append(row)
    return out


def reference_predictions(run_dir: Path, f_frames: np.ndarray, live: np.ndarray,
                          ref_pred: np.ndarray, *, public_key: Path, ladder: Path | None,
                          note: str, dataset: Path, frames: int,
                          events: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The evaluator's prediction per answered row, each frame with the deployment it was
    pooled with: `ref_pred` (the starting deployment's) replaced from each switch's frame on
    by the new deployment's evaluator."""
    from slimedge.fleet.reference import find_ladder, load_deployment, make_reference

    out = np.asarray(ref_pred, np.int64).copy()
    sw = switches(run_dir, events)
    for i, (first, deploy) in enumerate(sw):
        stop = sw[i + 1][0] if i + 1 < len(sw) else None
        sel = (f_frames >= first) & (f_frames < frames)
        if stop is not None:
            sel &= f_frames < stop
        if not sel.any():
            continue
        dep = load_deployment(deploy, public_key)
        lad, why = find_ladder(dep, ladder) if ladder is not None else (None, note)
        ref = make_reference(dep, lad, why, dataset, frames)
        out[sel] = ref.predictions(dep, f_frames[sel], live[sel])
    return out
