"""`slimedge push` against real device processes over a real broker (Mosquitto when installed):
each device process holds A/B slots provisioned from the old deployment, receives its update
on its own topic, verifies, self-tests, swaps and acknowledges. Refusals, a device that never
answers and a transfer that resumes after the device joined late are reported per device."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slimedge import cli
from slimedge.export import signing
from slimedge.export.manifest import DeploymentManifest
from slimedge.fleet.push import run_push
from slimedge.runtime.slots import UpdateSlots
from slimedge.runtime.update import load_trust
from tests.update_fixtures import MCU_DEVICE, PI_DEVICE, make_deployment

ROOT = Path(__file__).resolve().parents[1]
BOARDS = {MCU_DEVICE: "esp32s3", PI_DEVICE: "rpi4b"}
FLEET = "pushfleet"

# One device as the agent wires updates (UpdateLink on its MQTT link: update topic in, acks
# out), heartbeats out, the model swapped between two "frames" of its loop; the device side
# only (TensorFlow blocked).
DEVICE = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import device_smoke
sys.meta_path.insert(0, device_smoke.BlockTensorFlow())
from slimedge.runtime import topics
from slimedge.runtime.branch import BranchRunner
from slimedge.runtime.mqtt import MqttClient
from slimedge.runtime.selftest import self_test
from slimedge.runtime.slots import UpdateSlots
from slimedge.runtime.update import load_trust
from slimedge.runtime.update_receiver import UpdateLink, UpdateReceiver

url, fleet, dev, board, state, public, stop = sys.argv[2:9]
slots = UpdateSlots(state, load_trust(dev, board, public), self_test=self_test)
slots.recover()
rx = UpdateReceiver(slots)
runner = BranchRunner(slots.current()[0])
client = MqttClient(url, name=dev).start()
link = UpdateLink(client, fleet, rx).start()
last = 0.0
while not os.path.exists(stop):
    time.sleep(0.05)  # one "frame"
    swapped = link.swap_if_ready()  # between two frames
    if swapped is not None:
        runner = BranchRunner(swapped[0])
    if time.monotonic() - last > 0.3:
        info = slots.current()[1]
        client.publish(topics.heartbeat(fleet, dev), json.dumps(
            {"device": dev, "model_hash": info.model_sha256,
             "update_sequence": link.sequence}))
        last = time.monotonic()
link.stop()
client.stop()
print("counts", json.dumps(rx.counts), flush=True)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("push")
    private, public = signing.generate_keys(base / "keys")
    _, other_public = signing.generate_keys(base / "other-keys")
    old = make_deployment(base / "old", private, seed=1, created="2025-01-01T00:00:00Z",
                          deployment_id=f"{FLEET}-20250101000000")
    new = make_deployment(base / "new", private, seed=2, created="2025-02-01T00:00:00Z",
                          deployment_id=f"{FLEET}-20250201000000", level=0.5)
    return {"base": base, "private": private, "public": public, "other_public": other_public,
            "old": old, "new": new,
            "new_manifest": DeploymentManifest.from_json((new / "manifest.json").read_bytes())}


class Device:
    """A device process, provisioned with the old deployment."""

    def __init__(self, world: dict, tmp: Path, device: str, url: str, *,
                 public: Path | None = None, start: bool = True) -> None:
        self.world, self.device, self.url = world, device, url
        self.state = tmp / f"state-{device}"
        self.stop_file = tmp / f"stop-{device}"
        self.public = public or world["public"]
        slots = UpdateSlots(self.state, load_trust(device, BOARDS[device], self.public))
        old = DeploymentManifest.from_json((world["old"] / "manifest.json").read_bytes())
        slots.provision_deployment(world["old"], old, device)
        self.proc = None
        if start:
            self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DEVICE, str(ROOT / "tools"), self.url, FLEET, self.device,
             BOARDS[self.device], str(self.state), str(self.public), str(self.stop_file)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def close(self) -> str:
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err[-2000:]
        return out

    def serving(self) -> tuple[str, int]:
        slots = UpdateSlots(self.state, load_trust(self.device, BOARDS[self.device],
                                                   self.public))
        info = slots.recover()
        return info.model_sha256, info.sequence


def push_cli(world: dict, url: str, *extra: str, capsys) -> tuple[int, str]:
    rc = cli.main(["push", "--deploy", str(world["new"]), "--broker", url, "--listen", "1.5",
                   *extra])
    return rc, capsys.readouterr().out


def new_sha(world: dict, device: str) -> str:
    return world["new_manifest"].device(device).sha256


def test_push_applies_on_every_device_then_finds_nothing_changed(world, tmp_path, mqtt_broker,
                                                                  capsys):
    devices = [Device(world, tmp_path, d, mqtt_broker.url) for d in (MCU_DEVICE, PI_DEVICE)]
    try:
        rc, out = push_cli(world, mqtt_broker.url, "--json", "--timeout", "90",
                           "--chunk-bytes", "1024", "--emulate-link", capsys=capsys)
        assert rc == 0, out
        summary = json.loads(out)
        assert summary["fleet"] == FLEET and summary["sequence"] >= 1
        assert summary["emulate_link"] is True
        for d in devices:
            row = summary["devices"][d.device]
            assert row["status"] == "applied" and row["reason"] is None, row
            assert row["seconds"] > 0 and row["device_seconds"] > 0
        seq = summary["sequence"]
        time.sleep(1.0)  # heartbeats now carry the new model hash
        rc, out = push_cli(world, mqtt_broker.url, capsys=capsys)
        assert rc == 0
        assert "unchanged" in out and "sequence None" in out
    finally:
        outs = [d.close() for d in devices]
    for d in devices:
        assert d.serving() == (new_sha(world, d.device), seq)
    assert all('"applied": 1' in o for o in outs), outs


def test_refused_and_silent_devices_fail_the_push(world, tmp_path, mqtt_broker, capsys):
    # cam00 was provisioned with another host key: it refuses; cam01 never runs.
    wrong = Device(world, tmp_path, MCU_DEVICE, mqtt_broker.url,
                   public=world["other_public"])
    silent = Device(world, tmp_path, PI_DEVICE, mqtt_broker.url, start=False)
    try:
        rc, out = push_cli(world, mqtt_broker.url, "--timeout", "8", capsys=capsys)
        assert rc == 1
        lines = {ln.split()[0]: ln for ln in out.splitlines()[2:]}
        assert "refused" in lines[MCU_DEVICE] and "wrong-key" in lines[MCU_DEVICE]
        assert "timed out" in lines[PI_DEVICE]
        rc, out = push_cli(world, mqtt_broker.url, "--timeout", "8", "--json",
                           "--devices", MCU_DEVICE, capsys=capsys)
        assert rc == 1
        row = json.loads(out)["devices"][MCU_DEVICE]
        assert (row["status"], row["reason"]) == ("refused", "wrong-key")
        # --exclude: the silent device is not sent, not waited for, not reported
        rc, out = push_cli(world, mqtt_broker.url, "--timeout", "8", "--json",
                           "--exclude", PI_DEVICE, capsys=capsys)
        assert rc == 1
        assert list(json.loads(out)["devices"]) == [MCU_DEVICE]
    finally:
        wrong.close()
    assert wrong.serving()[1] == 0 and silent.serving()[1] == 0  # the old model still served


def test_device_that_joins_late_gets_the_missing_chunks(world, tmp_path, mqtt_broker):
    late = Device(world, tmp_path, PI_DEVICE, mqtt_broker.url, start=False)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(run_push(
        world["new"], mqtt_broker.url, devices=[PI_DEVICE], listen=0.5, timeout=90,
        chunk_bytes=512)))
    worker.start()
    time.sleep(3.0)  # the chunks are gone by now: only the retained offer waits
    late.start()
    worker.join(timeout=120)
    out = late.close()
    row = result["devices"][PI_DEVICE]
    assert row["status"] == "applied", row
    assert row["resent_chunks"] >= 2
    assert late.serving() == (new_sha(world, PI_DEVICE), result["sequence"])
    assert '"malformed": 0' in out


def test_push_refuses_unknown_devices(world, mqtt_broker, capsys):
    rc = cli.main(["push", "--deploy", str(world["new"]), "--broker", mqtt_broker.url,
                   "--devices", "cam77"])
    assert rc == 2 and "cam77" in capsys.readouterr().err
    rc = cli.main(["push", "--deploy", str(world["new"]), "--broker", mqtt_broker.url,
                   "--exclude", "cam77"])
    assert rc == 2 and "--exclude: cam77 not in deployment" in capsys.readouterr().err


def test_a_slow_link_is_paced_while_the_others_go_at_full_speed(mqtt_broker):
    from slimedge.fleet.push import _Links
    from slimedge.runtime.mqtt import MqttClient

    client = MqttClient(mqtt_broker.url, name="pace-test").start()
    try:
        links = _Links(client, {"slow": 8.0, "fast": None})  # slow: 1 byte per second
        for _ in range(5):
            links.add("slow", "slimedge/t/slow/update", bytes(100))
            links.add("fast", "slimedge/t/fast/update", bytes(100))
        links.pump(budget_s=0.3)
        left = [d for d, *_ in links.queue]
        assert left == ["slow"] * 4  # one 100-byte message takes the slow link 100 s
        assert links.idle("fast") and not links.idle("slow")
    finally:
        client.stop()


def test_going_back_needs_a_rollback_order(world, tmp_path, mqtt_broker):
    dev = Device(world, tmp_path, PI_DEVICE, mqtt_broker.url)
    try:
        first = run_push(world["new"], mqtt_broker.url, devices=[PI_DEVICE], listen=0.5,
                         timeout=60)
        assert first["devices"][PI_DEVICE]["status"] == "applied"
        back = run_push(world["old"], mqtt_broker.url, devices=[PI_DEVICE], listen=1.0,
                        timeout=60)
        row = back["devices"][PI_DEVICE]
        assert (row["status"], row["reason"]) == ("refused", "downgrade"), row
        assert back["sequence"] > first["sequence"]
        order = run_push(world["old"], mqtt_broker.url, devices=[PI_DEVICE], listen=1.0,
                         timeout=60, rollback=True)
        assert order["devices"][PI_DEVICE]["status"] == "applied"
    finally:
        dev.close()
    old = DeploymentManifest.from_json((world["old"] / "manifest.json").read_bytes())
    assert dev.serving() == (old.device(PI_DEVICE).sha256, order["sequence"])


def test_a_device_that_applied_after_the_switch_frame_is_reported_late():
    from slimedge.fleet.push import APPLIED, UNCHANGED, Outcome, format_table, mark_late

    outcomes = {"cam01": Outcome(APPLIED, first_frame=400, seconds=1.0),
                "cam02": Outcome(APPLIED, first_frame=407, seconds=2.5),
                "cam03": Outcome(UNCHANGED, message="runs this model already: nothing sent"),
                "cam04": Outcome(APPLIED, seconds=0.4)}  # an ack without a frame: not judged
    assert mark_late(outcomes, None) == []  # no switch, no frame to be late for
    assert mark_late(outcomes, 400) == ["cam02"]
    d = {n: o.to_dict() for n, o in outcomes.items()}
    assert d["cam02"]["status"] == APPLIED and d["cam02"]["late_frames"] == 7
    assert d["cam01"]["late_frames"] is None and d["cam01"]["first_frame"] == 400
    table = format_table({"deployment_id": "dep", "fleet": "f", "sequence": 3, "devices": d,
                          "aggregator": None})
    line = next(t for t in table.splitlines() if t.startswith("cam02"))
    assert "7 frame(s) after the switch at frame 400" in line
    assert "nothing sent" not in table  # the usual messages of applied/unchanged stay quiet
