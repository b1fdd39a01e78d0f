"""`slimedge fleet up`: the failure schedule parser, process supervision by pid, and real runs
of a tiny deployment (agents and aggregator as processes, a real broker, a SIGKILL)."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from slimedge.fleet.processes import PROCESS_LOG, Supervisor
from slimedge.fleet.schedule import (
    FleetUpError,
    Injection,
    check_story,
    parse_schedule,
    parse_time,
)

DEVICES = ["cam00", "cam01", "cam02"]


# --------------------------------------------------------------------------- schedule


def test_schedule_parses_items_in_time_order():
    got = parse_schedule(" cam02@7.5s, cam01@5s,cam00@250ms,cam01@9 ", "--kill", DEVICES)
    assert got == [Injection("cam00", 0.25), Injection("cam01", 5.0),
                   Injection("cam02", 7.5), Injection("cam01", 9.0)]
    assert parse_schedule(None, "--kill", DEVICES) == []
    assert parse_schedule("  ", "--kill", DEVICES) == []


@pytest.mark.parametrize("text, words", [
    ("cam09@5s", ["--kill", "'cam09@5s'", "no device 'cam09'", "cam00, cam01, cam02"]),
    ("cam1@5s", ["no device 'cam1'", "did you mean"]),
    ("cam01", ["'cam01'", "DEVICE@TIME"]),
    ("cam01@", ["'cam01@'", "DEVICE@TIME"]),
    ("@5s", ["'@5s'", "DEVICE@TIME"]),
    ("cam01@5s,,cam02@6s", ["empty item"]),
    ("cam01@soon", ["'cam01@soon'", "'soon' is not a time"]),
    ("cam01@5h", ["'cam01@5h'", "'h' is not a unit of time"]),
    ("cam01@-2s", ["-2s", "not a time"]),
    ("cam01@5s,cam01@5000ms", ["cam01 is listed twice at 5 s"]),
])
def test_schedule_errors_name_the_item(text, words):
    with pytest.raises(FleetUpError) as err:
        parse_schedule(text, "--kill", DEVICES)
    for w in words:
        assert w in str(err.value)


def test_parse_time_units():
    assert parse_time("1.5s", "x") == 1.5
    assert parse_time("20", "x") == 20.0
    assert parse_time("500ms", "x") == pytest.approx(0.5)
    with pytest.raises(FleetUpError, match="--broker-down"):
        parse_time("fast", "--broker-down")


def test_story_refuses_impossible_kill_and_restart_orders():
    kill = [Injection("cam01", 5.0)]
    check_story(kill, [Injection("cam01", 8.0)])  # kill then restart: fine
    check_story([*kill, Injection("cam01", 9.0)], [Injection("cam01", 8.0)])  # and again
    with pytest.raises(FleetUpError, match=r"--restart: cam01@4s: the device is running"):
        check_story(kill, [Injection("cam01", 4.0)])
    with pytest.raises(FleetUpError, match=r"--restart: cam02@8s"):
        check_story(kill, [Injection("cam02", 8.0)])
    with pytest.raises(FleetUpError, match=r"--kill: cam01@6s: the device is already dead"):
        check_story([*kill, Injection("cam01", 6.0)], [])


# --------------------------------------------------------------------------- supervision


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / PROCESS_LOG).read_text().splitlines()]


def _sleeper(seconds: float = 60) -> list[str]:
    return [sys.executable, "-c",
            f"import time; print('up', flush=True); time.sleep({seconds})"]


def test_supervisor_kills_and_stops_by_pid_and_logs_each_process(tmp_path):
    with Supervisor(tmp_path) as sup:
        a = sup.start("a", _sleeper())
        b = sup.start("b", [sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"])
        with pytest.raises(FleetUpError, match="still running"):
            sup.start("a", _sleeper())
        sup.kill("a")
        assert a.popen.returncode == -9
        b.popen.wait(10)
        assert [c.name for c in sup.exited()] == ["b"]
        assert sup.exited() == []  # reported once
        a2 = sup.start("a", _sleeper())  # a restart: a new process, the same log
        assert a2.pid != a.pid
        time.sleep(0.3)
    assert a2.popen.returncode == -15  # stopped by SIGTERM on close
    events = [(r["event"], r["name"]) for r in _rows(tmp_path)]
    assert events == [("start", "a"), ("start", "b"), ("kill", "a"), ("exit", "b"),
                      ("start", "a"), ("stop", "a")]
    log_a = (tmp_path / "logs" / "a.log").read_text()
    assert log_a.count("--- start") == 2 and "up" in log_a
    assert "bye" in (tmp_path / "logs" / "b.log").read_text()


def test_supervisor_forces_a_child_that_ignores_sigterm(tmp_path):
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    with Supervisor(tmp_path) as sup:
        child = sup.start("stubborn", [sys.executable, "-c", code])
        deadline = time.monotonic() + 20
        while "\nready" not in (tmp_path / "logs" / "stubborn.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert sup.stop("stubborn", grace_s=0.5) == -9
    assert _rows(tmp_path)[-1]["event"] == "stop-forced"
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)


def test_supervisor_stops_a_hung_child(tmp_path):
    with Supervisor(tmp_path) as sup:
        child = sup.start("frozen", _sleeper())
        sup.hang("frozen")
        assert child.running()
        assert sup.stop("frozen", grace_s=5) == -15  # SIGTERM reaches it once continued
    assert [r["event"] for r in _rows(tmp_path)] == ["start", "hang", "stop"]


def test_supervisor_names_a_command_that_cannot_start(tmp_path):
    with Supervisor(tmp_path) as sup, pytest.raises(FleetUpError, match="cannot start ghost"):
        sup.start("ghost", [str(tmp_path / "no-such-program")])


# --------------------------------------------------------------------------- a tiny deployment

TRIO = ("{id: pi0, board: rpi4b, views: [0, 1, 2, 3]}",
        "{id: pi1, board: rpi4b, views: [4, 5, 6, 7]}",
        "{id: pi2, board: rpi5, views: [8, 9, 10, 11]}")


@pytest.fixture(scope="module")
def trio(tiny_ladder, tmp_path_factory):
    """Three int8 Linux boards, four views each, exported from the tiny ladder: a work folder
    <root>/{deploy,keys} beside which the ladder and dataset are passed explicitly."""
    from slimedge.export.deploy import export_deployment

    root = tmp_path_factory.mktemp("fleet")
    fleet = root / "trio.yaml"
    fleet.write_text("name: trio\nviews: 12\naggregator: {host: gateway}\ndevices:\n"
                     + "".join(f"  - {d}\n" for d in TRIO))
    export_deployment(fleet, tiny_ladder.ladder, [0] * 4 + [1] * 4 + [2] * 4, root / "deploy",
                      dataset=tiny_ladder.root / "dataset", progress=False, min_agreement=0.5)
    return root


def _up_args(trio, tiny_ladder, **over):
    import argparse

    from slimedge.fleet.up import add_up_options

    p = argparse.ArgumentParser()
    add_up_options(p)
    p.add_argument("--json", action="store_true")
    argv = ["--deploy", str(trio / "deploy"), "--dataset", str(tiny_ladder.root / "dataset"),
            "--ladder", str(tiny_ladder.ladder), "--json"]
    for key, value in over.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return p.parse_args(argv)


def test_prepare_refuses_bad_runs_before_anything_starts(trio, tiny_ladder, tmp_path):
    from slimedge.fleet.up import prepare

    p = prepare(_up_args(trio, tiny_ladder, run_dir=tmp_path / "run", kill="pi1@0.5s"))
    assert p.frames == len(tiny_ladder.dataset.indices("test")) and p.fps == 10
    assert p.reference.source == "ladder" and p.kills == [Injection("pi1", 0.5)]
    n = p.frames
    cases = [
        ({"kill": "pi7@1s"}, "--kill: item 'pi7@1s': no device 'pi7'"),
        ({"kill": "pi1@900s"}, "--kill: pi1@900s is after the last frame"),
        ({"frames": n + 1}, f"--frames: {n + 1} is outside 1..{n}"),
        ({"fps": 0}, "--fps: must be > 0"),
        ({"restart": "pi1@1s"}, "--restart: pi1@1s: the device is running then"),
        ({"restart_broker": "1s", "broker": "mqtt://127.0.0.1:1"},
         "--restart-broker: only a broker started by fleet up"),
        ({"public_key": tmp_path / "none.pem"}, "none.pem: no public key"),
        ({"broker": "http://127.0.0.1:1883"}, "--broker: broker URL 'http://127.0.0.1:1883'"),
        ({"heartbeat": -1}, "--heartbeat: must be > 0"),
        ({"dataset": tmp_path}, "not a slimedge dataset"),
    ]
    for over, message in cases:
        with pytest.raises(FleetUpError) as err:
            prepare(_up_args(trio, tiny_ladder, run_dir=tmp_path / "run", **over))
        assert message in str(err.value), (over, str(err.value))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(FleetUpError, match="run folder exists and is not empty"):
        prepare(_up_args(trio, tiny_ladder, run_dir=tmp_path / "used"))


def test_reference_from_artifacts_equals_the_ladder_evaluator(trio, tiny_ladder):
    """Without the ladder the evaluator runs on the deployment's own artifacts' features; on
    every live set tried the two give the same class for every frame."""
    import numpy as np

    from slimedge.fleet.reference import (
        find_ladder,
        load_deployment,
        make_reference,
    )

    dep = load_deployment(trio / "deploy", trio / "keys" / "public_key.pem")
    dataset = tiny_ladder.root / "dataset"
    ladder, note = find_ladder(dep, tiny_ladder.ladder)
    assert ladder == tiny_ladder.ladder and "hash matches" in note
    missing, why = find_ladder(dep, None)
    assert missing is None and "no ladder at" in why
    by_ladder = make_reference(dep, ladder, note, dataset)
    by_artifacts = make_reference(dep, None, why, dataset)
    assert by_artifacts.source == "artifacts" and "artifacts' features" in by_artifacts.note
    n = len(by_ladder.labels)
    frames = np.arange(n)
    for dead in ([], [0, 1, 2, 3], [5], [0, 4, 8, 9, 10, 11]):
        live = np.ones((n, 12), bool)
        live[:, dead] = False
        a = by_ladder.predictions(dep, frames, live)
        assert np.array_equal(a, by_artifacts.predictions(dep, frames, live)), dead
        assert (a >= 0).all()
    live = np.zeros((n, 12), bool)
    assert (by_ladder.predictions(dep, frames, live) == -1).all()


# --------------------------------------------------------------------------- real runs

SUMMARY_KEYS = ("frames", "answered", "on_time", "lost", "accuracy", "evaluator_accuracy",
                "mismatches", "detections", "rejected", "broker", "run_dir")


def test_fleet_up_with_one_kill(trio, tiny_ladder, tmp_path):
    """Three agent processes and the aggregator over a real broker; pi1 is SIGKILLed after the
    first frames: its death is detected, the rest of the frames are answered from the
    survivors, and every answer equals the evaluator's on the same live set."""
    from slimedge.fleet.broker import mosquitto_path
    from slimedge.fleet.up import fleet_up, up_options

    run = tmp_path / "run"
    s = fleet_up(up_options(trio / "deploy", dataset=tiny_ladder.root / "dataset",
                            ladder=tiny_ladder.ladder, fps=4.0, heartbeat=0.2,
                            kill="pi1@0.6s", run_dir=run, emulate_latency=True))
    assert json.loads(json.dumps(s)) == s  # what --json prints
    for key in SUMMARY_KEYS:
        assert key in s, key
    n = len(tiny_ladder.dataset.indices("test"))
    assert s["frames"] == n and s["run_dir"] == str(run)
    assert s["broker"] == ("mosquitto" if mosquitto_path() else "embedded")
    assert s["answered"] + s["lost"] == n and s["answered"] > 0
    assert s["mismatches"] == 0 and s["mismatched_frames"] == []
    assert s["accuracy"] == s["evaluator_accuracy"]
    check = s["artifacts_check"]
    assert check["mismatches"] == 0 and check["float_feature_devices"] == []
    (det,) = s["detections"]
    assert det["device"] == "pi1" and det["views"] == [4, 5, 6, 7]
    assert det["detected_s"] is not None and det["detected_s"] >= det["killed_s"]
    assert det["heartbeat_periods"] == pytest.approx(
        (det["detected_s"] - det["killed_s"]) / 0.2, abs=0.05)
    # Frames after the kill are pooled without pi1's views.
    assert det["switch_frame"] is not None
    last = s["phases"][-1]
    assert not set(last["live_views"]) & {4, 5, 6, 7} and last["live_views"]
    for name in ("results.sqlite", "metrics.json", "events.jsonl", "summary.json",
                 "timeline.png", "run.json", "processes.jsonl", "injections.jsonl"):
        assert (run / name).is_file(), name
    for name in ("aggregator", "pi0", "pi1", "pi2"):
        assert (run / "logs" / f"{name}.log").is_file(), name
    # Every process was stopped: the killed one by SIGKILL, the rest by stop or their own exit.
    rows = [json.loads(x) for x in (run / "processes.jsonl").read_text().splitlines()]
    for r in rows:
        if r["event"] == "start":
            with pytest.raises(ProcessLookupError):
                os.kill(r["pid"], 0)
    assert ("kill", "pi1") in [(r["event"], r["name"]) for r in rows]
    assert json.loads((run / "summary.json").read_text())["frames"] == n
    # The run folder alone is enough to summarise the run again, to the same figures.
    from slimedge.fleet.up import summarise_again

    again = summarise_again(run)
    assert {k: again[k] for k in SUMMARY_KEYS} == {k: s[k] for k in SUMMARY_KEYS}
    # The demo's report section reads the folder: the kill, its detection, the timeline.
    from slimedge.fleet.demo_run import TIMELINE_PNG, report_lines

    (tmp_path / "report").mkdir()
    text = "\n".join(report_lines(run, tmp_path / "report"))
    assert "SIGKILL of pi1 (view(s) 4, 5, 6, 7)" in text and f"{n} test frames" in text
    assert (tmp_path / "report" / TIMELINE_PNG).stat().st_size > 0
    # --emulate-latency: each agent holds a frame's features for its board's predicted time,
    # so no frame is answered sooner than the slowest of the devices it pooled.
    import sqlite3

    manifest = json.loads((trio / "deploy" / "manifest.json").read_text())
    predicted = {v: d["predicted_latency_ms"] for d in manifest["devices"] for v in d["views"]}
    with sqlite3.connect(run / "results.sqlite") as con:
        rows = con.execute("SELECT views, latency_ms FROM results").fetchall()
    assert rows
    for views, latency in rows:
        assert latency >= max(predicted[v] for v in json.loads(views))


@pytest.mark.slow
def test_restarted_agent_rejoins_and_is_used_again(trio, tiny_ladder, tmp_path):
    from slimedge.fleet.up import fleet_up, up_options

    s = fleet_up(up_options(trio / "deploy", dataset=tiny_ladder.root / "dataset",
                            ladder=tiny_ladder.ladder, fps=1.5, heartbeat=0.2,
                            kill="pi2@0.4s", restart="pi2@1s", run_dir=tmp_path / "run"))
    (det,) = s["detections"]
    assert det["detected_s"] is not None
    (back,) = s["rejoins"]
    assert back["device"] == "pi2" and back["alive_s"] is not None
    assert back["alive_s"] >= back["restarted_s"]
    assert back["used_again_frame"] is not None and back["frames_using_it_after"] >= 1
    assert s["phases"][-1]["live_views"] == list(range(12))
    assert s["mismatches"] == 0


@pytest.mark.slow
def test_broker_restart_every_client_reconnects(trio, tiny_ladder, tmp_path):
    from slimedge.fleet.up import fleet_up, up_options

    s = fleet_up(up_options(trio / "deploy", dataset=tiny_ladder.root / "dataset",
                            ladder=tiny_ladder.ladder, fps=1.5, heartbeat=0.2,
                            restart_broker="1s", broker_down="0.3s",
                            run_dir=tmp_path / "run"))
    (b,) = s["broker_restarts"]
    assert b["online_again"] == ["pi0", "pi1", "pi2"]
    assert b["recovered_frame"] is not None
    assert b["after_recovery"]["lost"] == 0
    assert s["lost"] == b["outage"]["lost"]  # every lost frame is one of the outage's
    assert s["mismatches"] == 0


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupted_run_stops_every_process(trio, tiny_ladder, tmp_path, sig):
    """Ctrl-C (or SIGTERM) while the fleet starts: fleet up exits 130 and every process it
    started (broker included) is gone."""
    import signal
    import subprocess

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "slimedge.cli", "fleet", "up", "--deploy", str(trio / "deploy"),
         "--dataset", str(tiny_ladder.root / "dataset"), "--ladder", str(tiny_ladder.ladder),
         "--run-dir", str(run), "--startup-s", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job ignores SIGINT and its children inherit that (Python then
        # installs no Ctrl-C handler): give the child SIGINT's default whatever ran pytest.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(_starts(run)) < 4:  # the aggregator and three agents
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    broker = json.loads((run / "run.json").read_text())["broker"]
    assert broker["kind"] in ("mosquitto", "embedded")
    for pid in [*_starts(run), broker["pid"]]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _starts(run) -> list[int]:
    path = run / PROCESS_LOG
    if not path.is_file():
        return []
    return [json.loads(x)["pid"] for x in path.read_text().splitlines()
            if x.strip() and json.loads(x)["event"] == "start"]


def test_fleet_up_over_the_embedded_broker(trio, tiny_ladder, tmp_path):
    """Where Mosquitto is not installed the embedded amqtt broker serves the same fleet (here
    asked for by name): the same answers, the summary says which broker ran."""
    from slimedge.fleet.up import fleet_up, up_options

    s = fleet_up(up_options(trio / "deploy", dataset=tiny_ladder.root / "dataset",
                            ladder=tiny_ladder.ladder, fps=8.0, broker_kind="embedded",
                            run_dir=tmp_path / "run"))
    assert s["broker"] == "embedded" and s["broker_url"].startswith("mqtt://127.0.0.1:")
    assert s["answered"] + s["lost"] == s["frames"] and s["answered"] > 0
    assert s["mismatches"] == 0 and s["detections"] == []


def test_demo_kills_the_device_of_the_most_important_view(trio, tmp_path):
    from slimedge.fleet.demo_run import victim

    importance = tmp_path / "importance.json"
    importance.write_text(json.dumps({"leave_one_out": [0.0] * 9 + [0.2, 0.0, 0.1]}))
    assert victim(trio / "deploy", importance) == "pi2"  # view 9
    importance.write_text(json.dumps({"leave_one_out": [0.0, 0.3] + [0.0] * 10}))
    assert victim(trio / "deploy", importance) == "pi0"
    assert victim(trio / "deploy", None) == "pi0"  # without importance: the first device
