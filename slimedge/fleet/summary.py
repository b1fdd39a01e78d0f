"""The summary of a fleet run folder (what `slimedge fleet up --json` prints) and its timeline.

Frame counts: `frames` replayed; `answered` (the aggregator published a class); `on_time`
(answered by the frame's deadline); `lost` = frames - answered. `accuracy` is over the answered
frames; `evaluator_accuracy` is the evaluator's over the same frames, each with the live set the
aggregator pooled; `mismatches` counts frames whose two predictions differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slimedge.artifacts import write_json
from slimedge.fleet.controller_recovery import (
    CONTROLLER_LOG,
    recovery,
    reference_predictions,
)
from slimedge.fleet.monitor import FLEET_VIEW_FILE
from slimedge.fleet.run_folder import (
    INJECTIONS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    TIMELINE_FILE,
    RunFacts,
    align,
    detections,
    phases,
    read_jsonl,
    read_results,
    rejoins,
    stretch,
)
from slimedge.fleet.schedule import FleetUpError
from slimedge.fleet.timeline import Mark, TimelineData, plot_timeline
from slimedge.runtime.aggregator_service import EVENTS_FILE, METRICS_FILE

if TYPE_CHECKING:
    from slimedge.fleet.reference import Deployment, Reference


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FleetUpError(f"{path}: unreadable ({exc})") from exc


def broker_restarts(f: RunFacts, injections: list[dict[str, Any]],
                    fleet_view: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per broker restart: the devices that announced themselves "online" again (an agent
    publishes its birth on every reconnect), frames lost while the broker was away, the first
    frame answered again with every view that was live before (every client back, the
    aggregator included), and frames lost after that."""
    out = []
    t = np.asarray(f.t_s(np.arange(f.frames)))
    for inj in injections:
        if inj.get("kind") != "broker-restart":
            continue
        down_s, back_s = f.since_start(inj["t_ns"]), f.since_start(inj["back_ns"])
        before = f.answered & (t <= down_s - 1.0 / f.fps)  # not the frame in flight
        want = f.live[np.flatnonzero(before)[-1]] if before.any() else np.ones(f.views, bool)
        full = np.flatnonzero(f.answered & (t >= back_s) & (f.live[:, want].all(axis=1)))
        online = sorted({r["device"] for r in fleet_view
                         if r.get("status") == "online" and r["t_ns"] >= inj["back_ns"]})
        row: dict[str, Any] = {"down_s": round(down_s, 3), "back_s": round(back_s, 3),
                               "views_before": np.flatnonzero(want).tolist(),
                               "online_again": online}
        if len(full):
            first = int(full[0])
            outage = (t >= down_s) & (np.arange(f.frames) < first)
            row.update({"recovered_frame": first, "recovered_s": round(float(t[first]), 3),
                        "outage": stretch(f, outage),
                        "after_recovery": stretch(f, np.arange(f.frames) >= first)})
        else:
            row.update({"recovered_frame": None,
                        "outage": stretch(f, t >= down_s), "after_recovery": None})
        out.append(row)
    return out


def _marks(dets: list[dict], joins: list[dict], brokers: list[dict]) -> list[Mark]:
    marks = []
    for d in dets:
        how = "kill" if d["signal"] == "SIGKILL" else "hang"
        marks.append(Mark("kill", d["killed_s"], f"{how} {d['device']}"))
        if d["detected_s"] is not None:
            marks.append(Mark("detected", d["detected_s"], f"dead {d['device']}"))
        if d["switch_s"] is not None:
            marks.append(Mark("switch", d["switch_s"], f"switch ({d['device']} out)"))
    for j in joins:
        marks.append(Mark("restart", j["restarted_s"], f"restart {j['device']}"))
        if j["used_again_s"] is not None:
            marks.append(Mark("rejoined", j["used_again_s"], f"{j['device']} used"))
    for b in brokers:
        marks.append(Mark("broker-restart", b["down_s"], "broker restart"))
    return marks


def recovery_marks(rows: list[dict[str, Any]]) -> list[Mark]:
    """The controller's phases on the timeline: replanned, and the fleet switched to the new
    deployment (the capture time of frame F, from the acknowledgments on)."""
    marks = []
    for r in rows:
        if r.get("replanned_s") is not None:
            marks.append(Mark("replanned", r["replanned_s"], f"replan without {r['device']}"))
        if r.get("acked_s") is not None and r.get("decision") == "switched":
            marks.append(Mark("pushed", r["acked_s"], f"all acks ({r['device']} down)"))
        back = r.get("returned") or {}
        if back.get("acked_s") is not None and back.get("decision") == "switched":
            marks.append(Mark("pushed", back["acked_s"], f"all acks ({r['device']} back)"))
    return marks


def artifacts_check(f: RunFacts, res: Any, dep: Deployment, ref: Reference, art: Reference
                    ) -> dict[str, Any]:
    """The answers against the deployment's own artifacts' features, pooled and classified
    the same way: where the evaluator (the ladder's cached int8 features) and the artifacts
    differ, the device that computes something other than the cache is named."""
    inside = (res.frame >= 0) & (res.frame < f.frames)
    frames, live = res.frame[inside], res.live[inside]
    art_pred = art.predictions(dep, frames, live)
    fleet_pred = res.pred[inside]
    ref_pred = f.ref_pred[frames]
    floats = [d.device for d in dep.manifest.devices
              if dep.devices[d.device].dtype != np.int8]
    return {
        "accuracy": float(np.mean(art_pred == f.labels[frames])) if len(frames) else None,
        "mismatches": int(np.sum(art_pred != fleet_pred)),
        "mismatched_frames": frames[art_pred != fleet_pred].tolist(),
        "evaluator_vs_artifacts": frames[art_pred != ref_pred].tolist(),
        "float_feature_devices": floats,
        "note": ("the fleet's answers beside its own artifacts' features (run here as the "
                 "agents run them); a frame where the evaluator and the artifacts differ comes "
                 "from features the ladder's int8 cache does not hold"
                 + (f" ({', '.join(floats)} send float features)" if floats else "")),
    }


def summarise(run_dir: Path, dep: Deployment, ref: Reference, *, plot: bool = True,
              artifacts: Reference | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    info = _read_json(run_dir / RUN_FILE, None)
    if info is None:
        raise FleetUpError(f"{run_dir}: not a fleet run folder (no {RUN_FILE})")
    frames, fps, start_ns = int(info["frames"]), float(info["fps"]), int(info["start_ns"])
    res = read_results(run_dir, dep.views)
    inside = (res.frame >= 0) & (res.frame < frames)
    ref_pred = np.full(len(res.frame), -1, np.int64)
    ref_pred[inside] = ref.predictions(dep, res.frame[inside], res.live[inside])
    injections = read_jsonl(run_dir / INJECTIONS_FILE)
    events = read_jsonl(run_dir / EVENTS_FILE)
    controlled = (run_dir / CONTROLLER_LOG).is_file()
    if controlled:  # frames after a switch: the evaluator of the deployment they were pooled with
        ladder = info["evaluator"].get("ladder")
        ref_pred = reference_predictions(
            run_dir, res.frame, res.live, ref_pred, public_key=Path(info["public_key"]),
            ladder=None if ladder is None else Path(ladder), note=info["evaluator"]["note"],
            dataset=Path(info["dataset"]), frames=frames, events=events)
    f = align(res, frames, fps, start_ns, ref.labels, ref_pred)
    metrics = _read_json(run_dir / METRICS_FILE, {})
    heartbeat_s = float(info["heartbeat_s"])
    views_of = info["views_of"]
    dets = detections(f, injections, events, views_of, heartbeat_s)
    joins = rejoins(f, injections, events, views_of)
    brokers = broker_restarts(f, injections, read_jsonl(run_dir / FLEET_VIEW_FILE))
    whole = stretch(f, np.ones(frames, bool))
    summary: dict[str, Any] = {
        "frames": frames,
        "answered": whole["answered"],
        "on_time": whole["on_time"],
        "lost": whole["lost"],
        "accuracy": whole["accuracy"],
        "evaluator_accuracy": whole["evaluator_accuracy"],
        "mismatches": whole["mismatches"],
        "mismatched_frames": np.flatnonzero(f.answered & (f.pred != f.ref_pred)).tolist(),
        "detections": dets,
        "rejoins": joins,
        "broker_restarts": brokers,
        "phases": phases(f),
        "rejected": metrics.get("rejected", {}),
        "aggregator": {k: metrics.get(k) for k in ("window_ms", "slack_ms", "accuracy",
                                                     "frames_lost", "latency_ms", "added_ms",
                                                     "rejected_total", "events")},
        "broker": info["broker"]["kind"],
        "broker_url": info["broker"]["url"],
        "heartbeat_s": heartbeat_s,
        "fps": fps,
        "devices": len(info["devices"]),
        "deployment_id": info["deployment_id"],
        "evaluator": info["evaluator"],
        "run_dir": str(run_dir),
    }
    if controlled:
        summary["recovery"] = recovery(f, run_dir, injections, events, views_of)
    if artifacts is not None:
        summary["artifacts_check"] = artifacts_check(f, res, dep, ref, artifacts)
    if plot:
        deadline = metrics.get("window_ms")  # capture -> deadline
        data = TimelineData(
            t_s=np.asarray(f.t_s(np.arange(frames)), np.float64), answered=f.answered,
            correct=f.answered & (f.pred == f.labels),
            reference_correct=f.answered & (f.ref_pred == f.labels),
            predicted_accuracy=f.predicted_accuracy, live_views=f.live.sum(axis=1),
            latency_ms=f.latency_ms,
            deadline_ms=float(deadline) if isinstance(deadline, int | float) else None,
            marks=_marks(dets, joins, brokers) + recovery_marks(summary.get("recovery", [])),
            title=f"{info['deployment_id']}: {len(info['devices'])} agents, {frames} frames "
                  f"at {fps:g} fps ({summary['broker']} broker)")
        summary["timeline"] = str(plot_timeline(data, run_dir / TIMELINE_FILE))
    write_json(run_dir / SUMMARY_FILE, summary)
    return summary


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def describe(s: dict[str, Any]) -> list[str]:
    """A summary in a few lines (Markdown): the run, each failure and its detection, each
    stretch of frames with one live set beside the evaluator, rejoins, broker restarts."""
    lines = [
        f"{s['devices']} agent processes and the aggregator over the {s['broker']} broker on "
        f"loopback, {s['frames']} test frames at {s['fps']:g} fps: {s['answered']} answered "
        f"({s['on_time']} by their deadline), {s['lost']} lost. Accuracy "
        f"{_pct(s['accuracy'])}; the evaluator on the same frames and live sets "
        f"{_pct(s['evaluator_accuracy'])}; {s['mismatches']} frame(s) differ.",
    ]
    check = s.get("artifacts_check")
    if check is not None and s["mismatches"]:
        lines.append(f"Against the deployment's own artifacts' features {check['mismatches']} "
                     f"frame(s) differ: {check['note']}.")
    if s.get("rejected"):
        lines.append("Refused messages: " + ", ".join(f"{k} {v}" for k, v in
                                                       sorted(s["rejected"].items())) + ".")
    lines.append("")
    for d in s["detections"]:
        how = "SIGKILL" if d["signal"] == "SIGKILL" else "SIGSTOP (hung)"
        views = ", ".join(map(str, d["views"]))
        if d["detected_s"] is None:
            lines.append(f"- {how} of {d['device']} at {d['killed_s']:.2f} s: not detected "
                         "before the run ended")
            continue
        w = d["window"]
        lines.append(
            f"- {how} of {d['device']} (view(s) {views}) at {d['killed_s']:.2f} s: "
            + ("" if d["suspected_s"] is None else f"suspected at {d['suspected_s']:.2f} s, ")
            + f"dead at "
            f"{d['detected_s']:.2f} s ({d['heartbeat_periods']:.2f} heartbeat periods of "
            f"{s['heartbeat_s']:g} s; {d['detected_by']}); {w['frames']} frame(s) captured "
            f"from the kill to the detection ({w['answered_without_device']} pooled without "
            f"it, {w['on_time']} on time, {w['lost']} lost); first frame without it: "
            f"{d['switch_frame']}")
    for j in s.get("rejoins", []):
        lines.append(f"- restart of {j['device']} at {j['restarted_s']:.2f} s: alive again at "
                     f"{j['alive_s']} s, pooled again from frame {j['used_again_frame']} "
                     f"({j['frames_using_it_after']} frames); its replay resent "
                     f"{j.get('old_frames_resent')} old frame(s), refused as duplicate or late")
    for b in s.get("broker_restarts", []):
        after = b["after_recovery"] or {}
        lines.append(f"- broker down at {b['down_s']:.2f} s, back at {b['back_s']:.2f} s: "
                     f"{len(b['online_again'])} agents online again, every view back from "
                     f"frame {b['recovered_frame']}; {b['outage']['lost']} frame(s) lost "
                     f"during the outage, {after.get('lost')} after recovery")
    lines += recovery_lines(s.get("recovery", []))
    for p in s["phases"]:
        lines.append(f"- frames {p['first_frame']}–{p['last_frame']}: {len(p['live_views'])} "
                     f"live views, accuracy {_pct(p['accuracy'])} (evaluator "
                     f"{_pct(p['evaluator_accuracy'])}), {p['on_time']} on time, "
                     f"{p['lost']} lost")
    return lines


def _secs(r: dict[str, Any], key: str) -> str:
    v = r.get(key)
    return "n/a" if v is None else f"{v:.2f} s"


def recovery_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The controller's closed loop per death, as one timeline: kill, detection, contingency
    switch, replan, export, push, acknowledgments; accuracy per phase, measured beside the
    evaluator and the planner's prediction."""
    lines = []
    for r in rows:
        head = (f"- controller, {r['device']} killed at {r['killed_s']:.2f} s: dead at "
                f"{_secs(r, 'detected_s')}, contingency switch at {_secs(r, 'switched_s')}, "
                f"replanned at {_secs(r, 'replanned_s')}")
        if r["decision"] == "switched":
            head += (f", exported at {_secs(r, 'exported_s')}, every part acknowledged at "
                     f"{_secs(r, 'acked_s')}; the fleet switched at frame {r['at_frame']} "
                     f"({', '.join(r.get('changed') or []) or 'no device'} with a new model)")
        elif r["decision"] is not None:
            head += f": {r['decision']} ({r.get('message') or ''})"
        else:
            head += ": no decision before the run ended"
        lines.append(head)
        for name, a in (r.get("accuracy") or {}).items():
            if a is None:
                continue
            pred = a.get("predicted_accuracy")
            lines.append(f"  - {name}: {a['answered']} frames answered, accuracy "
                         f"{_pct(a['accuracy'])} (evaluator {_pct(a['evaluator_accuracy'])}, "
                         f"planner {_pct(pred)})")
        back = r.get("returned")
        if back:
            lines.append(f"  - back: planned with {r['device']} again at "
                         f"{_secs(back, 'replanned_s')}: {back['decision']}"
                         + (f", switched at frame {back['at_frame']}"
                            if back["decision"] == "switched" else ""))
    return lines


def summary_text(s: dict[str, Any]) -> str:
    """What `fleet up` prints without --json."""
    return "\n".join([*describe(s), "", f"run folder: {s['run_dir']}"])
