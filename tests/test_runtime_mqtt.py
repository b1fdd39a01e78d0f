"""The MQTT link against a real broker: ordering of state and birth, refused CONNACK, counted
drops, bounded inbound queue, callbacks that fail without killing the link, reconnection."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from slimedge.fleet.broker import start_broker
from slimedge.runtime.mqtt import (
    BrokerRefusedError,
    BrokerUrl,
    Message,
    MqttClient,
    MqttError,
    parse_broker_url,
)


def _drain(client: MqttClient, n: int, timeout: float = 5.0) -> list:
    got, end = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        m = client.get(0.05)
        if m is not None:
            got.append(m)
    return got


def _wait(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.mark.parametrize("url, want", [
    ("mqtt://127.0.0.1:1884", BrokerUrl("127.0.0.1", 1884)),
    ("mqtt://broker", BrokerUrl("broker", 1883)),
    ("mqtts://broker", BrokerUrl("broker", 8883, tls=True)),
    ("mqtt://cam%2F01:p%40ss@h:1", BrokerUrl("h", 1, False, "cam/01", "p@ss")),
    ("mqtt://user@h:2", BrokerUrl("h", 2, False, "user", None)),
])
def test_broker_urls_parse(url, want):
    assert parse_broker_url(url) == want
    assert "p@ss" not in str(parse_broker_url(url))  # never printed


@pytest.mark.parametrize("url, match", [
    ("127.0.0.1:1883", "expected mqtt://"),
    ("http://h:1", "scheme must be mqtt or mqtts"),
    ("mqtt://:1883", "no host"),
    ("mqtt://h:99999", "port"),
    ("mqtt://h:1/topic", "no path"),
    ("mqtt://:pw@h:1", "password needs a user"),
])
def test_bad_broker_urls_are_refused(url, match):
    with pytest.raises(MqttError, match=match):
        parse_broker_url(url)


def test_client_ids_are_unique():
    a = MqttClient("mqtt://127.0.0.1:1", name="cam01")
    b = MqttClient("mqtt://127.0.0.1:1", name="cam01")
    assert a.client_id != b.client_id and a.client_id.startswith("cam01-")


def test_birth_follows_retained_state_and_both_renew_after_a_broker_restart(mqtt_broker):
    seen = MqttClient(mqtt_broker.url, name="watch", subscriptions=[("t/#", 1)]).start()
    dev = MqttClient(
        mqtt_broker.url, name="dev",
        will=Message("t/status", "offline", 1, True),
        birth=Message("t/status", "online", 1, True),
        retained_state=lambda: [Message("t/state", "seq=7", 1, True)],
        subscriptions=[("t/update", 1)],
    ).start()
    try:
        got = [(m.topic, m.payload) for m in _drain(seen, 2)]
        assert got == [("t/state", b"seq=7"), ("t/status", b"online")]
        mqtt_broker.restart(down_s=0.3)
        assert dev.wait_connected(15) and seen.wait_connected(15)
        # Mosquitto sends the Wills of connected clients as it shuts down: "offline" first
        got = [(m.topic, m.payload) for m in _drain(seen, 3, timeout=3)]
        assert [g for g in got if g[1] != b"offline"] == [("t/state", b"seq=7"),
                                                         ("t/status", b"online")]
        # the device's subscription was renewed on the new broker
        assert _wait(lambda: seen.publish("t/update", b"u1", qos=1))
        [m] = _drain(dev, 1)
        assert (m.topic, m.payload) == ("t/update", b"u1")
        assert dev.stats()["connects"] == 2 and dev.stats()["disconnects"] == 1
    finally:
        dev.stop([Message("t/status", "stopped", 1, True)])
        seen.stop()


def test_clean_stop_publishes_final_words_and_no_will(mqtt_broker):
    watch = MqttClient(mqtt_broker.url, name="watch", subscriptions=[("s", 1)]).start()
    dev = MqttClient(mqtt_broker.url, name="dev", will=Message("s", "offline", 1, True),
                     birth=Message("s", "online", 1, True)).start()
    dev.stop([Message("s", "stopped", 1, True)])
    got = [m.payload for m in _drain(watch, 3, timeout=1.5)]
    watch.stop()
    assert got == [b"online", b"stopped"]


def test_publishes_while_disconnected_are_dropped_and_counted(mqtt_broker):
    c = MqttClient(mqtt_broker.url, name="c", max_queued=3)
    assert c.publish("x", b"1") is False  # never connected yet
    c.start()
    mqtt_broker.stop()
    assert _wait(lambda: not c.connected)
    assert c.publish("x", b"2") is False
    # QoS 1 queues inside paho up to max_queued, then drops
    accepted = [c.publish("x", b"q", qos=1) for _ in range(5)]
    c.stop(timeout=0.2)
    s = c.stats()
    assert accepted == [True, True, True, False, False]
    assert s["dropped_disconnected"] == 2 and s["dropped_queue_full"] == 2


def test_inbound_queue_keeps_the_newest_and_counts_the_rest(mqtt_broker):
    sub = MqttClient(mqtt_broker.url, name="sub", subscriptions=[("n", 1)],
                     inbound_max=5).start()
    pub = MqttClient(mqtt_broker.url, name="pub").start()
    for i in range(20):
        pub.publish("n", str(i), qos=1)
    assert _wait(lambda: sub.stats()["received"] == 20)
    got = [m.payload for m in _drain(sub, 5)]
    assert got == [b"15", b"16", b"17", b"18", b"19"]
    assert sub.stats()["inbound_dropped"] == 15
    # The subscriber can have all 20 before the publisher has read every PUBACK.
    assert _wait(lambda: pub.pending == 0 and pub.stats()["published"] == 20)
    pub.stop()
    sub.stop()


def test_an_exception_in_a_callback_is_counted_and_the_link_lives_on(mqtt_broker):
    calls = []

    def broken_state():
        calls.append(1)
        raise RuntimeError("state store unavailable")

    c = MqttClient(mqtt_broker.url, name="c", retained_state=broken_state,
                   subscriptions=[("echo", 0)])
    c.start(wait=None)
    assert _wait(lambda: c.stats()["callback_errors"] == 1)
    assert not c.connected  # the failed on_connect did not claim a connection
    # paho's thread is alive: messages still arrive on the subscription made before the error
    other = MqttClient(mqtt_broker.url, name="o").start()
    assert _wait(lambda: other.publish("echo", b"hi") and c.stats()["received"] > 0)
    other.stop()
    c.stop()


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto not installed")
def test_refused_connack_stops_instead_of_retrying(tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "dev", "right"], check=True)
    with start_broker(kind="mosquitto", workdir=tmp_path / "b",
                      config_extras=[f"password_file {pw}", "allow_anonymous false"]) as b:
        url = b.url.replace("mqtt://", "mqtt://dev:wrong@")
        c = MqttClient(url, name="dev", reconnect_delay=(0.05, 0.05))
        t0 = time.monotonic()
        with pytest.raises(BrokerRefusedError, match=r"dev:\*\*\*@.*refused the connection.*Not authorized"):
            c.start(wait=5)
        assert time.monotonic() - t0 < 4
        time.sleep(0.5)  # had it kept retrying, many attempts would be made in this time
        assert c.stats()["refusals"] == 1 and c.stats()["connects"] == 0
        c.stop()
        ok = MqttClient(b.url.replace("mqtt://", "mqtt://dev:right@"), name="dev").start()
        assert ok.connected
        ok.stop()


def test_embedded_broker_serves_the_same_client(tmp_path):
    with start_broker(kind="embedded", workdir=tmp_path / "b") as b:
        assert b.kind == "embedded" and b.running
        sub = MqttClient(b.url, name="s", subscriptions=[("e", 1)]).start()
        pub = MqttClient(b.url, name="p").start()
        assert _wait(lambda: pub.publish("e", b"x", qos=1) and sub.stats()["received"] > 0)
        pub.stop()
        sub.stop()
        pid = b.pid
    assert not b.running and pid is not None
