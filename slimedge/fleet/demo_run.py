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


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def report_lines(run_dir: Path, out: Path) -> list[str]:
    """The report's section: figures of the run and its timeline (copied into `out`)."""
    from slimedge.fleet.run_folder import SUMMARY_FILE, TIMELINE_FILE

    s = json.loads((run_dir / SUMMARY_FILE).read_text())
    if (run_dir / TIMELINE_FILE).is_file():
        shutil.copyfile(run_dir / TIMELINE_FILE, out / TIMELINE_PNG)
    lines = [
        "## The deployment as a local fleet",
        "",
        f"{s['devices']} agent processes and the aggregator over a {s['broker']} broker on "
        f"loopback, {s['frames']} test frames at {s['fps']:g} fps: {s['answered']} answered "
        f"({s['on_time']} by their deadline), {s['lost']} lost. Accuracy "
        f"{_pct(s['accuracy'])}; the evaluator on the same frames and live sets "
        f"{_pct(s['evaluator_accuracy'])}; {s['mismatches']} frame(s) differ.",
    ]
    check = s.get("artifacts_check")
    if check is not None and s["mismatches"]:
        lines.append(f"Against the deployment's own artifacts' features {check['mismatches']} "
                     f"frame(s) differ: {check['note']}.")
    lines.append("")
    for d in s["detections"]:
        how = "SIGKILL" if d["signal"] == "SIGKILL" else "SIGSTOP (hung)"
        if d["detected_s"] is None:
            lines.append(f"- {how} of {d['device']} at {d['killed_s']:.2f} s: not detected "
                         "before the run ended")
            continue
        w = d["window"]
        lines.append(
            f"- {how} of {d['device']} (view(s) {', '.join(map(str, d['views']))}) at "
            f"{d['killed_s']:.2f} s: dead at {d['detected_s']:.2f} s "
            f"({d['heartbeat_periods']:.2f} heartbeat periods of {s['heartbeat_s']:g} s; "
            f"{d['detected_by']}); {w['frames']} frame(s) captured in between, answered at "
            f"their deadline from the survivors; first frame without it: {d['switch_frame']}")
    for p in s["phases"]:
        lines.append(f"- frames {p['first_frame']}–{p['last_frame']}: {len(p['live_views'])} "
                     f"live views, accuracy {_pct(p['accuracy'])} (evaluator "
                     f"{_pct(p['evaluator_accuracy'])}), {p['lost']} lost")
    return [*lines, "", f"![fleet timeline]({TIMELINE_PNG})", ""]
