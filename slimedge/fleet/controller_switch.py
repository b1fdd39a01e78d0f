"""The controller's push: a new deployment to the aggregator and the devices that are up, all
switching at one frame F (FLEET_CONTRACT, "Fleet-wide switch").

`slimedge.fleet.push.run_push` does the work: the aggregator's part first (its new head,
pooling and contingency table, prepared for frame F), then a signed update with
`commit_at_frame=F` for each device whose model changes. A device whose model the new
deployment keeps (the same artifact bytes) is sent nothing (`unchanged`): it goes on sending
under its deployment id, and the aggregator pools it from F on because the new deployment names
the same model for it. The devices down are left out (`exclude`): they would only time out, and
when one returns the controller replans and pushes again.

`push_switch` says whether every part was acknowledged, when the last acknowledgment came, and
which devices were pushed and which left unchanged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from slimedge.fleet.push import UNCHANGED, PushError, run_push
from slimedge.runtime.update_messages import APPLIED

OK_STATUSES = (APPLIED, UNCHANGED)


def push_switch(deploy: Path, url: str, down: list[str], *, at_frame: int | None,
                lead_s: float, key: Path, fleet: str, timeout: float = 60.0
                ) -> dict[str, Any]:
    """Push `deploy` to the aggregator and every device but the `down` ones, switching at one
    frame: the push's choice (`lead_s` of frames after the aggregator's last answered one).
    Returns {"ok", "at_frame", "devices", "pushed", "unchanged", "late", "aggregator",
    "sequence", "acked_ns", "message"} (`late`: devices that applied after the switch frame,
    `push.mark_late`)."""
    t0_ns = time.time_ns()
    out: dict[str, Any] = {"ok": True, "at_frame": at_frame, "devices": {}, "pushed": [],
                           "unchanged": [], "late": [], "aggregator": None, "sequence": None,
                           "acked_ns": None, "message": None}
    try:
        s = run_push(deploy, url, key=key, fleet=fleet, timeout=timeout, listen=2.0,
                     aggregator=True, lead_s=lead_s, at_frame=at_frame, exclude=list(down))
    except PushError as exc:
        if exc.summary is None:
            return {**out, "ok": False, "message": str(exc)}
        s = exc.summary
    devices = s.get("devices") or {}
    out.update({"devices": devices, "aggregator": s.get("aggregator"),
                "sequence": s.get("sequence"), "at_frame": s.get("at_frame", at_frame),
                "pushed": sorted(d for d, o in devices.items() if o["status"] != UNCHANGED),
                "unchanged": sorted(d for d, o in devices.items() if o["status"] == UNCHANGED),
                "late": list(s.get("late_devices") or [])})
    bad = [f"{d} ({o['status']}: {o.get('reason') or o.get('message') or ''})"
           for d, o in devices.items() if o["status"] not in OK_STATUSES]
    agg = out["aggregator"]
    if agg is not None and agg.get("status") != APPLIED:
        bad.append(f"aggregator ({agg.get('status')}: {agg.get('reason') or ''} "
                   f"{agg.get('message') or ''})".rstrip())
    if bad:
        out["ok"] = False
        out["message"] = "not applied on " + ", ".join(bad)
    secs = [o["seconds"] for o in devices.values() if o.get("seconds") is not None]
    if agg is not None and agg.get("seconds") is not None:
        secs.append(agg["seconds"])
    out["acked_ns"] = t0_ns + int(max(secs) * 1e9) if secs else time.time_ns()
    return out
