"""`slimedge aggregator run` as a real process against a real broker (Mosquitto when installed):
a test publisher sends heartbeats and valid version 2 feature messages of the tiny deployment;
one device dies (its Will text) and comes back (a new boot). Checked: every frame answered on
time, each answer equal to the evaluator's for that frame and live set, on the results topic
and in results.sqlite alike; the death and the return in events.jsonl; /status, /metrics while
it runs; metrics.json after it exits on its own at the end of the replay; SIGTERM stops it
cleanly."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from aggregator_support import load_fleet

from slimedge.fleet.broker import free_port
from slimedge.runtime import topics
from slimedge.runtime.mqtt import MqttClient

ROOT = Path(__file__).resolve().parents[1]
FPS = 5.0  # cam03 stays dead 8 frames: 1.6 s, several status snapshots (every 0.5 s)
LEAD_S = 20.0  # process start (imports, LiteRT, broker connect) before frame 0 on a busy host
SLACK_MS = "2000"  # deadlines generous enough for a 2-core host shared with other work


@pytest.fixture(scope="module")
def fleet(tiny_deployment):
    return load_fleet(tiny_deployment)


def _aggregator(tiny_deployment, broker_url, run_dir, port, *extra):
    cmd = [sys.executable, "-m", "slimedge.cli", "aggregator", "run",
           "--deploy", str(tiny_deployment.deploy), "--broker", broker_url,
           "--public-key", str(tiny_deployment.public_key),
           "--run-dir", str(run_dir), "--http", f"127.0.0.1:{port}",
           "--dataset", str(tiny_deployment.dataset), "--heartbeat", "2",
           "--slack-ms", SLACK_MS, "--json", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def _wait_serving(proc, port: int, deadline: float) -> dict:
    """/status once the aggregator is connected to the broker."""
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"aggregator exited early: {proc.communicate()}")
        try:
            s = json.loads(_get(f"http://127.0.0.1:{port}/status"))
            if s and s["mqtt"]["connects"] >= 1:
                return s
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("aggregator not serving in time")


def _sleep_until(t_ns: int) -> None:
    time.sleep(max(0.0, (t_ns - time.time_ns()) / 1e9))


def test_aggregator_process_over_mqtt(fleet, tiny_deployment, mqtt_broker, tmp_path):
    n = 3 * fleet.n_frames  # three rounds of the test split
    port = free_port()
    start = time.time_ns() + int(LEAD_S * 1e9)
    proc = _aggregator(tiny_deployment, mqtt_broker.url, tmp_path / "run", port,
                       "--frames", str(n), "--fps", str(FPS), "--start-at", str(start))
    pub = MqttClient(mqtt_broker.url, name="test-publisher",
                     subscriptions=[(topics.results(fleet.dep.fleet), 0)]).start()
    try:
        _wait_serving(proc, port, start / 1e9 - 0.5)
        gone, back = fleet.n_frames, 2 * fleet.n_frames  # cam03 dies, then restarts
        live_of = {}
        seen: dict[str, str] = {}

        def watch() -> None:  # the HTTP endpoints while cam03 is dead (snapshots lag 0.5 s)
            for _ in range(40):
                text = _get(f"http://127.0.0.1:{port}/metrics").decode()
                if 'device_state{device="cam03",state="dead"} 1.0' in text:
                    seen["metrics"] = text
                    seen["status"] = _get(f"http://127.0.0.1:{port}/status").decode()
                    return
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        for frame in range(n):
            capture = start + int(frame / FPS * 1e9)
            _sleep_until(capture)
            if frame == gone:
                pub.publish(topics.status(fleet.dep.fleet, "cam03"), "offline", qos=1)
            for v in range(12):
                device = f"cam{v:02d}"
                if v == 3 and gone <= frame < back:
                    continue
                boot = 2 if (v == 3 and frame >= back) else 1
                pub.publish(fleet.topic(v, "heartbeat"),
                            fleet.heartbeat(device, frame, boot=boot, period_s=2.0))
            live = np.ones(12, bool)
            if gone <= frame < back:
                live[3] = False
            live_of[frame] = live
            for v in np.flatnonzero(live):
                pub.publish(fleet.topic(int(v)), fleet.payload(frame, int(v), capture))
            if frame == gone:
                watcher.start()
        watcher.join()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        published = []
        while (m := pub.get(timeout=0.5)) is not None:
            published.append(json.loads(m.payload))
    finally:
        pub.stop()
        if proc.poll() is None:
            proc.kill()

    # While running: the Prometheus text and the status JSON showed cam03 dead
    assert "metrics" in seen, "cam03 never showed as dead on /metrics"
    assert "slimedge_aggregator_frames_answered_total" in seen["metrics"]
    status = json.loads(seen["status"])
    assert status["fleet"] == "tiny12" and status["frames_answered"] >= gone
    assert 3 not in status["live_set"]

    run = tmp_path / "run"
    con = sqlite3.connect(run / "results.sqlite")
    con.row_factory = sqlite3.Row
    rows = {r["frame"]: r for r in con.execute("SELECT * FROM results")}
    assert sorted(rows) == list(range(n)), err  # every frame answered once
    for frame, r in rows.items():
        live = live_of[frame]
        assert json.loads(r["views"]) == np.flatnonzero(live).tolist()
        assert r["class"] == fleet.expected(frame, live)[0], frame
        assert r["deadline_missed"] == 0 and json.loads(r["missing"]) == [], (dict(r), err)
    assert {m["frame"]: m["class"] for m in published} == \
        {f: r["class"] for f, r in rows.items()}

    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    states = [(e["device"], e["state"]) for e in events if e["event"] == "state"]
    assert ("cam03", "dead") in states
    assert states.index(("cam03", "dead")) < len(states) - 1
    assert ("cam03", "alive") in states[states.index(("cam03", "dead")):]
    switches = [e for e in events if e["event"] == "contingency_switch"]
    assert [s["dead_mask"] for s in switches] == [0, 8, 0]
    assert events[0]["event"] == "started" and events[-1]["event"] == "stopped"

    final = json.loads((run / "metrics.json").read_text())
    assert final == json.loads(out)  # --json prints what metrics.json holds
    assert final["frames_answered"] == n and final["frames_lost"] == 0
    assert final["rejected_total"] == 0 and final["deadline_missed"] == 0
    labelled = [f for f in range(fleet.n_frames)]
    acc = np.mean([rows[f]["class"] == fleet.ev.labels[f] for f in labelled])
    assert final["labelled"] == fleet.n_frames and final["accuracy"] == pytest.approx(acc)


def test_sigterm_stops_it_cleanly(tiny_deployment, mqtt_broker, tmp_path):
    port = free_port()
    proc = _aggregator(tiny_deployment, mqtt_broker.url, tmp_path / "run", port)
    try:
        _wait_serving(proc, port, time.time() + 60)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    events = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1]) | {"t_ns": 0, "t": 0} == \
        {"t_ns": 0, "t": 0, "event": "stopped", "reason": "signal"}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["frames_answered"] == 0


def test_bad_options_are_named_errors(tiny_deployment, tmp_path, capsys):
    import socket

    from slimedge.cli import main

    base = ["aggregator", "run", "--deploy", str(tiny_deployment.deploy), "--broker",
            "mqtt://127.0.0.1:1", "--run-dir", str(tmp_path / "run"), "--public-key",
            str(tiny_deployment.public_key)]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for extra, match in (
            (["--http", "localhost"], "--http 'localhost': expected HOST:PORT"),
            (["--frames", "10"], "--frames needs --fps and --start-at"),
            (["--http", f"127.0.0.1:{port}"], f"--http 127.0.0.1:{port}: cannot listen"),
        ):
            assert main(base + extra) == 2
            assert match in capsys.readouterr().err
    assert main(["aggregator", "run", "--deploy", str(tmp_path / "none"), "--broker",
                 "mqtt://127.0.0.1:1", "--public-key", str(tiny_deployment.public_key)]) == 2
    assert "deployment does not verify" in capsys.readouterr().err
    # The agent's rule: no key given out of band is refused, naming the option (the
    # deployment's own public_key.pem proves integrity only) ...
    assert main(base[:-2]) == 2
    err = capsys.readouterr().err
    assert "no provisioned public key: pass --public-key PEM" in err
    # ... and so is a key that is not the one the manifest names as its signer.
    from slimedge.export.signing import generate_keys

    _, other = generate_keys(tmp_path / "other")
    assert main(base[:-1] + [str(other)]) == 2
    err = capsys.readouterr().err
    assert "deployment does not verify" in err and "signing key" in err
    assert not (tmp_path / "run" / "results.sqlite").exists()
