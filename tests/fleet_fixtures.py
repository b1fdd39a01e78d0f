"""Pytest fixtures that start a real MQTT broker (imported by conftest.py).

`mqtt_broker`: Mosquitto from PATH when installed, else the embedded amqtt broker (`.kind` says
which); a fresh broker per test on a free 127.0.0.1 port, stopped by its pid afterwards.
`mosquitto_broker`: Mosquitto only (MQTT 5, password files, ACLs); skips where not installed.
"""

from __future__ import annotations

import pytest

from slimedge.fleet.broker import BrokerHandle, mosquitto_path, start_broker


@pytest.fixture
def mqtt_broker(tmp_path) -> BrokerHandle:
    handle = start_broker(workdir=tmp_path / "broker")
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture
def mosquitto_broker(tmp_path) -> BrokerHandle:
    if not mosquitto_path():
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    handle = start_broker(kind="mosquitto", workdir=tmp_path / "broker")
    try:
        yield handle
    finally:
        handle.close()
