"""`fleet up`'s own view of the fleet over MQTT: each device's retained status and the first
heartbeat of each process start, with the time they arrived.

It tells `fleet up` when every agent is up (before the first frame is due) and leaves a record
(`<run>/fleet_view.jsonl`) that shows, after a broker restart, every agent announcing itself
"online" again, and after a `--restart`, the new process's first heartbeat.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

FLEET_VIEW_FILE = "fleet_view.jsonl"


class FleetMonitor:
    def __init__(self, url: str, fleet: str, run_dir: Path) -> None:
        from slimedge.runtime import topics
        from slimedge.runtime.mqtt import MqttClient

        self._topics = topics
        self.client = MqttClient(url, name="fleet-up-monitor",
                                 subscriptions=[(topics.status_all(fleet), 1),
                                                (topics.heartbeat_all(fleet), 0)])
        self.status: dict[str, str] = {}  # device -> last status text
        self.boots: dict[str, set[int]] = {}  # device -> process starts seen
        self._fh = open(run_dir / FLEET_VIEW_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fleet-monitor", daemon=True)

    def start(self) -> FleetMonitor:
        self.client.start(wait=10.0)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            m = self.client.get(timeout=0.1)
            if m is not None:
                self._take(m.topic, m.payload, m.received_ns, m.retain)

    def _take(self, topic: str, payload: bytes, t_ns: int, retained: bool) -> None:
        try:
            _, device, kind = self._topics.device_of(topic)
        except self._topics.TopicError:
            return
        row: dict[str, Any] | None = None
        with self._lock:
            if kind == "status":
                text = payload.decode("utf-8", "replace")
                self.status[device] = text
                row = {"t_ns": t_ns, "device": device, "status": text, "retained": retained}
            elif kind == "heartbeat":
                try:
                    boot = int(json.loads(payload)["boot"])
                except (ValueError, KeyError, TypeError):
                    return
                seen = self.boots.setdefault(device, set())
                if boot not in seen:
                    seen.add(boot)
                    row = {"t_ns": t_ns, "device": device, "first_heartbeat_of_boot": boot}
            if row is not None:
                self._fh.write(json.dumps(row) + "\n")
                self._fh.flush()

    def up(self, devices: list[str]) -> list[str]:
        """The devices that said "online" and sent a heartbeat."""
        with self._lock:
            return [d for d in devices if self.status.get(d) == "online" and self.boots.get(d)]

    def wait_up(self, devices: list[str], until_ns: int) -> list[str]:
        """Wait until every device is up or `until_ns`; returns those still not up."""
        while True:
            missing = [d for d in devices if d not in self.up(devices)]
            if not missing or time.time_ns() >= until_ns:
                return missing
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.client.stop()
        self._fh.close()
