"""The controller's push: a new deployment to the aggregator and the devices that are up, all
switching at one frame F (FLEET_CONTRACT, "Fleet-wide switch").

`slimedge.fleet.push.run_push` does the work: the aggregator's part first (its new head,
pooling and contingency table, prepared for frame F), then each device's signed update with
`commit_at_frame=F` (a device whose model is unchanged still gets one: from F on its messages
carry the new deployment's id). The devices down are left out: they would only time out, and
when one returns the controller replans and pushes again.

`push_switch` says whether every part was acknowledged, and when the last acknowledgment came.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

from slimedge.fleet.push import PushError, run_push
from slimedge.runtime.update_messages import APPLIED

OK_STATUSES = (APPLIED, "unchanged")


def _supports(name: str) -> bool:
    return name in inspect.signature(run_push).parameters


def push_switch(deploy: Path, url: str, down: list[str], *, at_frame: int | None,
                lead_s: float, key: Path, fleet: str, timeout: float = 60.0
                ) -> dict[str, Any]:
    """Push `deploy` to the aggregator and every device but the `down` ones, switching at one
    frame: the push's choice (`lead_s` of frames after the aggregator's last answered one).
    Returns {"ok", "at_frame", "devices", "aggregator", "sequence", "acked_ns", "message"};
    a down device's missing acknowledgment is not a failure."""
    t0_ns = time.time_ns()
    kwargs: dict[str, Any] = {"key": key, "fleet": fleet, "timeout": timeout, "listen": 2.0,
                              "aggregator": True, "lead_s": lead_s, "at_frame": at_frame}
    if down and _supports("exclude"):
        kwargs["exclude"] = list(down)
    out: dict[str, Any] = {"ok": True, "at_frame": at_frame, "devices": {},
                           "aggregator": None, "sequence": None, "acked_ns": None,
                           "message": None}
    try:
        s = run_push(deploy, url, **kwargs)
    except PushError as exc:
        s = exc.summary
        if s is None:
            return {**out, "ok": False, "message": str(exc)}
    out.update({"devices": s.get("devices") or {}, "aggregator": s.get("aggregator"),
                "sequence": s.get("sequence"),
                "at_frame": s.get("at_frame", at_frame)})
    bad = [f"{d} ({o['status']}: {o.get('reason') or o.get('message') or ''})"
           for d, o in out["devices"].items()
           if o["status"] not in OK_STATUSES and d not in down]
    agg = out["aggregator"]
    if agg is not None and agg.get("status") != APPLIED:
        bad.append(f"aggregator ({agg.get('status')}: {agg.get('reason') or ''} "
                   f"{agg.get('message') or ''})".rstrip())
    if bad:
        out["ok"] = False
        out["message"] = "not applied on " + ", ".join(bad)
    secs = [o["seconds"] for d, o in out["devices"].items()
            if o.get("seconds") is not None and d not in down]
    if agg is not None and agg.get("seconds") is not None:
        secs.append(agg["seconds"])
    out["acked_ns"] = t0_ns + int(max(secs) * 1e9) if secs else time.time_ns()
    return out
