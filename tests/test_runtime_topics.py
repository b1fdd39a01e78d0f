"""Topic names: built in one place, parsed back, foreign or unsafe names refused."""

from __future__ import annotations

import pytest

from slimedge.runtime import topics
from slimedge.runtime.topics import TopicError


def test_device_topics_round_trip():
    for kind in topics.DEVICE_KINDS:
        t = getattr(topics, kind)("mixed12", "cam03")
        assert t == f"slimedge/mixed12/cam03/{kind}"
        assert topics.device_of(t) == ("mixed12", "cam03", kind)
    assert topics.results("mixed12") == "slimedge/mixed12/results"
    assert topics.features_all("f") == "slimedge/f/+/features"
    assert topics.heartbeat_all("f") == "slimedge/f/+/heartbeat"
    assert topics.status_all("f") == "slimedge/f/+/status"


@pytest.mark.parametrize("name", ["", "a/b", "cam+", "#", "x\0y", 3, None, "é" * 200])
def test_names_that_are_not_one_level_are_refused(name):
    with pytest.raises(TopicError, match="device"):
        topics.features("fleet", name)
    with pytest.raises(TopicError, match="fleet"):
        topics.results(name)


@pytest.mark.parametrize("topic, match", [
    ("slimedge/f/results", "not a device topic"),
    ("other/f/cam/features", "not a device topic"),
    ("slimedge/f/cam/features/x", "not a device topic"),
    ("slimedge/f/cam/photos", "unknown kind 'photos'"),
    ("slimedge//cam/features", "fleet"),
    ("slimedge/f/+/features", "device"),
    (b"slimedge/f/cam/features", "expected a string"),
])
def test_foreign_topics_are_refused(topic, match):
    with pytest.raises(TopicError, match=match):
        topics.device_of(topic)


def test_fleet_name_drops_the_export_stamp():
    assert topics.fleet_name("mixed12-20250101120000", "2025-01-01T12:00:00Z") == "mixed12"
    assert topics.fleet_name("lab-7", "2025-01-01T12:00:00Z") == "lab-7"
    assert topics.fleet_name("20250101120000", "2025-01-01T12:00:00Z") == "20250101120000"
    with pytest.raises(TopicError, match="fleet"):
        topics.fleet_name("a/b", "2025-01-01T12:00:00Z")
