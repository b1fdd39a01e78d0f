"""The aggregator fed directly (`handle(topic, payload, now)` + `tick(now)`) with messages of a
real signed deployment (the tiny ladder, planned with k = 2, exported): its answers are the
evaluator's for the same frames and live sets; deadlines, failures, contingency switches and
every refusal reason."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from aggregator_support import load_fleet, softmax

from slimedge.runtime import frames, topics
from slimedge.runtime.aggregator import REASONS, Aggregator
from slimedge.runtime.aggregator_deployment import (
    DeploymentError,
    load_aggregator_deployment,
)

S = 1_000_000_000
T0 = 1_800_000_000 * S  # a fixed "now" (Unix ns) keeps every test deterministic


@pytest.fixture(scope="module")
def fleet(tiny_deployment):
    return load_fleet(tiny_deployment)


def make(fleet, **kw) -> Aggregator:
    return Aggregator(fleet.dep, fleet.head, now_ns=T0, labels=fleet.ev.labels, **kw)


def send(agg, fleet, frame, views, capture_ns, now_ns):
    out = []
    for v in views:
        out += agg.handle(fleet.topic(v), fleet.payload(frame, v, capture_ns), now_ns)
    return out


def test_deployment_is_read_and_verified(fleet, tiny_deployment, tmp_path):
    dep = fleet.dep
    assert dep.fleet == "tiny12" and dep.views == 12 and len(dep.devices) == 12
    assert dep.view_device == tuple(f"cam{v:02d}" for v in range(12))
    assert all(s.dtype == np.int8 and len(s.model_hash) == 64 for s in dep.devices.values())
    assert dep.predicted_latency_ms == max(d.predicted_latency_ms for d in dep.manifest.devices)
    assert len(dep.pooling.rows) == 12 + 66  # every set of 1 or 2 dead views
    # a changed file is refused before anything is served
    import shutil
    bad = tmp_path / "deploy"
    shutil.copytree(tiny_deployment.deploy, bad)
    (bad / "aggregator" / "contingency.json").write_text("{}")
    with pytest.raises(DeploymentError, match="does not verify"):
        load_aggregator_deployment(bad)


def test_answers_equal_the_evaluator_frame_by_frame(fleet):
    """Random live sets over every test frame (three rounds): class = the evaluator's,
    confidence = softmax of the planner's NumPy classifier on the evaluator's pooling."""
    agg = make(fleet)
    rng = np.random.default_rng(0)
    n, checked = fleet.n_frames, 0
    for frame in range(3 * n):
        live = rng.random(12) < 0.6
        live[rng.integers(12)] = True
        capture = T0 + frame * S // 10
        for v in range(12):  # every device alive: frames wait for every view until deadline
            agg.handle(fleet.topic(v, "heartbeat"), fleet.heartbeat(f"cam{v:02d}", frame),
                       capture)
        got = send(agg, fleet, frame, np.flatnonzero(live), capture, capture + 1000)
        got += agg.tick(capture + agg.window_ns)
        assert len(got) == 1
        r = got[0]
        want, logits = fleet.expected(frame, live)
        assert r.frame == frame and r.views == tuple(np.flatnonzero(live))
        assert r.cls == want, (frame, live)
        assert r.confidence == pytest.approx(softmax(logits).max(), abs=1e-5)
        rule = fleet.dep.pooling.for_live(live)
        assert (r.weights_from, r.in_table, r.predicted_accuracy) == \
            (rule.source, rule.in_table, rule.predicted_accuracy)
        if frame < n:
            assert r.label == fleet.ev.labels[frame]
        checked += 1
    assert checked == 3 * n and agg.rejected.total() == 0


def beat(agg, fleet, seq, now_ns):
    for v in range(12):
        agg.handle(fleet.topic(v, "heartbeat"), fleet.heartbeat(f"cam{v:02d}", seq), now_ns)


def test_a_complete_frame_is_answered_at_once_a_missing_view_at_the_deadline(fleet):
    agg = make(fleet)
    beat(agg, fleet, 0, T0)
    got = send(agg, fleet, 0, range(12), T0, T0 + 5_000_000)
    assert len(got) == 1 and got[0].answered_ns == T0 + 5_000_000 and got[0].missing == ()
    assert not got[0].deadline_missed and got[0].latency_ms == 5.0
    beat(agg, fleet, 1, T0 + S)
    assert send(agg, fleet, 1, range(11), T0 + S, T0 + S) == []
    assert agg.tick(T0 + S + agg.window_ns - 1) == []
    late = agg.tick(T0 + S + agg.window_ns)
    assert late[0].missing == (11,) and late[0].views == tuple(range(11))
    assert not late[0].deadline_missed  # answered at its deadline
    assert agg.detector.state("cam11") == "suspected"
    assert agg.detector.devices["cam11"].reason == "missed the deadline of frame 1"
    assert [d for d in agg.detector.devices.values() if d.state != "alive"] == \
        [agg.detector.devices["cam11"]]
    assert any(e["event"] == "state" and e["device"] == "cam11" for e in agg.drain_events())
    # its view arriving now is late
    agg.handle(fleet.topic(11), fleet.payload(1, 11, T0 + S), T0 + S + agg.window_ns + 1)
    assert agg.rejected["late"] == 1


def test_a_dead_device_is_not_waited_for_and_the_weights_switch(fleet):
    agg = make(fleet)
    beat(agg, fleet, 0, T0)
    send(agg, fleet, 0, range(12), T0, T0 + 1000)
    # frame 1: view 3 missing; cam03's Will completes it at once
    assert send(agg, fleet, 1, [v for v in range(12) if v != 3], T0 + S, T0 + S + 10) == []
    got = agg.handle(topics.status("tiny12", "cam03"), b"offline", T0 + S + 20)
    assert len(got) == 1 and got[0].views == tuple(v for v in range(12) if v != 3)
    assert got[0].live_set == got[0].views and got[0].missing == ()
    row = fleet.dep.pooling.rows[1 << 3]
    assert got[0].predicted_accuracy == row["accuracy"]["test"] and got[0].in_table
    events = agg.drain_events()
    kinds = [(e["event"], e.get("state")) for e in events]
    assert ("state", "dead") in kinds and ("contingency_switch", None) in kinds
    switch = [e for e in events if e["event"] == "contingency_switch"][-1]
    assert switch["dead_mask"] == 8 and switch["previous_views"] == list(range(12))
    # later frames without view 3 are answered on arrival of the survivors
    assert len(send(agg, fleet, 2, [v for v in range(12) if v != 3], T0 + 2 * S,
                    T0 + 2 * S)) == 1
    # cam03 comes back: a heartbeat makes it alive and it is waited for again
    agg.handle(fleet.topic(3, "heartbeat"), fleet.heartbeat("cam03", 1), T0 + 3 * S)
    assert agg.detector.state("cam03") == "alive"
    assert send(agg, fleet, 3, [v for v in range(12) if v != 3], T0 + 3 * S,
                T0 + 3 * S) == []
    assert len(send(agg, fleet, 3, [3], T0 + 3 * S, T0 + 3 * S + 1)) == 1


def test_our_own_link_down_suspends_silence_timeouts(fleet):
    agg = make(fleet)
    beat(agg, fleet, 0, T0)
    agg.link(False, T0 + S)
    agg.link(False, T0 + S)  # no change, no second event
    assert agg.tick(T0 + 60 * S) == [] and agg.detector.expected() == set(fleet.dep.devices)
    agg.link(True, T0 + 60 * S)
    links = [e["up"] for e in agg.drain_events() if e["event"] == "link"]
    assert links == [False, True]
    agg.tick(T0 + 63 * S)
    assert agg.detector.expected() == set()  # silent 3 s after the reconnect: dead


def test_a_live_set_outside_the_table_is_renormalized_and_reported(fleet):
    agg = make(fleet)
    live = [v for v in range(12) if v not in (0, 5, 9)]  # 3 dead views, the table has k = 2
    send(agg, fleet, 0, live, T0, T0)
    r = agg.tick(T0 + agg.window_ns)[0]
    assert (r.weights_from, r.in_table, r.predicted_accuracy) == ("renormalize", False, None)
    assert r.cls == fleet.expected(0, np.isin(np.arange(12), live))[0]
    replan = [e for e in agg.drain_events() if e["event"] == "replan_needed"]
    assert replan and replan[0]["dead_mask"] == (1 << 0) | (1 << 5) | (1 << 9)


def _nan_message(fleet) -> bytes:
    """A float32 message with a NaN and a valid CRC (what only a broken device sends)."""
    import struct
    import zlib

    m = fleet.message(0, 0, T0, features=np.ones(16, np.float32), scale=None, zero_point=None)
    body = bytearray(frames.encode(m)[:-4])
    struct.pack_into("<f", body, len(body) - 4, float("nan"))
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


BAD = {
    "foreign_topic": lambda f: ("other/tiny12/cam00/features", f.payload(0, 0, T0)),
    "unknown_device": lambda f: (topics.features("tiny12", "cam99"), f.payload(0, 0, T0)),
    "oversize": lambda f: (f.topic(0), b"SEFM" + bytes(f.dep.max_message_bytes())),
    "truncated": lambda f: (f.topic(0), f.payload(0, 0, T0)[:-7]),
    "bad_crc": lambda f: (f.topic(0), f.payload(0, 0, T0)[:-1] + b"\x00"),
    "non_finite": lambda f: (f.topic(0), _nan_message(f)),
    "malformed": lambda f: (f.topic(0), b"JUNK" + f.payload(0, 0, T0)[4:]),
    "device_mismatch": lambda f: (f.topic(0), f.payload(0, 0, T0, device="cam01")),
    "view_not_owned": lambda f: (f.topic(0), f.payload(0, 1, T0, device="cam00")),
    "wrong_deployment": lambda f: (f.topic(0), f.payload(0, 0, T0, deployment_id="other-1")),
    "wrong_model": lambda f: (f.topic(0), f.payload(0, 0, T0, model_hash="0" * 64)),
    "wrong_shape": lambda f: (f.topic(0), f.payload(0, 0, T0, features=np.ones(8, np.int8))),
    "wrong_dtype": lambda f: (f.topic(0), f.payload(0, 0, T0, features=np.ones(16, np.float32),
                                                     scale=None, zero_point=None)),
    "bad_timestamp": lambda f: (f.topic(0), f.payload(0, 0, T0 + 3600 * S)),
    "late": lambda f: (f.topic(0), f.payload(0, 0, T0 - 60 * S)),
    "bad_heartbeat": lambda f: (f.topic(0, "heartbeat"), b"{not json"),
    "bad_status": lambda f: (f.topic(0, "status"), b"sleeping"),
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_bad_message_is_refused_and_counted_by_reason(fleet, reason):
    agg = make(fleet)
    topic, payload = BAD[reason](fleet)
    assert agg.handle(topic, payload, T0) == []
    assert dict(agg.rejected) == {reason: 1}
    assert agg.recent_rejections[-1]["reason"] == reason
    assert reason in REASONS


def test_more_refusals_duplicates_versions_levels_heartbeats(fleet):
    agg = make(fleet)
    p = fleet.payload(0, 0, T0)
    agg.handle(fleet.topic(0), p, T0)
    agg.handle(fleet.topic(0), p, T0 + 1)
    assert agg.rejected["duplicate"] == 1
    v1 = frames.encode(dataclasses.replace(fleet.message(1, 0, T0), deployment_id=None,
                                           level=None, model_hash=None))
    agg.handle(fleet.topic(0), v1, T0)
    assert agg.rejected["wrong_deployment"] == 1  # version 1 names no deployment
    agg.handle(fleet.topic(0), fleet.payload(1, 0, T0, level=0.5), T0)
    agg.handle(fleet.topic(0), fleet.payload(1, 0, T0, model_hash="ab" * 8), T0)
    assert agg.rejected["wrong_model"] == 2
    hb = fleet.heartbeat("cam00", 3)
    agg.handle(fleet.topic(0, "heartbeat"), hb, T0)
    agg.handle(fleet.topic(0, "heartbeat"), hb, T0 + 1)
    agg.handle(fleet.topic(0, "heartbeat"), fleet.heartbeat("cam01", 4), T0)
    agg.handle(fleet.topic(0, "heartbeat"), fleet.heartbeat("cam00", 5, deployment_id="x"), T0)
    assert (agg.rejected["stale_heartbeat"], agg.rejected["bad_heartbeat"],
            agg.rejected["wrong_deployment"]) == (1, 1, 2)
    assert agg.rejected_by_device["cam00"]["wrong_model"] == 2
    assert agg.rejected["internal_error"] == 0


def test_status_snapshot(fleet):
    agg = make(fleet)
    agg.handle(fleet.topic(0, "heartbeat"), fleet.heartbeat("cam00", 0), T0)
    for frame in range(5):
        send(agg, fleet, frame, range(12), T0 + frame * S // 10, T0 + frame * S // 10 + 2000)
    agg.handle(fleet.topic(0), b"junk", T0 + S)
    s = agg.status(T0 + S)
    assert s["frames_answered"] == 5 and s["frames_per_s"] == pytest.approx(5.0)  # 5 in 1 s
    assert s["latency_ms"]["p50"] == pytest.approx(0.002)
    assert 0 < s["compute_ms"]["p50"] <= s["compute_ms"]["p99"]  # measured, not simulated
    assert s["accuracy"] == np.mean([fleet.expected(f, np.ones(12, bool))[0]
                                     == fleet.ev.labels[f] for f in range(5)])
    assert s["live_set"] == list(range(12)) and s["rejected"] == {"malformed": 1}
    states = {d["device"]: d for d in s["devices"]}
    assert states["cam00"]["state"] == "alive" and states["cam01"]["state"] == "unknown"
    assert states["cam00"]["accepted"] == 5 and states["cam00"]["rejected"] == {"malformed": 1}
    json.dumps(s, allow_nan=False)


def test_the_aggregator_runs_with_tensorflow_unimportable(tiny_deployment):
    """Device-side code: loading the deployment, the head in LiteRT, answering a frame and the
    `aggregator run` command line all work with TensorFlow and Keras blocked."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = f"""
import sys
sys.path.insert(0, {str(root / "tools")!r})
import device_smoke
sys.meta_path.insert(0, device_smoke.BlockTensorFlow())
import numpy as np
from slimedge.cli import build_parser
from slimedge.runtime import frames, topics
from slimedge.runtime.aggregator import Aggregator
from slimedge.runtime.aggregator_deployment import load_aggregator_deployment
from slimedge.runtime.head import HeadRunner
build_parser().parse_args(["aggregator", "run", "--deploy", "d", "--broker", "mqtt://h:1"])
dep = load_aggregator_deployment({str(tiny_deployment.deploy)!r})
agg = Aggregator(dep, HeadRunner(dep.head_path, dep.feature_dim, dep.n_classes), now_ns=0)
out = []
for v in range(dep.views):
    d = dep.view_device[v]
    m = frames.FeatureMessage(v, 0, 0, d, np.zeros(dep.feature_dim, np.int8), 0.1, 0,
                              deployment_id=dep.deployment_id, level=dep.devices[d].level,
                              model_hash=dep.devices[d].model_hash)
    out += agg.handle(topics.features(dep.fleet, d), frames.encode(m), 1000)
assert len(out) == 1, (out, dict(agg.rejected))
bad = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
print("answered", out[0].frame, "leaked", bad)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "answered 0 leaked []" in done.stdout


def test_an_internal_error_is_counted_never_raised(fleet):
    """A head that fails (a broken interpreter, say): the frame is dropped and counted under
    internal_error; handle() and tick() return normally and later frames still flow."""
    from slimedge.runtime.head import HeadRunner

    class FailingHead(HeadRunner):
        def logits(self, pooled):
            raise RuntimeError("interpreter broke")

    agg = Aggregator(fleet.dep, FailingHead(fleet.dep.head_path, 16, 4), now_ns=T0)
    beat(agg, fleet, 0, T0)
    assert send(agg, fleet, 0, range(12), T0, T0) == []  # completed in handle()
    send(agg, fleet, 1, range(11), T0, T0)
    assert agg.tick(T0 + agg.window_ns) == []  # answered at the deadline, in tick()
    assert agg.rejected["internal_error"] == 2
    assert "interpreter broke" in agg.recent_rejections[-1]["detail"]
    agg.head = fleet.head
    assert len(send(agg, fleet, 2, range(12), T0, T0)) == 1
