"""The aggregator's parts without a deployment: failure detector, frame alignment, the
contingency rule per live set, the results database."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from slimedge.runtime.alignment import FrameAligner, RefusedViewError
from slimedge.runtime.detector import (
    ALIVE,
    DEAD,
    SUSPECTED,
    UNKNOWN,
    DetectorConfig,
    FailureDetector,
    Heartbeat,
    HeartbeatError,
    StaleHeartbeatError,
    parse_heartbeat,
)
from slimedge.runtime.live_weights import LiveSetPooling, PoolingError

S = 1_000_000_000  # ns per second


def hb(device: str = "cam00", seq: int = 0, boot: int = 1, period_s: float = 1.0) -> Heartbeat:
    return Heartbeat(device, seq, boot, 0, period_s, None, "dep", "ab" * 8, 0, 0, "litert-cpu")


# ------------------------------------------------------------------ detector


def test_silence_suspects_then_kills_and_a_heartbeat_revives():
    d = FailureDetector(["cam00", "cam01"], now_ns=0)
    assert d.state("cam00") == UNKNOWN
    assert [c.state for c in d.heartbeat(hb(seq=0), 0)] == [ALIVE]
    assert d.tick(int(1.4 * S)) == [] or d.state("cam00") == ALIVE
    changes = d.tick(int(1.6 * S))
    assert {(c.device, c.state) for c in changes} == {("cam00", SUSPECTED), ("cam01", SUSPECTED)}
    assert "no heartbeat for 1.6 periods" in changes[0].reason
    assert [c.state for c in d.tick(int(2.6 * S)) if c.device == "cam00"] == [DEAD]
    assert "cam00" not in d.expected()
    back = d.heartbeat(hb(seq=1), 3 * S)
    assert [(c.state, c.previous, c.reason) for c in back] == [(ALIVE, DEAD, "heartbeat")]
    assert d.expected() == {"cam00"}  # cam01 stayed silent: dead


def test_stale_or_reordered_heartbeats_change_nothing():
    d = FailureDetector(["cam00"], now_ns=0)
    d.heartbeat(hb(seq=5, boot=10), 0)
    d.status("cam00", "offline", S)
    for old in (hb(seq=5, boot=10), hb(seq=4, boot=10), hb(seq=99, boot=9)):
        with pytest.raises(StaleHeartbeatError, match="is not newer than boot=10 seq=5"):
            d.heartbeat(old, 2 * S)
    assert d.state("cam00") == DEAD and d.devices["cam00"].stale == 3
    # a restart: a newer boot starts its seq again at 0 and is not stale
    back = d.heartbeat(hb(seq=0, boot=11), 3 * S)
    assert back[0].state == ALIVE and "restarted" in back[0].reason


def test_silence_while_our_own_link_is_down_blames_nobody():
    d = FailureDetector(["cam00"], now_ns=0)
    d.heartbeat(hb(seq=0), 0)
    d.listening(False, S)
    assert d.tick(100 * S) == [] and d.state("cam00") == ALIVE
    d.listening(True, 100 * S)  # silence counts again from the reconnect
    assert d.tick(int(101.4 * S)) == []
    assert d.tick(int(102.6 * S))[-1].state == DEAD


def test_status_texts():
    d = FailureDetector(["a", "b", "c"], now_ns=0)
    assert d.status("a", "online", 0) == [] and d.state("a") == UNKNOWN
    assert d.status("a", "offline", 1)[0].reason == "Last Will (offline)"
    assert d.status("b", "stopped", 1)[0].state == DEAD
    with pytest.raises(HeartbeatError, match="status of c: expected one of"):
        d.status("c", "gone", 1)
    assert d.missed_deadline("c", 7, 2)[0].reason == "missed the deadline of frame 7"
    assert d.state("c") == SUSPECTED
    assert d.missed_deadline("a", 8, 2) == []  # dead stays dead


@pytest.mark.parametrize("phase", [0.0, 0.01, 0.3, 0.5, 0.77, 0.99])
def test_default_detects_a_killed_device_within_three_periods(phase):
    """Heartbeats every period; the device dies `phase` periods after one; the service
    ticks every 10 ms. Death is declared within 3 periods of the kill."""
    period, tick = 0.5, 0.01
    d = FailureDetector(["cam00"], DetectorConfig(period_s=period), now_ns=0)
    seq, t = 0, 0.0
    kill = 10 * period + phase * period
    dead_at = None
    while t < kill + 10 * period and dead_at is None:
        if t < kill and t >= seq * period:
            d.heartbeat(hb(seq=seq, period_s=period), int(t * S))
            seq += 1
        for c in d.tick(int(t * S)):
            if c.state == DEAD:
                dead_at = t
        t = round(t + tick, 6)
    assert dead_at is not None and 0 < dead_at - kill <= 3 * period


def test_the_device_period_replaces_the_default():
    d = FailureDetector(["cam00"], DetectorConfig(period_s=10.0), now_ns=0)
    d.heartbeat(hb(period_s=0.1), 0)
    assert d.tick(int(0.2 * S))[0].state == SUSPECTED
    assert d.tick(int(0.3 * S))[0].state == DEAD  # 2.5 periods of 0.1 s


@pytest.mark.parametrize("payload, match", [
    (b"\xff", "not JSON"),
    (b"[1]", "expected a JSON object"),
    (json.dumps({"device": "a"}).encode(), "field 'seq': missing"),
])
def test_bad_heartbeats_name_the_field(payload, match):
    with pytest.raises(HeartbeatError, match=match):
        parse_heartbeat(payload)


def test_heartbeat_field_types_are_checked():
    good = {"device": "a", "seq": 1, "boot": 2, "sent_ns": 3, "period_s": 1.0,
            "last_frame": None, "deployment_id": "d", "model_hash": "h", "update_sequence": 0,
            "dropped": 0, "runtime": "tflm"}
    assert parse_heartbeat(json.dumps(good)).period_s == 1.0
    for key, value, match in (("seq", "1", "field 'seq': expected int"),
                              ("seq", True, "field 'seq'"), ("period_s", 0, "period_s"),
                              ("dropped", -1, "must be >= 0")):
        with pytest.raises(HeartbeatError, match=match):
            parse_heartbeat(json.dumps({**good, key: value}))


# ------------------------------------------------------------------ alignment


def test_alignment_refuses_by_reason():
    a = FrameAligner(100, horizon_ns=1000, max_pending=2)
    p = a.add(7, 0, 1000, "m0", 1010)
    assert p.deadline_ns == 1100 and a.due(1050, frozenset({0, 1})) == []
    a.add(7, 1, 1000, "m1", 1020)
    assert a.due(1050, frozenset({0, 1})) == [p]  # complete before its deadline
    for frame, view, ts, now, reason in (
        (7, 0, 1000, 1030, "duplicate"),  # still open: already received
        (8, 0, 1000, 1101, "late"),  # past its deadline
        (9, 0, 5000, 1000, "bad_timestamp"),  # > horizon ahead
    ):
        with pytest.raises(RefusedViewError) as e:
            a.add(frame, view, ts, "m", now)
        assert e.value.reason == reason
    a.close(p)
    with pytest.raises(RefusedViewError) as e:
        a.add(7, 1, 1000, "m", 1060)
    assert e.value.reason == "duplicate"  # answered, and view 1 was used
    with pytest.raises(RefusedViewError) as e:
        a.add(7, 2, 1000, "m", 1060)
    assert e.value.reason == "late"  # answered without it
    a.add(10, 0, 1050, "m", 1060)
    a.add(11, 0, 1050, "m", 1060)
    with pytest.raises(RefusedViewError) as e:
        a.add(12, 0, 1050, "m", 1060)
    assert e.value.reason == "overload"
    due = a.due(1150, frozenset({0, 1}))
    assert [f.frame for f in due] == [10, 11]  # at their deadline, in frame order
    for f in due:
        a.close(f)
    # a frame id reused much later (a new replay) is a new frame, not a duplicate
    assert a.add(7, 1, 10_000, "m", 10_010).frame == 7


# ------------------------------------------------------------------ live sets


def _doc(**rows_extra):
    V = 3
    return {"rows_pool_mode": "weighted", "rows": [
        {"dead_mask": 1, "policy": "fitted", "weights": [0.0, 0.25, 0.75],
         "accuracy": {"val": 0.8, "test": 0.7}},
        {"dead_mask": 2, "policy": "renormalize", "weights": [0.5, 0.0, 0.5],
         "accuracy": {"val": 0.6, "test": None}},
    ] + [dict(r) for r in rows_extra.get("more", [])], "views": V}


def test_live_set_pooling_follows_the_plan_rule():
    rule = LiveSetPooling(3, "mean", None, _doc(), full_accuracy=0.9)
    full = rule.for_live(np.ones(3, bool))
    assert (full.source, full.mode, full.in_table, full.predicted_accuracy) == \
        ("head", "mean", True, 0.9)
    fitted = rule.for_dead_mask(1)
    assert fitted.source == "table" and fitted.mode == "weighted"
    np.testing.assert_array_equal(fitted.weights, np.float32([0, 0.25, 0.75]))
    assert fitted.predicted_accuracy == 0.7  # the test split's figure
    plain = rule.for_dead_mask(2)
    assert (plain.source, plain.mode, plain.weights, plain.in_table,
            plain.predicted_accuracy) == ("renormalize", "mean", None, True, 0.6)
    outside = rule.for_dead_mask(3)
    assert not outside.in_table and outside.needs_replan and outside.predicted_accuracy is None
    assert rule.for_dead_mask(1) is fitted  # cached
    none = LiveSetPooling(3, "max", None, None, None).for_dead_mask(4)
    assert none.needs_replan and none.mode == "max"


@pytest.mark.parametrize("row, match", [
    ({"dead_mask": 0}, r"rows\[2\].dead_mask: expected 1..6"),
    ({"dead_mask": 7}, r"rows\[2\].dead_mask"),
    ({"dead_mask": 4, "policy": "fitted", "weights": [1, 1]}, r"rows\[2\].weights"),
    ({"dead_mask": 4, "policy": "fitted", "weights": [1, 1, 1]}, "weight on a dead view"),
])
def test_bad_contingency_rows_are_named(row, match):
    with pytest.raises(PoolingError, match=match):
        LiveSetPooling(3, "mean", None, _doc(more=[row]), None, source="c.json")


# ------------------------------------------------------------------ results database


def test_results_database_round_trip(tmp_path):
    from slimedge.runtime.aggregator import FrameResult
    from slimedge.runtime.results_db import COLUMNS, ResultsDB

    db = ResultsDB(tmp_path / "r.sqlite", {"deployment_id": "d-1", "views": 3})
    r = FrameResult(frame=4, capture_ns=10 * S, deadline_ns=11 * S, answered_ns=10 * S + 5_000_000,
                    cls=2, class_name="cup", confidence=0.5, views=(0, 2), live_set=(0, 1, 2),
                    missing=(1,), dead_mask=2, weights_from="table", in_table=True,
                    predicted_accuracy=0.75, added_ms=0.1, compute_ms=0.05, label=2)
    db.add(r)
    con = sqlite3.connect(tmp_path / "r.sqlite")
    assert con.execute("SELECT COUNT(*) FROM results").fetchone() == (0,)  # not yet flushed
    assert db.flush() == 1
    con.row_factory = sqlite3.Row
    row = con.execute("SELECT * FROM results").fetchone()
    assert list(row.keys()) == [c for c, _ in COLUMNS]
    assert (row["frame"], row["class"], json.loads(row["views"]), json.loads(row["missing"]),
            row["latency_ms"], row["deadline_missed"], row["correct"]) == \
        (4, 2, [0, 2], [1], 5.0, 0, 1)
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    assert json.loads(meta["deployment_id"]) == "d-1"
    db.close()
