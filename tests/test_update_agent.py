"""Updates through the real device agent (`python -m slimedge.runtime.agent`, separate
processes, real broker): an update pushed in the middle of a stream is applied between two
frames with no frame lost, every frame before the swap carrying the old model's hash and every
frame after it the new one's; an agent SIGKILLed while it applies an update serves a valid
model after its restart, and the update then applies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from slimedge.export import signing
from slimedge.export.manifest import DeploymentManifest
from slimedge.fleet.push import run_push
from slimedge.runtime import frames, topics
from slimedge.runtime.mqtt import MqttClient
from tests.update_fixtures import MCU_DEVICE, PI_DEVICE, make_deployment

ROOT = Path(__file__).resolve().parents[1]
FLEET = "agentfleet"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    from PIL import Image

    base = tmp_path_factory.mktemp("agent-updates")
    private, public = signing.generate_keys(base / "keys")
    old = make_deployment(base / "old", private, seed=1, created="2025-01-01T00:00:00Z",
                          deployment_id=f"{FLEET}-20250101000000")
    new = make_deployment(base / "new", private, seed=2, created="2025-02-01T00:00:00Z",
                          deployment_id=f"{FLEET}-20250201000000", level=0.5)
    images = base / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(400):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
            images / f"{i:04d}.png")
    sha = {name: {d.device: d.sha256 for d in DeploymentManifest.from_json(
        (path / "manifest.json").read_bytes()).devices} for name, path in
        (("old", old), ("new", new))}
    return {"public": public, "old": old, "new": new, "images": images, "sha": sha}


class Listener:
    """Every feature message and heartbeat of the fleet, as a subscriber sees them."""

    def __init__(self, url: str) -> None:
        self.features: dict[str, list[tuple[int, str]]] = {}
        self.heartbeats: dict[str, list[dict]] = {}
        self.client = MqttClient(url, name="listener", subscriptions=[
            (topics.features_all(FLEET), 1), (topics.heartbeat_all(FLEET), 0)]).start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.client.get(0.1)
            if msg is None:
                continue
            _, device, kind = topics.device_of(msg.topic)
            if kind == "features":
                m = frames.decode(msg.payload)
                self.features.setdefault(device, []).append((m.seq, m.model_hash))
            else:
                self.heartbeats.setdefault(device, []).append(json.loads(msg.payload))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.stop()


def start_agent(world: dict, url: str, device: str, state: Path, frames_n: int,
                fps: float = 20.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "slimedge.runtime.agent", "--deploy", str(world["old"]),
         "--device", device, "--broker", url, "--public-key", str(world["public"]),
         "--source", f"folder:{world['images']}", "--fps", str(fps), "--frames",
         str(frames_n), "--state", str(state), "--heartbeat", "0.3", "--json",
         "--outbox", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_update_mid_stream_switches_at_one_frame_with_none_lost(world, tmp_path, mqtt_broker):
    n = 200
    listener = Listener(mqtt_broker.url)
    agents = {d: start_agent(world, mqtt_broker.url, d, tmp_path / d, n)
              for d in (PI_DEVICE, MCU_DEVICE)}
    try:
        deadline = time.monotonic() + 60
        while (time.monotonic() < deadline and
               min(len(listener.features.get(d, [])) for d in agents) < 20):
            time.sleep(0.1)
        pushed = run_push(world["new"], mqtt_broker.url, listen=1.0, timeout=60)
        outs = {d: p.communicate(timeout=120) for d, p in agents.items()}
    finally:
        for p in agents.values():
            if p.poll() is None:
                p.kill()
        time.sleep(0.5)
        listener.close()
    for device, (out, err) in outs.items():
        assert agents[device].returncode == 0, err[-3000:]
        row = pushed["devices"][device]
        assert row["status"] == "applied", row
        seen = listener.features[device]
        assert sorted(s for s, _ in seen) == list(range(n)), f"{device}: frames lost"
        hashes = [h for _, h in sorted(seen)]
        old, new = world["sha"]["old"][device], world["sha"]["new"][device]
        switch = hashes.index(new)
        assert 0 < switch < n and hashes[:switch] == [old] * switch
        assert hashes[switch:] == [new] * (n - switch), f"{device}: models mixed after swap"
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["update_sequence"] == pushed["sequence"]
        beats = listener.heartbeats[device]
        assert beats[-1]["update_sequence"] == pushed["sequence"]
        assert beats[-1]["model_hash"] == new and beats[0]["update_sequence"] == 0


@pytest.mark.parametrize("delay", [0.4, pytest.param(0.05, marks=pytest.mark.slow),
                                   pytest.param(1.2, marks=pytest.mark.slow)])
def test_agent_killed_while_applying_comes_back_with_a_valid_model(world, tmp_path,
                                                                   mqtt_broker, delay):
    state = tmp_path / "state"
    procs = [start_agent(world, mqtt_broker.url, MCU_DEVICE, state, 100000)]
    listener = Listener(mqtt_broker.url)
    result: dict = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not listener.features.get(MCU_DEVICE):
            time.sleep(0.1)
        pusher = threading.Thread(target=lambda: result.update(run_push(
            world["new"], mqtt_broker.url, devices=[MCU_DEVICE], listen=0.3, timeout=10)))
        pusher.start()
        time.sleep(delay)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)
        pusher.join(timeout=60)
        listener.features.clear()
        procs.append(start_agent(world, mqtt_broker.url, MCU_DEVICE, state, 100000))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not listener.features.get(MCU_DEVICE):
            time.sleep(0.1)
        served = {h for _, h in listener.features[MCU_DEVICE]}
        assert served, "the restarted agent serves no model"
        assert served <= {world["sha"]["old"][MCU_DEVICE], world["sha"]["new"][MCU_DEVICE]}
        final = run_push(world["new"], mqtt_broker.url, devices=[MCU_DEVICE], listen=1.0,
                         timeout=60)
        assert final["devices"][MCU_DEVICE]["status"] in ("applied", "unchanged")
        procs[1].send_signal(signal.SIGTERM)
        _, err = procs[1].communicate(timeout=60)
        assert procs[1].returncode == 0, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        listener.close()

def test_update_for_frame_f_switches_every_agent_at_frame_f(world, tmp_path, mqtt_broker):
    n, at = 160, 110
    listener = Listener(mqtt_broker.url)
    agents = {d: start_agent(world, mqtt_broker.url, d, tmp_path / d, n)
              for d in (PI_DEVICE, MCU_DEVICE)}
    try:
        deadline = time.monotonic() + 60
        while (time.monotonic() < deadline and
               min(len(listener.features.get(d, [])) for d in agents) < 10):
            time.sleep(0.1)
        pushed = run_push(world["new"], mqtt_broker.url, listen=0.5, timeout=60, at_frame=at)
        for p in agents.values():
            p.communicate(timeout=120)
    finally:
        for p in agents.values():
            if p.poll() is None:
                p.kill()
        time.sleep(0.5)
        listener.close()
    for device in agents:
        assert agents[device].returncode == 0
        assert pushed["devices"][device]["status"] == "applied"
        seen = dict(listener.features[device])
        assert sorted(seen) == list(range(n))
        new = world["sha"]["new"][device]
        assert [i for i in range(n) if seen[i] == new] == list(range(at, n)), device
