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
import threading
import time
from pathlib import Path
from typing import Any

from slimedge.fleet.push import PushError, run_push
from slimedge.runtime import topics
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
    if down and "exclude" not in kwargs:
        # run_push would wait its whole timeout for the down devices' acknowledgments: watch
        # the acknowledgments here and go on once every part that is up has answered.
        s = _push_watching_acks(deploy, url, fleet, down, kwargs, timeout)
    else:
        try:
            s = run_push(deploy, url, **kwargs)
        except PushError as exc:
            s = exc.summary
            if s is None:
                return {**out, "ok": False, "message": str(exc)}
    if "error" in s:
        return {**out, "ok": False, "message": s["error"]}
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
    out["acked_ns"] = (s["acked_ns"] if s.get("acked_ns") else
                       t0_ns + int(max(secs) * 1e9) if secs else time.time_ns())
    return out


def _push_watching_acks(deploy: Path, url: str, fleet: str, down: list[str],
                        kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
    """run_push on a thread of its own while this one reads the acknowledgments: returns
    run_push's summary if it ends first, else one built from the acknowledgments of the
    aggregator and of every device up (the push goes on waiting for the down ones)."""
    from slimedge.export.manifest import MANIFEST_NAME, DeploymentManifest
    from slimedge.runtime.aggregator_update import AggregatorAck
    from slimedge.runtime.mqtt import MqttClient
    from slimedge.runtime.update_messages import REFUSED, Ack, UpdateMessageError

    manifest = DeploymentManifest.from_json((deploy / MANIFEST_NAME).read_bytes(),
                                            source=str(deploy / MANIFEST_NAME))
    up = [d.device for d in manifest.devices if d.device not in down]
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["summary"] = run_push(deploy, url, **kwargs)
        except PushError as exc:
            result["summary"] = exc.summary or {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - reported by the caller, not lost on a thread
            result["summary"] = {"error": f"{type(exc).__name__}: {exc}"}

    client = MqttClient(url, name="slimedge-controller-acks", inbound_max=100_000,
                        subscriptions=[(topics.ack_all(fleet), 1)]).start()
    thread = threading.Thread(target=work, name="controller-push", daemon=True)
    started = time.monotonic()
    thread.start()
    agg: Any = None
    acks: dict[str, tuple[Any, int]] = {}  # device -> (ack, receive ns)
    try:
        while thread.is_alive() and time.monotonic() - started < timeout:
            msg = client.get(timeout=0.1)
            if msg is None:
                continue
            try:
                _, device, kind = topics.device_of(msg.topic)
            except topics.TopicError:
                continue
            try:
                if device == topics.AGGREGATOR:
                    a = AggregatorAck.from_bytes(msg.payload)
                    if agg is None or a.sequence >= agg[0].sequence:
                        agg = (a, msg.received_ns)
                elif device in up:
                    acks[device] = (Ack.from_bytes(msg.payload), msg.received_ns)
            except UpdateMessageError:
                continue
            if agg is None:
                continue
            seq = agg[0].sequence
            mine = {d: a for d, (a, _) in acks.items() if a.sequence == seq}
            if agg[0].status == REFUSED or any(a.status == REFUSED for a in mine.values()):
                break
            if agg[0].status == APPLIED and all(
                    d in mine and mine[d].status == APPLIED for d in up):
                break
    finally:
        client.stop()
    if "summary" in result:
        return result["summary"]
    if agg is None:
        return {"error": f"no acknowledgment from the aggregator within {timeout:g} s"}
    a, agg_ns = agg
    seq = a.sequence
    devices = {}
    last_ns = agg_ns
    for d in up:
        ack, t = acks.get(d, (None, 0))
        if ack is None or ack.sequence != seq:
            devices[d] = {"status": "timed out", "reason": None, "message": "no "
                          "acknowledgment seen", "seconds": None}
            continue
        devices[d] = {"status": ack.status, "reason": ack.reason, "message": ack.message,
                      "seconds": ack.seconds}
        last_ns = max(last_ns, t)
    return {"sequence": seq, "at_frame": a.commit_at_frame, "devices": devices,
            "aggregator": {"status": a.status, "reason": a.reason, "message": a.message,
                           "seconds": a.seconds, "commit_at_frame": a.commit_at_frame,
                           "first_frame": a.first_frame},
            "acked_ns": last_ns,
            "note": f"acknowledgments watched by the controller; the push still waits for "
                    f"{', '.join(down)} (down)"}
