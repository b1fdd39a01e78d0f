"""The aggregator's failure detector: which devices are alive, suspected or dead.

Inputs are what arrives on the broker, with the time it arrived:

- a heartbeat (JSON, `parse_heartbeat`) makes its device *alive* (again). Its `boot` (process
  start) and `seq` (one per heartbeat since that start) order heartbeats: one from an older
  boot, or with a `seq` not above the last accepted one of the same boot, is *stale* and
  changes nothing, so a reordered or replayed heartbeat cannot revive a dead device;
- a status text: "offline" (the Last Will) or "stopped" (clean exit) makes it *dead* at once;
  "online" (birth) only records that the device connected, aliveness waits for a heartbeat;
- a missed frame deadline (the device's view did not arrive in time) makes it *suspected*;
- silence: `suspect_after` heartbeat periods without an accepted heartbeat make it
  *suspected*, `dead_after` periods make it *dead*. The period is the one the device announces
  in its heartbeats (until it has sent one, the configured default).

With the defaults (1.5 and 2.5 periods) a device killed right after a heartbeat is declared
dead 2.5 periods later plus one tick, within the 3 periods promised; on loopback the broker
delivers the Will of a killed process at once, earlier still.

A device never heard from is *unknown*: it is waited for like a live one, and silence since the
detector started moves it to suspected and dead like any other. While the aggregator's own
link to the broker is down it hears nobody: silence then says nothing about the devices, so no
silence timeout runs, and silence counts again from the reconnect (`listening`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from slimedge.errors import SlimEdgeError

__all__ = [
    "ALIVE",
    "DEAD",
    "STATES",
    "SUSPECTED",
    "UNKNOWN",
    "DetectorConfig",
    "DeviceHealth",
    "FailureDetector",
    "Heartbeat",
    "HeartbeatError",
    "StaleHeartbeatError",
    "StateChange",
    "parse_heartbeat",
]

UNKNOWN, ALIVE, SUSPECTED, DEAD = "unknown", "alive", "suspected", "dead"
STATES = (UNKNOWN, ALIVE, SUSPECTED, DEAD)
STATUS_TEXTS = ("online", "offline", "stopped")
RUNTIMES = ("litert-cpu", "litert-edgetpu", "tflm")


class HeartbeatError(SlimEdgeError, ValueError):
    """A heartbeat or status payload that does not follow the contract; names the field."""


class StaleHeartbeatError(SlimEdgeError):
    """A heartbeat older than one already accepted (reordered, replayed or from a past boot)."""


@dataclass(frozen=True)
class Heartbeat:
    device: str
    seq: int
    boot: int
    sent_ns: int
    period_s: float
    last_frame: int | None
    deployment_id: str
    model_hash: str
    update_sequence: int
    dropped: int
    runtime: str


def _field(obj: dict[str, Any], name: str, kinds: tuple[type, ...], *,
           nullable: bool = False) -> Any:
    if name not in obj:
        raise HeartbeatError(f"heartbeat field '{name}': missing")
    value = obj[name]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise HeartbeatError(f"heartbeat field '{name}': expected "
                             f"{'/'.join(k.__name__ for k in kinds)}, got {value!r:.40}")
    return value


def parse_heartbeat(payload: bytes | str) -> Heartbeat:
    """The heartbeat in `payload` (FLEET_CONTRACT: a JSON object), every field checked."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise HeartbeatError(f"heartbeat: not JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise HeartbeatError(f"heartbeat: expected a JSON object, got {type(obj).__name__}")
    hb = Heartbeat(
        device=_field(obj, "device", (str,)),
        seq=_field(obj, "seq", (int,)),
        boot=_field(obj, "boot", (int,)),
        sent_ns=_field(obj, "sent_ns", (int,)),
        period_s=float(_field(obj, "period_s", (int, float))),
        last_frame=_field(obj, "last_frame", (int,), nullable=True),
        deployment_id=_field(obj, "deployment_id", (str,)),
        model_hash=_field(obj, "model_hash", (str,)),
        update_sequence=_field(obj, "update_sequence", (int,)),
        dropped=_field(obj, "dropped", (int,)),
        runtime=_field(obj, "runtime", (str,)),
    )
    if hb.seq < 0 or hb.boot < 0 or hb.dropped < 0 or hb.update_sequence < 0:
        raise HeartbeatError("heartbeat fields 'seq', 'boot', 'dropped', 'update_sequence': "
                             "must be >= 0")
    if hb.runtime not in RUNTIMES:
        raise HeartbeatError(f"heartbeat field 'runtime': expected one of {RUNTIMES}, "
                             f"got {hb.runtime[:40]!r}")
    if not (math.isfinite(hb.period_s) and 0 < hb.period_s <= 3600):
        raise HeartbeatError(f"heartbeat field 'period_s': expected 0 < period <= 3600 s, "
                             f"got {hb.period_s}")
    return hb


@dataclass(frozen=True)
class DetectorConfig:
    period_s: float = 1.0  # heartbeat period assumed until a device announces its own
    suspect_after: float = 1.5  # periods of silence -> suspected
    dead_after: float = 2.5  # periods of silence (the N missed periods) -> dead

    def __post_init__(self) -> None:
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise SlimEdgeError(f"heartbeat period: expected seconds > 0, got {self.period_s}")
        if not 0 < self.suspect_after <= self.dead_after:
            raise SlimEdgeError(f"detector: need 0 < suspect_after ({self.suspect_after}) <= "
                                f"dead_after ({self.dead_after})")


@dataclass
class DeviceHealth:
    """What the detector knows of one device (times are receive times, Unix ns)."""

    device: str
    state: str = UNKNOWN
    since_ns: int = 0  # when the current state began
    reason: str = "not heard from yet"
    last_heard_ns: int = 0  # last accepted heartbeat (detector start until the first)
    boot: int | None = None
    seq: int | None = None
    period_s: float | None = None  # announced by the device
    heartbeats: int = 0
    stale: int = 0
    status: str | None = None  # last status text
    last_frame: int | None = None
    dropped: int = 0
    runtime: str | None = None
    missed_deadlines: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, now_ns: int) -> dict[str, Any]:
        return {
            "device": self.device, "state": self.state, "reason": self.reason,
            "since_s": round((now_ns - self.since_ns) / 1e9, 3),
            "last_heartbeat_age_s": (round((now_ns - self.last_heard_ns) / 1e9, 3)
                                     if self.heartbeats else None),
            "boot": self.boot, "seq": self.seq, "period_s": self.period_s,
            "heartbeats": self.heartbeats, "stale": self.stale, "status": self.status,
            "last_frame": self.last_frame, "dropped": self.dropped, "runtime": self.runtime,
            "missed_deadlines": self.missed_deadlines,
        }


@dataclass(frozen=True)
class StateChange:
    """One transition, as events.jsonl records it."""

    t_ns: int
    device: str
    state: str  # the new state
    previous: str
    reason: str

    def to_event(self) -> dict[str, Any]:
        return {"t_ns": self.t_ns, "kind": self.state, "device": self.device,
                "previous": self.previous, "reason": self.reason}


class FailureDetector:
    """Per-device state machine (module docstring). Every method takes the receive time."""

    def __init__(self, devices: Iterable[str], config: DetectorConfig | None = None, *,
                 now_ns: int) -> None:
        self.config = config or DetectorConfig()
        self.devices: dict[str, DeviceHealth] = {
            d: DeviceHealth(d, since_ns=now_ns, last_heard_ns=now_ns) for d in devices}
        if not self.devices:
            raise SlimEdgeError("detector: no devices to watch")
        self.deaf_since: int | None = None  # set while our own link to the broker is down

    def _set(self, h: DeviceHealth, state: str, reason: str, now_ns: int) -> list[StateChange]:
        if h.state == state:
            return []
        change = StateChange(now_ns, h.device, state, h.state, reason)
        h.state, h.reason, h.since_ns = state, reason, now_ns
        return [change]

    def period_s(self, device: str) -> float:
        return self.devices[device].period_s or self.config.period_s

    def heartbeat(self, hb: Heartbeat, now_ns: int) -> list[StateChange]:
        """Accept a heartbeat of a known device; StaleHeartbeatError if not newer than the last."""
        h = self.devices[hb.device]
        if h.boot is not None and h.seq is not None:
            if hb.boot < h.boot or (hb.boot == h.boot and hb.seq <= h.seq):
                h.stale += 1
                raise StaleHeartbeatError(
                    f"device {hb.device}: heartbeat boot={hb.boot} seq={hb.seq} is not newer "
                    f"than boot={h.boot} seq={h.seq}")
        restarted = h.boot is not None and hb.boot != h.boot
        h.boot, h.seq, h.period_s = hb.boot, hb.seq, hb.period_s
        h.last_heard_ns = now_ns
        h.heartbeats += 1
        h.last_frame, h.dropped, h.runtime = hb.last_frame, hb.dropped, hb.runtime
        h.missed_deadlines = 0
        reason = "heartbeat from a new boot (restarted)" if restarted else "heartbeat"
        return self._set(h, ALIVE, reason, now_ns)

    def status(self, device: str, text: str, now_ns: int) -> list[StateChange]:
        """A status text ("online" | "offline" | "stopped"); HeartbeatError for anything else."""
        if text not in STATUS_TEXTS:
            raise HeartbeatError(f"status of {device}: expected one of {STATUS_TEXTS}, "
                                 f"got {text[:40]!r}")
        h = self.devices[device]
        h.status = text
        if text == "offline":
            return self._set(h, DEAD, "Last Will (offline)", now_ns)
        if text == "stopped":
            return self._set(h, DEAD, "stopped (clean exit)", now_ns)
        return []

    def missed_deadline(self, device: str, frame: int, now_ns: int) -> list[StateChange]:
        h = self.devices[device]
        h.missed_deadlines += 1
        if h.state in (UNKNOWN, ALIVE):
            return self._set(h, SUSPECTED, f"missed the deadline of frame {frame}", now_ns)
        return []

    def listening(self, up: bool, now_ns: int) -> None:
        """The aggregator's own link to the broker went down (False) or came back (True).
        Silence while we cannot hear is not the devices' fault: no silence timeout runs while
        the link is down, and every device's silence counts again from the reconnect."""
        if up and self.deaf_since is not None:
            for h in self.devices.values():
                h.last_heard_ns = max(h.last_heard_ns, now_ns)
        self.deaf_since = None if up else (self.deaf_since or now_ns)

    def tick(self, now_ns: int) -> list[StateChange]:
        """Silence timeouts (none while the link is down: `listening`)."""
        changes: list[StateChange] = []
        if self.deaf_since is not None:
            return changes
        for h in self.devices.values():
            if h.state == DEAD:
                continue
            period = h.period_s or self.config.period_s
            silent = (now_ns - h.last_heard_ns) / 1e9 / period
            if silent >= self.config.dead_after:
                changes += self._set(h, DEAD, f"no heartbeat for {silent:.1f} periods", now_ns)
            elif silent >= self.config.suspect_after and h.state != SUSPECTED:
                changes += self._set(h, SUSPECTED, f"no heartbeat for {silent:.1f} periods",
                                     now_ns)
        return changes

    def state(self, device: str) -> str:
        return self.devices[device].state

    def expected(self) -> set[str]:
        """Devices whose views a frame waits for: every one not dead."""
        return {d for d, h in self.devices.items() if h.state != DEAD}

    def snapshot(self, now_ns: int) -> list[dict[str, Any]]:
        return [h.to_dict(now_ns) for h in self.devices.values()]
