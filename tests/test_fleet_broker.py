"""Starting and stopping a real broker: Mosquitto from PATH or the embedded one."""

from __future__ import annotations

import os

import pytest

from slimedge.fleet.broker import BrokerError, mosquitto_path, start_broker


def test_fixture_broker_accepts_and_stops_by_pid(mqtt_broker):
    assert mqtt_broker.kind == ("mosquitto" if mosquitto_path() else "embedded")
    assert mqtt_broker.url == f"mqtt://127.0.0.1:{mqtt_broker.port}"
    pid = mqtt_broker.pid
    os.kill(pid, 0)  # alive
    mqtt_broker.stop()
    assert not mqtt_broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    mqtt_broker.stop()  # idempotent


@pytest.mark.skipif(not mosquitto_path(), reason="mosquitto not installed")
def test_a_broker_that_cannot_start_says_why(tmp_path):
    with pytest.raises(BrokerError, match=r"(?s)exited with code .*log.*no_such_option"):
        start_broker(kind="mosquitto", workdir=tmp_path, config_extras=["no_such_option 1"])


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(BrokerError, match="kind: expected auto, mosquitto or embedded"):
        start_broker(kind="rabbit")
    with pytest.raises(BrokerError, match="embedded broker takes no Mosquitto config"):
        start_broker(kind="embedded", config_extras=["acl_file x"])


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_a_relative_workdir_starts(tmp_path, monkeypatch, kind):
    """`slimedge demo` with the default `--work ./slimedge-work` gives the broker a relative
    folder; the broker runs inside it, so the config path must not be relative twice."""
    if kind == "mosquitto" and not mosquitto_path():
        pytest.skip("mosquitto not installed")
    monkeypatch.chdir(tmp_path)
    broker = start_broker(kind=kind, workdir="work/broker")
    try:
        assert broker.running and broker.workdir == (tmp_path / "work" / "broker")
    finally:
        broker.stop()
