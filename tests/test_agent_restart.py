"""A replay agent restarted mid-run with the fleet's common start time (`--start-at`) skips the
frames already past and starts with the next one due: a real agent process, SIGKILLed and
started again against a real broker."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from agent_fixtures import PREDICTED_MS
from test_runtime_agent import _agent, _collect, _features, _finish, _watch, dep  # noqa: F401

from slimedge.runtime.agent import capture_time_ns, first_due_frame
from slimedge.runtime.frames import decode

FPS, FRAMES = 20, 100
PERIOD_NS = 1e9 / FPS
LATE_NS = int(max(PREDICTED_MS.values()) * 1e6)  # the plan's system latency in the manifest


def test_first_due_frame_is_the_first_not_past():
    rng = np.random.default_rng(0)
    for _ in range(500):
        start = int(rng.integers(0, 10**12))
        period = float(rng.uniform(1e6, 2e8))
        late = int(rng.integers(0, 10**9))
        now = start + int(rng.integers(-10**9, 10**11))
        i = first_due_frame(start, period, now, late)
        assert capture_time_ns(start, period, i) + late >= now or i == 0 and now <= start + late
        if i > 0:  # the frame before it was past
            assert capture_time_ns(start, period, i - 1) + late < now
    assert first_due_frame(1000, 50.0, 999, 0) == 0


def test_a_restarted_agent_sends_no_frame_already_past(dep, mqtt_broker):  # noqa: F811
    start_ns = time.time_ns() + 2_000_000_000
    args = ("--fps", str(FPS), "--frames", str(FRAMES), "--start-at", str(start_ns),
            "--heartbeat", "0.2", "--no-updates")
    watch = _watch(mqtt_broker.url)
    first = _agent(dep, mqtt_broker.url, "cam01", *args)
    _collect(watch, lambda got: any(f.seq >= 15 for f in _features(got, "cam01")), 60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    time.sleep(0.6)  # frames go by while it is down; what it had sent has arrived
    _collect(watch, lambda got: False, 0.2)
    launched_ns = time.time_ns()
    again = _agent(dep, mqtt_broker.url, "cam01", *args)
    rc, summary, err = _finish(again, timeout=60)
    msgs = _collect(watch, lambda got: any(m.payload == b"stopped" for m in got), 10)
    watch.stop()
    assert rc == 0, err
    feats = [(m.received_ns, decode(m.payload)) for m in msgs
             if m.topic.endswith("/cam01/features")]
    seqs = [f.seq for _, f in feats]
    skipped = summary["skipped_past"]
    # It started late: the frames already past were skipped, none of them sent; every later
    # frame was sent, in order.
    assert skipped > 15 and seqs == list(range(skipped, FRAMES)), (skipped, seqs[:5])
    assert summary["frames"] == FRAMES - skipped
    first_received, first_frame = feats[0]
    # The frame before the first one sent was past (capture + the plan's latency) by the time
    # the agent ran its first frame.
    assert capture_time_ns(start_ns, PERIOD_NS, skipped - 1) + LATE_NS < first_received
    assert capture_time_ns(start_ns, PERIOD_NS, skipped - 1) + LATE_NS >= launched_ns - 1e9
    # Sent frames were due, not past: each arrived within the plan's latency of its capture
    # (plus the time to compute and send one frame on this loaded machine), where a restart
    # from frame 0 would have sent frames captured seconds before.
    for received, f in feats:
        assert f.timestamp_ns == capture_time_ns(start_ns, PERIOD_NS, f.seq)
        assert received - f.timestamp_ns < LATE_NS + 500_000_000, f.seq


def test_without_a_start_time_nothing_is_skipped(dep, mqtt_broker):  # noqa: F811
    watch = _watch(mqtt_broker.url)
    rc, summary, err = _finish(_agent(dep, mqtt_broker.url, "cam01", "--fps", "40",
                                      "--frames", "5", "--no-updates"))
    watch.stop()
    assert rc == 0, err
    assert summary["skipped_past"] == 0 and summary["published"] == 5


@pytest.mark.parametrize("late_by_s", [30.0])
def test_an_agent_started_after_every_frame_sends_none(dep, mqtt_broker, late_by_s):  # noqa: F811
    start_ns = time.time_ns() - int(late_by_s * 1e9)
    rc, summary, err = _finish(_agent(dep, mqtt_broker.url, "cam02", "--fps", str(FPS),
                                      "--frames", str(FRAMES), "--start-at", str(start_ns),
                                      "--no-updates"))
    assert rc == 0, err
    assert summary["skipped_past"] == FRAMES and summary["frames"] == 0
    assert summary["published"] == 0
