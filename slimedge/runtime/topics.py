"""MQTT topic names of a running fleet: the only place topic strings are built or parsed.

    slimedge/<fleet>/<device>/features    SEFM feature messages, one per frame
    slimedge/<fleet>/<device>/heartbeat   JSON heartbeats
    slimedge/<fleet>/<device>/status      retained "online" | "offline" (Will) | "stopped"
    slimedge/<fleet>/<device>/update      signed updates pushed to the device
    slimedge/<fleet>/<device>/ack         the device's answer to an update
    slimedge/<fleet>/results              the aggregator's per-frame results
    slimedge/<fleet>/aggregator/update    a fleet-wide switch order for the aggregator
    slimedge/<fleet>/aggregator/ack       the aggregator's answer to it
    slimedge/<fleet>/aggregator/state     retained: what the aggregator serves, its last frame

<fleet> is the deployment manifest's fleet name, <device> a device id. Both must be one
non-empty topic level: no '/', no MQTT wildcards ('+', '#'), no NUL. The aggregator's topics
use the level `aggregator` where a device id would be, so no device may be called that.
"""

from __future__ import annotations

from slimedge.errors import SlimEdgeError

__all__ = [
    "AGGREGATOR",
    "DEVICE_KINDS",
    "PREFIX",
    "TopicError",
    "ack",
    "check_name",
    "device_of",
    "features",
    "features_all",
    "fleet_name",
    "heartbeat",
    "heartbeat_all",
    "results",
    "status",
    "status_all",
    "update",
    "ack_all",
    "aggregator_ack",
    "aggregator_state",
    "aggregator_update",
]

PREFIX = "slimedge"
DEVICE_KINDS = ("features", "heartbeat", "status", "update", "ack")
AGGREGATOR = "aggregator"  # the level in place of a device id on the aggregator's own topics


class TopicError(SlimEdgeError, ValueError):
    """A fleet or device name that cannot be a topic level, or a topic not of this fleet."""


def check_name(what: str, name: object) -> str:
    """`name` if it is usable as one topic level; otherwise TopicError naming `what`."""
    if not isinstance(name, str) or not name:
        raise TopicError(f"{what}: expected a non-empty string, got {name!r}")
    bad = [c for c in ("/", "+", "#", "\0") if c in name]
    if bad:
        raise TopicError(f"{what} {name!r}: may not contain {' '.join(map(repr, bad))} "
                         "(it must be one MQTT topic level)")
    if len(name.encode("utf-8")) > 255:
        raise TopicError(f"{what} {name[:20]!r}...: longer than 255 bytes")
    return name


def fleet_name(deployment_id: str, created: str) -> str:
    """<fleet> of a deployment: its id without the `-<digits of created>` suffix that
    `slimedge export` appends (`mixed12-20250101120000` -> `mixed12`), else the whole id."""
    stamp = "".join(c for c in created if c.isdigit())
    suffix = f"-{stamp}"
    if stamp and deployment_id.endswith(suffix) and len(deployment_id) > len(suffix):
        return check_name("fleet", deployment_id[: -len(suffix)])
    return check_name("fleet", deployment_id)


def _device_topic(fleet: str, device: str, kind: str) -> str:
    return f"{PREFIX}/{check_name('fleet', fleet)}/{check_name('device', device)}/{kind}"


def features(fleet: str, device: str) -> str:
    return _device_topic(fleet, device, "features")


def heartbeat(fleet: str, device: str) -> str:
    return _device_topic(fleet, device, "heartbeat")


def status(fleet: str, device: str) -> str:
    return _device_topic(fleet, device, "status")


def update(fleet: str, device: str) -> str:
    return _device_topic(fleet, device, "update")


def ack(fleet: str, device: str) -> str:
    return _device_topic(fleet, device, "ack")


def results(fleet: str) -> str:
    return f"{PREFIX}/{check_name('fleet', fleet)}/results"


def _all(fleet: str, kind: str) -> str:
    return f"{PREFIX}/{check_name('fleet', fleet)}/+/{kind}"


def features_all(fleet: str) -> str:
    """Subscription to every device's features."""
    return _all(fleet, "features")


def heartbeat_all(fleet: str) -> str:
    return _all(fleet, "heartbeat")


def status_all(fleet: str) -> str:
    return _all(fleet, "status")


def ack_all(fleet: str) -> str:
    return _all(fleet, "ack")


def aggregator_update(fleet: str) -> str:
    """Host -> aggregator: SEUP chunks and the signed offer of a fleet-wide switch."""
    return _device_topic(fleet, AGGREGATOR, "update")


def aggregator_ack(fleet: str) -> str:
    return _device_topic(fleet, AGGREGATOR, "ack")


def aggregator_state(fleet: str) -> str:
    """Retained JSON: the deployment the aggregator serves, its last frame, a pending switch."""
    return _device_topic(fleet, AGGREGATOR, "state")


def device_of(topic: str) -> tuple[str, str, str]:
    """(fleet, device, kind) of a per-device topic; TopicError for anything else
    (the results topic, a foreign prefix, an unknown kind, a wrong number of levels)."""
    if not isinstance(topic, str):
        raise TopicError(f"topic: expected a string, got {type(topic).__name__}")
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise TopicError(f"topic {topic!r}: not a device topic "
                         f"({PREFIX}/<fleet>/<device>/<kind>)")
    _, fleet, device, kind = parts
    if kind not in DEVICE_KINDS:
        raise TopicError(f"topic {topic!r}: unknown kind {kind!r} "
                         f"(expected one of {', '.join(DEVICE_KINDS)})")
    check_name("fleet", fleet)
    check_name("device", device)
    return fleet, device, kind
