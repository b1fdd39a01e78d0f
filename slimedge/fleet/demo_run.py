"""The demo's fleet stage: its deployment run as a local fleet with one device SIGKILLed
mid-stream, and the report's section about it.

The device killed is the one whose view matters most (the largest leave-one-out drop in the
work folder's importance.json), so the switch to its contingency is visible on the timeline.
The run is kept short (a few seconds of frames at 20 fps) so the stage takes well under a
minute on top of starting the processes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

DEMO_RUN = {"frames": 80, "fps": 20.0, "kill_at_s": 1.5, "heartbeat": 0.25}
TIMELINE_PNG = "fleet_timeline.png"  # the report's copy


def victim(deploy: Path, importance: Path | None) -> str:
    """The device of the most important view (else the deployment's first device)."""
    head = json.loads((deploy / "aggregator" / "head.json").read_text())
    owners = head["view_device"]
    if importance is not None and importance.is_file():
        drops = json.loads(importance.read_text()).get("leave_one_out") or []
        ranked = sorted(range(len(drops)), key=lambda v: -drops[v])
        for v in ranked:
            if v < len(owners) and owners[v] is not None:
                return owners[v]
    return next(d for d in owners if d is not None)


def run_demo_fleet(out: Path, deploy: str | os.PathLike, importance: Path | None
                   ) -> dict[str, Any]:
    """Run and summarise into `out`; returns the stage's record."""
    from slimedge.data.container import load_dataset
    from slimedge.fleet.reference import SPLIT
    from slimedge.fleet.up import run_into

    deploy = Path(deploy)
    device = victim(deploy, importance)
    n = len(load_dataset(deploy.parent / "dataset").indices(SPLIT))
    s = run_into(out, deploy, frames=min(DEMO_RUN["frames"], n), fps=DEMO_RUN["fps"],
                 heartbeat=DEMO_RUN["heartbeat"], kill=f"{device}@{DEMO_RUN['kill_at_s']:g}s")
    det = s["detections"][0] if s["detections"] else {}
    return {"frames": s["frames"], "answered": s["answered"], "lost": s["lost"],
            "accuracy": s["accuracy"], "evaluator_accuracy": s["evaluator_accuracy"],
            "mismatches": s["mismatches"], "killed": device,
            "detected_after_s": det.get("detection_delay_s"), "broker": s["broker"]}


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
