"""The controller's view of the fleet over MQTT: which devices are alive or dead, and how far
the replay has gone.

It listens to every device's retained status and heartbeats and feeds them, with the time they
arrived, to the aggregator's own failure detector (`slimedge.runtime.detector`), so the
controller and the aggregator judge a device by one rule. A message that does not follow the
contract (a foreign topic, an unknown device, a heartbeat that does not parse, a status other
than online/offline/stopped) is counted under its reason and dropped: it never stops the watch.

Heartbeats also say which frame each device computed last (`last_frame`): the controller picks
the frame a fleet-wide switch happens at from the highest one, and the frame rate from how fast
it grows.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from slimedge.runtime import topics
from slimedge.runtime.detector import (
    DetectorConfig,
    FailureDetector,
    HeartbeatError,
    StaleHeartbeatError,
    StateChange,
    parse_heartbeat,
)

TICK_S = 0.05  # silence timeouts checked this often


@dataclass
class Progress:
    """The highest frame any device reported, and when (receive time, ns)."""

    frame: int | None = None
    t_ns: int = 0
    first_frame: int | None = None
    first_t_ns: int = 0

    def see(self, frame: int, t_ns: int) -> None:
        if self.first_frame is None:
            self.first_frame, self.first_t_ns = frame, t_ns
        if self.frame is None or frame > self.frame:
            self.frame, self.t_ns = frame, t_ns

    def fps(self) -> float | None:
        """Frames per second over what was seen (None before a second of it)."""
        if self.frame is None or self.first_frame is None:
            return None
        dt = (self.t_ns - self.first_t_ns) / 1e9
        df = self.frame - self.first_frame
        return df / dt if dt >= 1.0 and df > 0 else None


class FleetWatch:
    """A thread that owns an MQTT client and a `FailureDetector`; state changes come out of
    `changes` (a queue of `StateChange`), counters and progress are read under its lock."""

    def __init__(self, url: str, fleet: str, devices: list[str], *,
                 heartbeat_s: float = 1.0, name: str = "slimedge-controller-watch") -> None:
        from slimedge.runtime.mqtt import MqttClient

        self.fleet = fleet
        self.client = MqttClient(url, name=name, inbound_max=100_000,
                                 subscriptions=[(topics.status_all(fleet), 1),
                                                (topics.heartbeat_all(fleet), 0)])
        self.detector = FailureDetector(devices, DetectorConfig(period_s=heartbeat_s),
                                        now_ns=time.time_ns())
        self.changes: queue.Queue[StateChange] = queue.Queue()
        self.rejected: Counter[str] = Counter()
        self.progress = Progress()
        self.heartbeats: dict[str, dict[str, Any]] = {}  # device -> last accepted, as sent
        self._lock = threading.Lock()
        self._busy = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="controller-watch", daemon=True)

    def start(self, wait: float = 10.0) -> FleetWatch:
        self.client.start(wait=wait)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.client.stop()

    def _emit(self, changes: list[StateChange]) -> None:
        for c in changes:
            self.changes.put(c)

    def _loop(self) -> None:
        next_tick = 0.0
        was_connected = True
        while not self._stop.is_set():
            msg = self.client.get(timeout=TICK_S)
            with self._lock:
                connected = self.client.connected
                if connected != was_connected:  # deaf while our own link is down
                    if not self._busy:
                        self.detector.listening(connected, time.time_ns())
                    was_connected = connected
                if msg is not None:
                    self._take(msg.topic, msg.payload, msg.received_ns)
                if time.monotonic() >= next_tick:
                    self._emit(self.detector.tick(time.time_ns()))
                    next_tick = time.monotonic() + TICK_S

    @contextmanager
    def busy(self) -> Iterator[None]:
        """While the controller replans and exports in this process, its own threads (this
        one and the MQTT client's) get little CPU: heartbeats are read late, so silence then
        proves nothing. The detector is told it cannot hear (no silence timeout runs; a Last
        Will still counts at once), and silence counts again from the end."""
        with self._lock:
            self._busy = True
            self.detector.listening(False, time.time_ns())
        try:
            yield
        finally:
            with self._lock:
                self._busy = False
                if self.client.connected:
                    self.detector.listening(True, time.time_ns())

    def take(self, topic: str, payload: bytes, t_ns: int) -> None:
        """One inbound message (the thread calls this; tests may too)."""
        with self._lock:
            self._take(topic, payload, t_ns)

    def _take(self, topic: str, payload: bytes, t_ns: int) -> None:
        try:
            fleet, device, kind = topics.device_of(topic)
        except topics.TopicError:
            self.rejected["bad_topic"] += 1
            return
        if fleet != self.fleet or kind not in ("status", "heartbeat"):
            self.rejected["bad_topic"] += 1
            return
        if device not in self.detector.devices:
            self.rejected["unknown_device"] += 1
            return
        if kind == "status":
            try:
                text = payload.decode("utf-8")
                self._emit(self.detector.status(device, text, t_ns))
            except (UnicodeDecodeError, HeartbeatError):
                self.rejected["bad_status"] += 1
            return
        try:
            hb = parse_heartbeat(payload)
        except HeartbeatError:
            self.rejected["bad_heartbeat"] += 1
            return
        if hb.device != device:
            self.rejected["bad_heartbeat"] += 1
            return
        try:
            self._emit(self.detector.heartbeat(hb, t_ns))
        except StaleHeartbeatError:
            self.rejected["stale_heartbeat"] += 1
            return
        self.heartbeats[device] = {"model_hash": hb.model_hash,
                                   "update_sequence": hb.update_sequence,
                                   "deployment_id": hb.deployment_id, "boot": hb.boot}
        if hb.last_frame is not None:
            self.progress.see(hb.last_frame, t_ns)

    def state(self, device: str) -> str:
        with self._lock:
            return self.detector.state(device)

    def states(self) -> dict[str, str]:
        with self._lock:
            return {d: h.state for d, h in self.detector.devices.items()}

    def frame_now(self) -> tuple[int | None, float | None]:
        """(highest frame reported, estimated frames per second)."""
        with self._lock:
            return self.progress.frame, self.progress.fps()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.rejected)
