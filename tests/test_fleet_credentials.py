"""Broker credentials against a real Mosquitto: each device publishes only on its own topics
(MQTT 5: a denied publish gets PUBACK 0x87 and is not delivered), reads only its own update
topic; the aggregator reads features and publishes results; TLS with the generated CA."""

from __future__ import annotations

import json
import stat
import time

import pytest

from slimedge.export.manifest import (
    AggregatorEntry,
    DeploymentManifest,
    DeviceEntry,
    FileEntry,
    Provenance,
)
from slimedge.fleet.broker import mosquitto_path, start_broker
from slimedge.fleet.credentials import (
    CredentialsError,
    FleetCredentials,
    password_hash,
    write_credentials,
)
from slimedge.runtime import topics
from slimedge.runtime.mqtt import MQTT5, BrokerRefusedError, MqttClient

pytestmark = pytest.mark.skipif(not mosquitto_path(), reason="mosquitto not installed")
SHA = "ab" * 32


def _manifest(deploy, devices=("cam00", "cam01")):
    deploy.mkdir(parents=True, exist_ok=True)
    m = DeploymentManifest(
        deployment_id="lab-20260101000000", created="2026-01-01T00:00:00Z",
        provenance=Provenance(ladder_sha256=SHA),
        aggregator=AggregatorEntry(pooling="max", head=(FileEntry("h.bin", SHA, 1),),
                                   host="gw"),
        devices=tuple(DeviceEntry(device=d, board="rpi4b", views=(i,), level=0.0,
                                  level_index=0, format="int8", runtime="litert",
                                  artifact=f"devices/{d}.tflite", sha256=SHA, bytes=1)
                      for i, d in enumerate(devices)),
        signing_key="ed25519:0123456789abcdef")
    (deploy / "manifest.json").write_text(m.to_json())
    return deploy


def _drain(c: MqttClient, timeout: float = 1.0) -> list:
    got, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        m = c.get(0.05)
        if m is not None:
            got.append((m.topic, m.payload))
    return got


def _wait(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return cond()


@pytest.fixture
def secured(tmp_path):
    creds = write_credentials(_manifest(tmp_path / "deploy"), tmp_path / "creds")
    with start_broker(kind="mosquitto", workdir=tmp_path / "b",
                      config_extras=creds.broker_config) as b:
        yield creds, b


def _client(creds, b, user, **kw) -> MqttClient:
    return MqttClient(creds.url(user, b.host, b.port), name=user, protocol=MQTT5, **kw).start()


def test_a_device_publishes_only_on_its_own_topics(secured):
    creds, b = secured
    assert creds.fleet == "lab"
    agg = _client(creds, b, "aggregator", subscriptions=[(topics.features_all("lab"), 1),
                                                          (topics.status_all("lab"), 1)])
    cam00 = _client(creds, b, "cam00")
    assert cam00.publish(topics.features("lab", "cam00"), b"mine", qos=1)
    assert cam00.publish(topics.features("lab", "cam01"), b"forged", qos=1)
    assert cam00.publish(topics.status("lab", "cam01"), b"offline", qos=1)
    assert _wait(lambda: cam00.pending == 0)
    got = _drain(agg)
    assert got == [(topics.features("lab", "cam00"), b"mine")]
    assert cam00.stats()["publish_refused"] == 2  # PUBACK 0x87 Not authorized, twice
    # devices cannot forge results; the aggregator can publish them
    assert cam00.publish(topics.results("lab"), b"{}", qos=1)
    assert agg.publish(topics.results("lab"), b"{}", qos=1)
    assert _wait(lambda: cam00.pending == 0 and agg.pending == 0)
    assert cam00.stats()["publish_refused"] == 3 and agg.stats()["publish_refused"] == 0
    for c in (agg, cam00):
        c.stop()


def test_a_device_reads_only_its_own_update_topic(secured):
    creds, b = secured
    cam00 = _client(creds, b, "cam00", subscriptions=[(topics.update("lab", "cam00"), 1),
                                                      (topics.update("lab", "cam01"), 1),
                                                      (topics.features_all("lab"), 1)])
    cam01 = _client(creds, b, "cam01", subscriptions=[(topics.update("lab", "cam01"), 1)])
    ctl = _client(creds, b, "controller")
    time.sleep(0.2)  # subscriptions settle
    for dev in ("cam00", "cam01"):
        assert ctl.publish(topics.update("lab", dev), dev.encode(), qos=1)
    assert cam01.publish(topics.features("lab", "cam01"), b"f", qos=1)
    assert _wait(lambda: ctl.pending == 0 and cam01.pending == 0)
    assert _drain(cam00) == [(topics.update("lab", "cam00"), b"cam00")]
    assert _drain(cam01) == [(topics.update("lab", "cam01"), b"cam01")]
    assert ctl.stats()["publish_refused"] == 0
    for c in (cam00, cam01, ctl):
        c.stop()


def test_wrong_or_missing_passwords_are_refused(secured):
    creds, b = secured
    bad = creds.url("cam00", b.host, b.port).replace(creds.users["cam00"]["password"], "nope")
    with pytest.raises(BrokerRefusedError, match="refused"):
        MqttClient(bad, name="x").start(wait=5)
    with pytest.raises(BrokerRefusedError, match="refused"):
        MqttClient(b.url, name="anonymous").start(wait=5)


def test_tls_listener_with_the_generated_ca(tmp_path):
    creds = write_credentials(_manifest(tmp_path / "deploy"), tmp_path / "creds", tls=True)
    with start_broker(kind="mosquitto", workdir=tmp_path / "b",
                      config_extras=creds.broker_config) as b:
        url = creds.url("aggregator", b.host, b.port)
        assert url.startswith("mqtts://")
        c = MqttClient(url, name="agg", ca_file=tmp_path / "creds" / "ca.crt").start(wait=5)
        assert c.connected
        c.stop()
        plain = MqttClient(url.replace("mqtts://", "mqtt://"), name="plain",
                           reconnect_delay=(0.05, 0.1))
        with pytest.raises(Exception, match="not connected|refused"):
            plain.start(wait=1.5)
        plain.stop()


def test_files_are_private_and_not_replaced_by_accident(tmp_path):
    deploy = _manifest(tmp_path / "deploy")
    creds = write_credentials(deploy, tmp_path / "creds")
    for name in ("passwd", "acl", "credentials.json", "mosquitto.conf"):
        assert stat.S_IMODE((tmp_path / "creds" / name).stat().st_mode) == 0o600
    assert FleetCredentials.read(tmp_path / "creds") == creds
    doc = json.loads((tmp_path / "creds" / "credentials.json").read_text())
    assert set(doc["users"]) == {"cam00", "cam01", "aggregator", "controller"}
    with pytest.raises(CredentialsError, match="refusing to replace"):
        write_credentials(deploy, tmp_path / "creds")
    assert write_credentials(deploy, tmp_path / "creds", force=True).users != creds.users
    with pytest.raises(CredentialsError, match="'aggregator': cannot be a broker user"):
        write_credentials(_manifest(tmp_path / "d2", ("cam00", "aggregator")), tmp_path / "c2")
    with pytest.raises(CredentialsError, match="cannot read"):
        write_credentials(tmp_path / "nowhere", tmp_path / "c3")


def test_password_hash_is_mosquittos_format():
    h = password_hash("secret", salt=bytes(12))
    assert h.startswith("$7$101$AAAAAAAAAAAAAAAA$") and len(h.split("$")[-1]) == 88
    assert password_hash("secret") != password_hash("secret")  # a fresh salt each time


def test_the_switch_topics_between_controller_and_aggregator(secured):
    """The fleet-wide switch: the controller offers on the aggregator's update topic and reads
    its acks and state; the aggregator reads the order and writes both; a device may not forge
    the aggregator's state."""
    creds, b = secured
    agg = _client(creds, b, "aggregator",
                  subscriptions=[(topics.aggregator_update("lab"), 1)])
    ctl = _client(creds, b, "controller",
                  subscriptions=[(topics.aggregator_state("lab"), 1), (topics.ack_all("lab"), 1)])
    cam00 = _client(creds, b, "cam00")
    time.sleep(0.2)  # subscriptions settle
    assert ctl.publish(topics.aggregator_update("lab"), b"order", qos=1)
    assert _wait(lambda: ctl.pending == 0)
    assert _drain(agg) == [(topics.aggregator_update("lab"), b"order")]
    assert agg.publish(topics.aggregator_ack("lab"), b"ack", qos=1)
    assert agg.publish(topics.aggregator_state("lab"), b"state", qos=1)
    assert cam00.publish(topics.aggregator_state("lab"), b"forged", qos=1)
    assert _wait(lambda: agg.pending == 0 and cam00.pending == 0)
    assert sorted(_drain(ctl)) == [(topics.aggregator_ack("lab"), b"ack"),
                                   (topics.aggregator_state("lab"), b"state")]
    assert agg.stats()["publish_refused"] == 0 and cam00.stats()["publish_refused"] == 1
    for c in (agg, ctl, cam00):
        c.stop()
