"""Failure-injection schedules for `slimedge fleet up`: `cam01@5s,cam02@7.5s`.

Each item names a device of the deployment and a time counted from the fleet's first frame
(`s`, `ms` or `us`; a bare number is seconds). A bad item is refused before any process
starts, with the option, the item and (for an unknown device) the devices there are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from slimedge.devices.units import QuantityError, convert, suggest
from slimedge.errors import SlimEdgeError


class FleetUpError(SlimEdgeError):
    """A `fleet up` run that cannot start or finish; names the option, device or file."""


@dataclass(frozen=True)
class Injection:
    device: str
    at_s: float  # seconds after the first frame's capture time


_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*$")


def parse_time(text: str, what: str) -> float:
    """Seconds from `5s`, `7.5s`, `500ms` or `5`; FleetUpError names `what`."""
    m = _TIME.match(text)
    if m is None:
        raise FleetUpError(f"{what}: {text.strip()!r} is not a time (write e.g. 5s, 7.5s or "
                           "500ms)")
    value, unit = float(m.group(1)), m.group(2) or "s"
    try:
        return convert(value, unit, "time")
    except QuantityError as exc:
        raise FleetUpError(f"{what}: {exc}") from exc


def parse_schedule(text: str | None, option: str, devices: Sequence[str]
                   ) -> list[Injection]:
    """`cam01@5s,cam02@7.5s` -> injections sorted by time. The same device twice is allowed
    only at different times (kill, restart, kill again is a valid story)."""
    if text is None or not text.strip():
        return []
    out: list[Injection] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise FleetUpError(f"{option}: empty item in {text!r} (items are DEVICE@TIME, "
                               "separated by commas)")
        device, sep, when = item.partition("@")
        device = device.strip()
        if not sep or not device or not when.strip():
            raise FleetUpError(f"{option}: item {item!r} is not DEVICE@TIME (e.g. cam01@5s)")
        if device not in devices:
            raise FleetUpError(f"{option}: item {item!r}: no device {device!r} in the "
                               f"deployment{suggest(device, list(devices))} (devices: "
                               f"{', '.join(devices)})")
        out.append(Injection(device, parse_time(when, f"{option}: item {item!r}")))
    seen: set[tuple[str, float]] = set()
    for inj in out:
        if (inj.device, inj.at_s) in seen:
            raise FleetUpError(f"{option}: {inj.device} is listed twice at {inj.at_s:g} s")
        seen.add((inj.device, inj.at_s))
    return sorted(out, key=lambda i: (i.at_s, i.device))


def check_story(kills: Sequence[Injection], restarts: Sequence[Injection]) -> None:
    """A restart needs its device dead at that time (killed earlier, not yet restarted), and a
    kill needs it running: refuse a story that cannot happen rather than run half of it."""
    events = sorted([(i.at_s, 0, i) for i in kills] + [(i.at_s, 1, i) for i in restarts],
                    key=lambda e: (e[0], e[1]))
    alive: dict[str, bool] = {}
    for at, kind, inj in events:
        up = alive.get(inj.device, True)
        if kind == 0 and not up:
            raise FleetUpError(f"--kill: {inj.device}@{at:g}s: the device is already dead "
                               "then (restart it first)")
        if kind == 1 and up:
            raise FleetUpError(f"--restart: {inj.device}@{at:g}s: the device is running then "
                               "(a restart follows a --kill of the same device)")
        alive[inj.device] = kind == 1
