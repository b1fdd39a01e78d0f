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


def test_supervisor_names_a_command_that_cannot_start(tmp_path):
    with Supervisor(tmp_path) as sup, pytest.raises(FleetUpError, match="cannot start ghost"):
        sup.start("ghost", [str(tmp_path / "no-such-program")])
