"""The demo's fleet stage: its deployment run as a local fleet with the controller, one device
SIGKILLed mid-stream, and the report's section about it.

The device killed is the one whose loss costs the most accuracy: the plan's own leave-one-out
(its contingency row for that device alone has the lowest accuracy), else the largest
leave-one-out drop in the work folder's importance.json. The run shows the whole loop on one
timeline: death, the aggregator's contingency switch, the controller's replan without the
device, the push of the new deployment at one frame, and the accuracy after it.

The replay lasts about `DEMO_RUN["seconds"]` (every test frame, the frame rate set to fit), so
the stage takes a little over a minute. How far the loop gets before the replay ends depends on the
machine (replanning and exporting take seconds to tens of seconds); the report says what
happened, and nothing in the stage fails on timing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

DEMO_RUN = {"seconds": 60.0, "min_fps": 0.5, "max_fps": 20.0, "kill_at_s": 4.0,
            "heartbeat": 0.25, "grace_s": 1.0, "lead_s": 3.0}
TIMELINE_PNG = "fleet_timeline.png"  # the report's copy


def victim(deploy: Path, importance: Path | None, plan: Path | None = None) -> str:
    """The device whose loss costs the most accuracy: the plan's single-device contingency row
    with the lowest accuracy (val, then test), else the device of the view with the largest
    leave-one-out drop in `importance`, else the deployment's first device."""
    head = json.loads((deploy / "aggregator" / "head.json").read_text())
    owners = head["view_device"]
    if plan is not None and plan.is_file():
        # dead_devices names the device of each dead view: one device, maybe several views
        rows = [r for r in json.loads(plan.read_text()).get("contingency", {}).get("rows", [])
                if len(set(r.get("dead_devices") or [])) == 1
                and r["dead_devices"][0] in owners]
        if rows:
            worst = min(rows, key=lambda r: (r["accuracy"]["val"],
                                             r["accuracy"].get("test") or 0.0))
            return str(worst["dead_devices"][0])
    if importance is not None and importance.is_file():
        drops = json.loads(importance.read_text()).get("leave_one_out") or []
        ranked = sorted(range(len(drops)), key=lambda v: -drops[v])
        for v in ranked:
            if v < len(owners) and owners[v] is not None:
                return owners[v]
    return next(d for d in owners if d is not None)


def run_demo_fleet(out: Path, deploy: str | os.PathLike, importance: Path | None,
                   plan: Path | None = None) -> dict[str, Any]:
    """Run (with the controller) and summarise into `out`; returns the stage's record."""
    from slimedge.data.container import load_dataset
    from slimedge.fleet.reference import SPLIT
    from slimedge.fleet.up import run_into

    deploy = Path(deploy)
    device = victim(deploy, importance, plan)
    n = len(load_dataset(deploy.parent / "dataset").indices(SPLIT))
    fps = min(DEMO_RUN["max_fps"], max(DEMO_RUN["min_fps"], n / DEMO_RUN["seconds"]))
    frames = min(n, int(DEMO_RUN["seconds"] * fps))
    s = run_into(out, deploy, frames=frames, fps=fps, heartbeat=DEMO_RUN["heartbeat"],
                 kill=f"{device}@{DEMO_RUN['kill_at_s']:g}s", controller=True,
                 grace=DEMO_RUN["grace_s"], lead=DEMO_RUN["lead_s"])
    det = s["detections"][0] if s["detections"] else {}
    rec = s.get("recovery", [{}])[0] if s.get("recovery") else {}
    return {"frames": s["frames"], "answered": s["answered"], "lost": s["lost"],
            "accuracy": s["accuracy"], "evaluator_accuracy": s["evaluator_accuracy"],
            "mismatches": s["mismatches"], "killed": device,
            "detected_after_s": det.get("detection_delay_s"), "broker": s["broker"],
            "recovery": {k: rec.get(k) for k in ("decision", "detected_s", "switched_s",
                                                   "replanned_s", "exported_s", "acked_s",
                                                   "at_frame", "shortfall")},
            "recovered_accuracy": ((rec.get("accuracy") or {}).get("recovered") or {}
                                   ).get("accuracy")}


def report_lines(run_dir: Path, out: Path) -> list[str]:
    """The report's section: the run described (`summary.describe`) and its timeline, copied
    into `out`."""
    from slimedge.fleet.run_folder import SUMMARY_FILE, TIMELINE_FILE
    from slimedge.fleet.summary import describe

    s = json.loads((run_dir / SUMMARY_FILE).read_text())
    if (run_dir / TIMELINE_FILE).is_file():
        shutil.copyfile(run_dir / TIMELINE_FILE, out / TIMELINE_PNG)
    return ["## The deployment as a local fleet", "", *describe(s), "",
            f"![fleet timeline]({TIMELINE_PNG})", ""]
