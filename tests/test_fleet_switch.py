"""A fleet-wide switch through real processes: Mosquitto, three `slimedge agent run` processes
and one `slimedge aggregator run` process on the old deployment; `run_push(..., aggregator=True)`
switches the aggregator and every device whose model changes at one frame id F, chosen from the
aggregator's state; the device whose model the new deployment keeps (byte-identical artifact) is
sent nothing and is pooled from F on under its old deployment id.
Before it, a badly signed order, an order signed by another key and an order for a frame already
past are each refused, counted and reported, and the old deployment keeps serving. The run folder
then shows: every frame answered (none lost across F), frames < F by the old deployment and
frames >= F by the new one, each frame's class the evaluator's for the deployment of that frame."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from slimedge.export import signing
from slimedge.fleet.push import run_push
from slimedge.fleet.updates import AggregatorUpdate, build_aggregator_update
from slimedge.runtime import topics
from slimedge.runtime.aggregator_update import AggregatorAck
from slimedge.runtime.mqtt import MqttClient
from slimedge.runtime.update_messages import encode_chunk, encode_offer

ROOT = Path(__file__).resolve().parents[1]
FLEET = "swtrio"
DEVICES = ("pi0", "pi1", "pi2")
CHANGED = ("pi1", "pi2")  # pi0's model is the same in both deployments
TRIO = ("{id: pi0, board: rpi4b, views: [0, 1, 2, 3]}",
        "{id: pi1, board: rpi4b, views: [4, 5, 6, 7]}",
        "{id: pi2, board: rpi5, views: [8, 9, 10, 11]}")


@pytest.fixture(scope="module")
def pair(tiny_ladder, tmp_path_factory):
    """Two deployments of one fleet from the tiny ladder, signed with one key: pi0 keeps its
    level (the same artifact bytes), pi1 and pi2 get other levels (other models and feature
    quantization); and a replay dataset of 96 test frames (the tiny dataset's objects, twice)."""
    from slimedge.data.container import Dataset
    from slimedge.export.deploy import export_deployment

    root = tmp_path_factory.mktemp("fleet-switch")
    fleet = root / "swtrio.yaml"
    fleet.write_text(f"name: {FLEET}\nviews: 12\naggregator: {{host: gateway}}\ndevices:\n"
                     + "".join(f"  - {d}\n" for d in TRIO))
    ds = tiny_ladder.dataset
    kw = dict(dataset=tiny_ladder.root / "dataset", progress=False, min_agreement=0.5)
    export_deployment(fleet, tiny_ladder.ladder, [0] * 12, root / "deploy", **kw)
    time.sleep(1.1)  # deployment ids carry the creation second
    export_deployment(fleet, tiny_ladder.ladder, [0] * 4 + [2] * 4 + [1] * 4, root / "deploy2",
                      **kw)
    n = ds.n_objects
    Dataset(images=np.concatenate([np.asarray(ds.images)] * 2),
            labels=np.concatenate([ds.labels] * 2), class_names=list(ds.class_names),
            split=np.full(2 * n, 2, np.uint8), params=dict(ds.params),
            cameras=list(ds.cameras),
            object_names=[f"{k}-{i}" for k in range(2) for i in range(n)]).save(root / "replay")
    return SimpleNamespace(old=root / "deploy", new=root / "deploy2", keys=root / "keys",
                           public=root / "keys" / signing.PUBLIC_KEY_NAME,
                           private=root / "keys" / signing.PRIVATE_KEY_NAME,
                           dataset=root / "replay", frames=2 * n)


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "slimedge.cli", *argv]


class Watch:
    """The aggregator's retained state and acknowledgments, as a host sees them."""

    def __init__(self, url: str) -> None:
        self.state: dict = {}
        self.acks: list[AggregatorAck] = []
        self.client = MqttClient(url, name="test-watch", subscriptions=[
            (topics.aggregator_state(FLEET), 1), (topics.aggregator_ack(FLEET), 1)]).start()

    def pump(self, seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            m = self.client.get(0.05)
            if m is None:
                continue
            if m.topic == topics.aggregator_state(FLEET):
                self.state = json.loads(m.payload)
            else:
                self.acks.append(AggregatorAck.from_bytes(m.payload))

    def publish(self, up: AggregatorUpdate) -> None:
        topic = topics.aggregator_update(FLEET)
        for c in up.chunks(4096):
            self.client.publish(topic, encode_chunk(c), qos=1)
        self.client.publish(topic, encode_offer(up.offer(4096)), qos=1, retain=True)


def _foreign(up: AggregatorUpdate, tmp: Path) -> AggregatorUpdate:
    key = signing.load_private_key(signing.generate_keys(tmp / "foreign")[0])
    order = dataclasses.replace(up.order, signing_key=signing.fingerprint(key.public_key()))
    data = order.to_bytes()
    return AggregatorUpdate(order, data, signing.sign(key, data), up.payload)


def test_fleet_wide_switch_at_one_frame_id(pair, mosquitto_broker, tmp_path):
    from slimedge.fleet.reference import load_deployment, make_reference

    url, n, fps = mosquitto_broker.url, pair.frames, 5.0
    run = tmp_path / "run"
    start = time.time_ns() + 10 * 1_000_000_000
    common = ["--broker", url, "--public-key", str(pair.public), "--fps", f"{fps:g}",
              "--frames", str(n), "--start-at", str(start), "--heartbeat", "0.3"]
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("aggregator", *DEVICES)}
    procs = {"aggregator": subprocess.Popen(
        _cli("aggregator", "run", "--deploy", str(pair.old), "--run-dir", str(run),
             "--dataset", str(pair.dataset), *common),
        stdout=logs["aggregator"], stderr=subprocess.STDOUT, cwd=ROOT)}
    for d in DEVICES:
        procs[d] = subprocess.Popen(
            _cli("agent", "run", "--deploy", str(pair.old), "--device", d, "--source",
                 f"replay:{pair.dataset}", "--state", str(tmp_path / "state" / d), *common),
            stdout=logs[d], stderr=subprocess.STDOUT, cwd=ROOT)
    watch = Watch(url)
    try:
        watch.pump(60, lambda: (watch.state.get("last_frame") or -1) >= 3)
        assert watch.state.get("running"), "the aggregator never announced itself"
        # 1-3: refused, counted, reported; the old deployment keeps serving
        good = build_aggregator_update(pair.new, pair.private, sequence=900,
                                       commit_at_frame=n - 1)
        watch.publish(AggregatorUpdate(good.order, good.order_bytes, bytes(64), good.payload))
        watch.publish(_foreign(dataclasses.replace(good, order=dataclasses.replace(
            good.order, sequence=901)), tmp_path))
        watch.pump(20, lambda: len(watch.acks) >= 2)
        past = run_push(pair.new, url, at_frame=1, aggregator=True, listen=1.0, timeout=20)
        # 4: the switch, at a frame push chooses from the aggregator's last frame
        pushed = run_push(pair.new, url, aggregator=True, lead_s=5.0, listen=1.0, timeout=90)
        for name, p in procs.items():
            assert p.wait(timeout=120) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        watch.client.stop()
        for fh in logs.values():
            fh.close()

    assert [(a.status, a.reason) for a in watch.acks[:2]] == \
        [("refused", "bad-signature"), ("refused", "wrong-key")]
    agg = past["aggregator"]
    assert (agg["status"], agg["reason"]) == ("refused", "frame-passed"), agg
    assert {d: o["status"] for d, o in past["devices"].items()} == \
        {"pi0": "unchanged", "pi1": "not sent", "pi2": "not sent"}

    F = pushed["at_frame"]
    agg = pushed["aggregator"]
    assert agg["status"] == "applied" and agg["first_frame"] == F, agg
    assert agg["seconds"] >= agg["prepared_seconds"] > 0
    assert pushed["devices"]["pi0"]["status"] == "unchanged", pushed["devices"]["pi0"]
    assert pushed["devices"]["pi0"]["bytes"] is None  # nothing sent
    for d in CHANGED:
        assert pushed["devices"][d]["status"] == "applied", pushed["devices"][d]
    assert 0 < F < n - 5

    with sqlite3.connect(run / "results.sqlite") as con:
        rows = con.execute("SELECT frame, class, views, deployment_id FROM results "
                           "ORDER BY frame").fetchall()
    frames = [r[0] for r in rows]
    assert frames == list(range(n)), "frames lost or answered twice"
    old_dep = load_deployment(pair.old, pair.public)
    new_dep = load_deployment(pair.new, pair.public)
    assert [r[3] for r in rows] == [old_dep.deployment_id] * F + \
        [new_dep.deployment_id] * (n - F), "a frame pooled by the wrong deployment"
    for dep, part in ((old_dep, rows[:F]), (new_dep, rows[F:])):
        ref = make_reference(dep, None, "test", pair.dataset)
        ids = [r[0] for r in part]
        live = np.zeros((len(part), 12), bool)
        for i, r in enumerate(part):
            live[i, json.loads(r[2])] = True
        want = ref.predictions(dep, ids, live)
        assert [r[1] for r in part] == want.tolist(), dep.deployment_id
    around = [json.loads(r[2]) for r in rows[F - 3:F + 3]]
    assert all(len(v) == 12 for v in around), "views lost across the switch"

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["frames_lost"] == 0
    assert "wrong_deployment" not in metrics["rejected"], metrics["rejected"]
    sw = metrics["switch"]
    assert sw["updates"]["refused"] == {"bad-signature": 1, "wrong-key": 1, "frame-passed": 1}
    assert sw["applied"] == 1 and sw["sequence"] == pushed["sequence"]
    # pi0 (views 0-3) was never updated: from F on its views came under the old id, pooled
    assert sw["accepted_same_model"] == sum(len(set(json.loads(r[2])) & {0, 1, 2, 3})
                                            for r in rows[F:]) > 0
    assert sw["refused_cross_deployment"] == 0
    assert metrics["deployment_id"] == new_dep.deployment_id
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("switch_refused") == 3 and kinds.count("switch_applied") == 1
    (applied,) = [e for e in events if e["event"] == "switch_applied"]
    assert applied["frame"] == F and applied["previous"] == old_dep.deployment_id
    print(f"\nswitch at frame {F}: aggregator prepared {agg['prepared_seconds']} s and applied "
          f"{agg['seconds']} s after the push began; devices "
          + ", ".join(f"{d} {pushed['devices'][d]['seconds']} s" for d in CHANGED)
          + f"; frames lost {metrics['frames_lost']}")


def test_push_without_a_frame_to_switch_at_refuses_clearly(pair, mosquitto_broker, tmp_path,
                                                           capsys):
    """`--aggregator yes` with no aggregator running, and an aggregator that has answered no
    frame yet (push cannot choose F without --at-frame): refused before anything is sent,
    with the reason; with --at-frame and no device listening, the aggregator still prepares
    the switch and --json reports it (exit 1: not applied)."""
    from slimedge import cli

    url = mosquitto_broker.url
    argv = ["push", "--deploy", str(pair.new), "--broker", url, "--listen", "1"]
    assert cli.main([*argv, "--aggregator", "yes"]) == 2
    assert "no aggregator heard on slimedge/swtrio/aggregator/state" in capsys.readouterr().err
    proc = subprocess.Popen(
        _cli("aggregator", "run", "--deploy", str(pair.old), "--broker", url, "--public-key",
             str(pair.public), "--run-dir", str(tmp_path / "run")),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT)
    watch = Watch(url)
    try:
        watch.pump(60, lambda: bool(watch.state.get("running")))
        assert watch.state.get("last_frame", 0) is None
        assert cli.main([*argv, "--aggregator", "yes"]) == 2
        err = capsys.readouterr().err
        assert "the aggregator has answered no frame yet" in err and "--at-frame F" in err
        rc = cli.main([*argv, "--at-frame", "1000", "--timeout", "4", "--json"])
        summary = json.loads(capsys.readouterr().out)
        assert rc == 1 and summary["at_frame"] == 1000
        agg = summary["aggregator"]
        assert agg["status"] == "prepared" and agg["commit_at_frame"] == 1000, agg
        assert "frame 1000 was not answered" in agg["message"]
        assert {o["status"] for o in summary["devices"].values()} == {"timed out"}
        watch.pump(5, lambda: (watch.state.get("pending") or {}).get("commit_at_frame") == 1000)
        assert watch.state["pending"]["deployment_id"] == summary["deployment_id"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        watch.client.stop()
    assert proc.returncode == 0
