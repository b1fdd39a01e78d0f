"""The controller's push: the changed devices' updates, all switching at one frame.

`push_switch` carries a new deployment to the devices whose model changed with
`slimedge.fleet.push.run_push` (signed per-device updates, each served from frame F on) and
says whether every part was acknowledged, and when the last acknowledgment came.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from slimedge.fleet.push import PushError, run_push
from slimedge.runtime.update_messages import APPLIED

OK_STATUSES = (APPLIED, "unchanged")


def push_switch(deploy: Path, url: str, devices: list[str], *, at_frame: int | None,
                key: Path, fleet: str, timeout: float = 60.0) -> dict[str, Any]:
    """Push `devices`' updates of `deploy` to switch at `at_frame`; {"ok", "devices",
    "sequence", "acked_ns", "message"}."""
    t0_ns = time.time_ns()
    out: dict[str, Any] = {"ok": True, "devices": {}, "sequence": None, "acked_ns": None,
                           "message": None}
    if devices:
        try:
            s = run_push(deploy, url, devices=devices, key=key, fleet=fleet, timeout=timeout,
                         listen=2.0, at_frame=at_frame)
        except PushError as exc:
            return {**out, "ok": False, "message": str(exc)}
        out["devices"], out["sequence"] = s["devices"], s["sequence"]
        bad = [d for d, o in s["devices"].items() if o["status"] not in OK_STATUSES]
        if bad:
            out["ok"] = False
            out["message"] = "not applied on " + ", ".join(
                f"{d} ({s['devices'][d]['status']}: {s['devices'][d].get('reason') or ''})"
                for d in bad)
        secs = [o["seconds"] for o in s["devices"].values() if o.get("seconds") is not None]
        if secs:
            out["acked_ns"] = t0_ns + int(max(secs) * 1e9)
    if out["acked_ns"] is None:
        out["acked_ns"] = time.time_ns()
    return out
