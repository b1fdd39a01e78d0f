"""The device agent as real processes against a real broker, with TensorFlow blocked in the
agent process (as on a device): features equal to the branch runners', heartbeats, retained
status on clean exit / SIGKILL, refusal on a wrong key or a too-small MCU arena, reconnection
after a broker restart, and the bounded outbox dropping the oldest frames."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import DEVICES, AgentDeployment, make_agent_deployment, sign_deployment

from slimedge.artifacts import sha256_file
from slimedge.runtime import frames, topics
from slimedge.runtime.branch import BranchRunner
from slimedge.runtime.mcu import TflmRunner
from slimedge.runtime.mqtt import MqttClient

pytest.importorskip("tflite_micro")
ROOT = Path(__file__).resolve().parents[1]
FLEET = "tiny3"
VIEW = {dev: view for dev, _, view in DEVICES}

# The agent's process: TensorFlow and Keras unimportable (tools/device_smoke.py's import hook),
# then the real command line.
_LAUNCH = (
    "import sys; sys.path.insert(0, {tools!r}); import device_smoke; "
    "sys.meta_path.insert(0, device_smoke.BlockTensorFlow()); "
    "from slimedge.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def dep(tmp_path_factory) -> AgentDeployment:
    pytest.importorskip("tensorflow")
    return make_agent_deployment(tmp_path_factory.mktemp("agent"))


def _agent(dep: AgentDeployment, url: str, device: str, *extra: str,
           key: Path | None = None, deploy: Path | None = None, with_key: bool = True,
           env: dict | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-c", _LAUNCH.format(tools=str(ROOT / "tools")), "agent", "run",
            "--deploy", str(deploy or dep.deploy), "--device", device, "--broker", url,
            "--json", "--log-level", "WARNING", *extra]
    if with_key:
        argv += ["--public-key", str(key or dep.public_key)]
    environ = {k: v for k, v in os.environ.items() if k != "SLIMEDGE_PUBLIC_KEY"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**environ, **(env or {})})


def _finish(p: subprocess.Popen, timeout: float = 60) -> tuple[int, dict | None, str]:
    out, err = p.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return p.returncode, (json.loads(lines[-1]) if lines else None), err


def _watch(url: str) -> MqttClient:
    return MqttClient(url, name="watch", subscriptions=[(f"slimedge/{FLEET}/#", 1)]).start()


def _collect(watch: MqttClient, until, timeout: float = 30.0) -> list:
    got, end = [], time.monotonic() + timeout
    while time.monotonic() < end and not until(got):
        m = watch.get(0.05)
        if m is not None:
            got.append(m)
    return got


def _by_kind(msgs: list, device: str, kind: str) -> list:
    t = getattr(topics, kind)(FLEET, device)
    return [m for m in msgs if m.topic == t]


def _retained_status(url: str, device: str, timeout: float = 5.0) -> str | None:
    c = MqttClient(url, name="late", subscriptions=[(topics.status(FLEET, device), 1)]).start()
    try:
        m = c.get(timeout)
        return m.payload.decode() if m is not None and m.retain else None
    finally:
        c.stop()


def _features(msgs: list, device: str) -> list[frames.FeatureMessage]:
    return [frames.decode(m.payload, source=m.topic) for m in _by_kind(msgs, device, "features")]


def test_three_agents_replay_frames_equal_to_their_runtimes(dep, mqtt_broker):
    n = 6
    watch = _watch(mqtt_broker.url)
    procs = {d: _agent(dep, mqtt_broker.url, d, "--frames", str(n), "--fps", "40",
                       "--heartbeat", "0.1") for d, _, _ in DEVICES}
    results = {d: _finish(p) for d, p in procs.items()}
    msgs = _collect(watch, lambda got: sum(m.payload == b"stopped" for m in got) == 3)
    watch.stop()
    images = dep.test_images
    for device, (rc, summary, err) in results.items():
        assert rc == 0, err
        view = VIEW[device]
        artifact = dep.deploy / "devices" / f"{device}.tflite"
        got = _features(msgs, device)
        assert [f.seq for f in got] == list(range(n))
        assert summary["published"] == n and summary["frames"] == n and summary["dropped"] == 0
        # LiteRT agents compute what BranchRunner computes; the MCU agent what TFLite Micro
        # computes, which may differ from LiteRT by 1 LSB on some features
        runner = BranchRunner(artifact)
        tflm = TflmRunner(artifact, summary["arena_budget_bytes"]) if device == "cam00" else None
        for f in got:
            image = images[f.seq, view]
            want = runner.run(image)
            assert f.version == 2 and f.view == view and f.device == device
            assert (f.deployment_id, f.level) == ("tiny3-20260101000000", 0.0)
            assert f.model_hash == sha256_file(artifact)
            assert (f.scale, f.zero_point) == (want.scale, want.zero_point)
            if tflm is None:
                assert np.array_equal(f.features, want.features), (device, f.seq)
            else:
                assert np.array_equal(f.features, tflm.run(image).features), f.seq
                diff = f.features.astype(int) - want.features.astype(int)
                assert np.abs(diff).max() <= 1
        # capture times follow start + i / fps
        gaps = np.diff([f.timestamp_ns for f in got])
        assert np.all(np.abs(gaps - 25_000_000) <= 1)
        beats = [json.loads(m.payload) for m in _by_kind(msgs, device, "heartbeat")]
        assert len(beats) >= 2 and [b["seq"] for b in beats] == list(range(1, len(beats) + 1))
        assert {b["boot"] for b in beats} == {beats[0]["boot"]}
        runtime = {"cam00": "tflm", "cam01": "litert-cpu", "cam02": "litert-cpu"}[device]
        assert {b["runtime"] for b in beats} == {runtime} == {summary["runtime"]}
        assert set(beats[0]) == {"device", "seq", "boot", "sent_ns", "period_s", "last_frame",
                                 "deployment_id", "model_hash", "update_sequence", "dropped",
                                 "runtime"}
        assert beats[0]["period_s"] == 0.1 and beats[0]["model_hash"] == f.model_hash
        status = [m.payload for m in _by_kind(msgs, device, "status")]
        assert status == [b"online", b"stopped"]
        assert _retained_status(mqtt_broker.url, device) == "stopped"
    mcu = results["cam00"][1]
    assert 0 < mcu["arena_bytes"] <= mcu["arena_budget_bytes"]


def test_sigterm_stops_cleanly_and_sigkill_leaves_the_will(dep, mqtt_broker):
    watch = _watch(mqtt_broker.url)
    term = _agent(dep, mqtt_broker.url, "cam01", "--fps", "20", "--frames", "10000")
    kill = _agent(dep, mqtt_broker.url, "cam02", "--fps", "20", "--frames", "10000")
    _collect(watch, lambda got: {"cam01", "cam02"} <= {topics.device_of(m.topic)[1]
                                                       for m in got
                                                       if m.topic.endswith("features")})
    watch.stop()
    term.send_signal(signal.SIGTERM)
    kill.send_signal(signal.SIGKILL)
    rc, summary, err = _finish(term)
    assert rc == 0, err
    assert 0 < summary["published"] < 10000
    kill.wait(10)
    assert _retained_status(mqtt_broker.url, "cam01") == "stopped"
    assert _retained_status(mqtt_broker.url, "cam02") == "offline"


def test_a_deployment_signed_with_another_key_is_refused(dep, mqtt_broker, tmp_path):
    from slimedge.export.signing import fingerprint, generate_keys, load_public_key

    _, other = generate_keys(tmp_path / "other")
    watch = _watch(mqtt_broker.url)
    rc, summary, err = _finish(_agent(dep, mqtt_broker.url, "cam01", key=other))
    assert rc == 2 and summary is None
    assert "refusing to start" in err and "does not verify" in err
    assert fingerprint(load_public_key(other)) in err
    # no key at all: refused too (the deployment's own public_key.pem is not a provisioned one)
    rc, _, err = _finish(_agent(dep, mqtt_broker.url, "cam01", with_key=False))
    assert rc == 2 and "no provisioned public key" in err
    # the key from the environment is used when no option is given
    rc, _, err = _finish(_agent(dep, mqtt_broker.url, "cam01", with_key=False,
                                env={"SLIMEDGE_PUBLIC_KEY": str(other)}))
    assert rc == 2 and "does not verify" in err
    assert not _collect(watch, lambda got: False, timeout=0.5)  # nothing was published
    watch.stop()


def test_an_mcu_with_too_small_an_arena_refuses_naming_bytes(dep, mqtt_broker, tmp_path):
    small = tmp_path / "deploy"
    shutil.copytree(dep.deploy, small)
    sign_deployment(small, dep.private_key, budgets={"cam00": 2000})
    need = json.loads((small / "manifest.json").read_text())["devices"][0]["tflm_arena_bytes"]
    rc, _, err = _finish(_agent(dep, mqtt_broker.url, "cam00", deploy=small))
    assert rc == 2
    assert f"needs {need} bytes of TFLite Micro arena" in err
    assert "budget is 2000 bytes" in err and "esp32s3" in err


def test_agents_reconnect_after_a_broker_restart_and_the_outbox_drops_the_oldest(
        dep, mqtt_broker):
    watch = MqttClient(mqtt_broker.url, name="watch", reconnect_delay=(0.05, 0.2),
                       subscriptions=[(f"slimedge/{FLEET}/#", 1)]).start()
    p = _agent(dep, mqtt_broker.url, "cam01", "--fps", "50", "--frames", "300", "--outbox",
               "5")
    before = _collect(watch, lambda got: len(_features(got, "cam01")) >= 20)
    mqtt_broker.restart(down_s=1.5)  # 75 frames are captured while the broker is away
    rc, summary, err = _finish(p)
    after = _collect(watch, lambda got: any(m.payload == b"stopped" for m in got), timeout=10)
    watch.stop()
    assert rc == 0, err
    assert summary["link"]["connects"] == 2 and summary["link"]["disconnects"] == 1
    seqs_after = [f.seq for f in _features(after, "cam01")]
    assert seqs_after and seqs_after[-1] == 299  # every frame after recovery arrives
    # the outbox kept the newest frames while the link was down and dropped the oldest ones
    assert summary["dropped_outbox"] >= 50
    seen = {f.seq for f in _features(before, "cam01")} | set(seqs_after)
    missing = sorted(set(range(300)) - seen)
    assert len(missing) <= summary["dropped"] + summary["link"]["published"] - len(seen)
    gap_end = max(missing)
    assert all(s in seen for s in range(gap_end + 1, 300))
    assert b"online" in [m.payload for m in _by_kind(after, "cam01", "status")]


def test_emulated_latency_holds_each_result_for_the_predicted_time(dep, mqtt_broker):
    watch = _watch(mqtt_broker.url)
    p = _agent(dep, mqtt_broker.url, "cam00", "--fps", "20", "--frames", "4",
               "--emulate-latency")
    msgs = _collect(watch, lambda got: any(m.payload == b"stopped" for m in got))
    rc, _, err = _finish(p)
    watch.stop()
    assert rc == 0, err
    feats = [(m, frames.decode(m.payload)) for m in _by_kind(msgs, "cam00", "features")]
    assert len(feats) == 4
    for m, f in feats:  # cam00's manifest predicts 40 ms (inference + link)
        assert m.received_ns - f.timestamp_ns >= 40_000_000


def test_folder_and_plugin_sources_feed_the_agent(dep, mqtt_broker, tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.random.default_rng(3).integers(0, 256, (3, 24, 20, 3), dtype=np.uint8)
    for i, im in enumerate(rgb):
        Image.fromarray(im).save(folder / f"f{i:02d}.png")
    watch = _watch(mqtt_broker.url)
    a = _agent(dep, mqtt_broker.url, "cam01", "--source", f"folder:{folder}", "--fps", "50")
    b = _agent(dep, mqtt_broker.url, "cam02", "--source", "plugin:agent_fixtures:StripeCamera",
               "--fps", "50", env={"PYTHONPATH": str(ROOT / "tests")})
    (ra, sa, ea), (rb, sb, eb) = _finish(a), _finish(b)
    msgs = _collect(watch, lambda got: sum(m.payload == b"stopped" for m in got) == 2)
    watch.stop()
    assert ra == 0 and rb == 0, ea + eb
    from slimedge.runtime.sources import fit_image

    runner = BranchRunner(dep.deploy / "devices" / "cam01.tflite")
    got = _features(msgs, "cam01")
    assert [f.seq for f in got] == [0, 1, 2] and sa["frames"] == 3
    for f in got:  # each file converted to the branch's 16 x 16 grey input
        want = runner.run(fit_image(rgb[f.seq], (16, 16, 1), where="test"))
        assert np.array_equal(f.features, want.features)
    assert [f.seq for f in _features(msgs, "cam02")] == [0, 1, 2, 3] and sb["frames"] == 4


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed")
def test_agent_under_fleet_credentials_and_acl(dep, tmp_path):
    from slimedge.fleet.broker import start_broker
    from slimedge.fleet.credentials import write_credentials
    from slimedge.runtime.mqtt import MQTT5

    creds = write_credentials(dep.deploy, tmp_path / "creds")
    with start_broker(kind="mosquitto", workdir=tmp_path / "b",
                      config_extras=creds.broker_config) as b:
        agg = MqttClient(creds.url("aggregator", b.host, b.port), name="agg", protocol=MQTT5,
                         subscriptions=[(topics.features_all(FLEET), 1),
                                        (topics.heartbeat_all(FLEET), 1),
                                        (topics.status_all(FLEET), 1)]).start()
        # everything an agent publishes (features, heartbeat, status, its Will) is allowed
        rc, summary, err = _finish(_agent(dep, creds.url("cam01", b.host, b.port), "cam01",
                                          "--frames", "5", "--fps", "50"))
        assert rc == 0, err
        msgs = _collect(agg, lambda got: any(m.payload == b"stopped" for m in got))
        assert [f.seq for f in _features(msgs, "cam01")] == list(range(5))
        assert _by_kind(msgs, "cam01", "heartbeat")
        # another device's password is refused at once, with a one-line reason
        wrong = creds.url("cam01", b.host, b.port).replace(
            creds.users["cam01"]["password"], creds.users["cam02"]["password"])
        rc, _, err = _finish(_agent(dep, wrong, "cam01", "--frames", "5"))
        assert rc == 2 and "refused the connection" in err and "Not authorized" in err
        agg.stop()


def test_agent_on_the_embedded_broker(dep, tmp_path):
    """Where Mosquitto is not installed, `fleet up` falls back to the embedded broker: the
    agent's traffic, retained status and Will work there too."""
    from slimedge.fleet.broker import start_broker

    with start_broker(kind="embedded", workdir=tmp_path / "b") as b:
        watch = _watch(b.url)
        rc, summary, err = _finish(_agent(dep, b.url, "cam01", "--frames", "5", "--fps", "50"))
        assert rc == 0, err
        msgs = _collect(watch, lambda got: any(m.payload == b"stopped" for m in got))
        assert [f.seq for f in _features(msgs, "cam01")] == list(range(5))
        killed = _agent(dep, b.url, "cam02", "--fps", "20", "--frames", "10000")
        _collect(watch, lambda got: bool(_features(got, "cam02")))
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        watch.stop()
        assert _retained_status(b.url, "cam01") == "stopped"
        end = time.monotonic() + 5
        while _retained_status(b.url, "cam02") != "offline" and time.monotonic() < end:
            time.sleep(0.1)
        assert _retained_status(b.url, "cam02") == "offline"
