"""Quantities with units: every number in a device or fleet file is `{value, unit, source}`.

A quantity is read once, converted to SI base units (bytes, MAC/s, bit/s, s, W, J, J/B, Hz) and kept
with its source, so later stages never see a raw "512 KB" and every figure can be traced.

Units, by kind (the conversion factor to the SI base unit is exact):

- bytes: B, KB (1000 B), KiB (1024 B), MB (10^6 B), MiB (2^20 B), GB (10^9 B), GiB (2^30 B).
  KB/MB/GB are decimal, KiB/MiB/GiB binary; datasheets that write "512 KB" for 512 x 1024 bytes
  must be entered as KiB.
- throughput (multiply-accumulates per second): MAC/s, kMAC/s, MMAC/s, GMAC/s, TMAC/s; the
  operation forms OP/s, kOP/s, MOP/s, GOP/s, TOP/s (also written OPS, kOPS, MOPS, GOPS, TOPS)
  are accepted and converted at 2 operations per MAC (one multiply + one add), so 4 TOPS is
  2 TMAC/s.
- bandwidth: bit/s, kbit/s, Mbit/s, Gbit/s (decimal prefixes).
- time (latencies, overheads): s, ms, us.
- duration (failure windows): s, min, h, d (1 d = 86400 s).
- power: W, mW, uW.
- energy (battery capacity): J, kJ, Wh, mWh (1 Wh = 3600 J); a battery given in mAh is entered
  in Wh with the arithmetic in its source (mAh x nominal V / 1000).
- energy per byte (radio): J/B, mJ/B, uJ/B, nJ/B.
- frequency: Hz, kHz, MHz, GHz.
- fraction / probability: unitless, written `unit: "1"` or without a unit; fractions lie in
  [0, 1), probabilities in [0, 1].
- count: unitless whole number >= 1.

A `source` names a datasheet, product brief or published benchmark (title + URL or document
id). A number derived from others says `derived: ...` with the arithmetic; a number nobody
published says `assumption: ...` with its reasoning.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slimedge.errors import SlimEdgeError


class DeviceConfigError(SlimEdgeError):
    """A device or fleet file that cannot be used; the message names the file and field."""


class QuantityError(ValueError):
    """A bad quantity; `field` is the path below the quantity (e.g. "unit"), "" for itself."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


BYTES = {"B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
_MAC = {"MAC/s": 1.0, "kMAC/s": 1e3, "MMAC/s": 1e6, "GMAC/s": 1e9, "TMAC/s": 1e12}
# Two operations (multiply, add) per MAC.
_OPS = {
    f"{prefix}{form}": scale / 2.0
    for prefix, scale in {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.items()
    for form in ("OP/s", "OPS")
}
THROUGHPUT = {**_MAC, **_OPS}
BANDWIDTH = {"bit/s": 1.0, "kbit/s": 1e3, "Mbit/s": 1e6, "Gbit/s": 1e9}
TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
DURATION = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
POWER = {"W": 1.0, "mW": 1e-3, "uW": 1e-6}
ENERGY = {"J": 1.0, "kJ": 1e3, "Wh": 3600.0, "mWh": 3.6}
ENERGY_PER_BYTE = {"J/B": 1.0, "mJ/B": 1e-3, "uJ/B": 1e-6, "nJ/B": 1e-9}
FREQUENCY = {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9}
UNITLESS = {"1": 1.0}


@dataclass(frozen=True)
class Kind:
    """One kind of quantity: its units, SI unit, and the range a value may take."""

    name: str
    units: Mapping[str, float]
    si_unit: str
    positive: bool = True  # > 0; otherwise >= 0
    upper: float | None = None  # inclusive upper bound
    upper_open: bool = False  # the upper bound itself is excluded
    integer: bool = False  # SI value is a whole number (bytes, counts)


KINDS: dict[str, Kind] = {
    "bytes": Kind("bytes", BYTES, "B", integer=True),
    "throughput": Kind("throughput", THROUGHPUT, "MAC/s"),
    "bandwidth": Kind("bandwidth", BANDWIDTH, "bit/s"),
    "time": Kind("time", TIME, "s", positive=False),
    "duration": Kind("duration", DURATION, "s"),
    "power": Kind("power", POWER, "W"),
    "energy": Kind("energy", ENERGY, "J"),
    "energy_per_byte": Kind("energy per byte", ENERGY_PER_BYTE, "J/B"),
    "frequency": Kind("frequency", FREQUENCY, "Hz"),
    "fraction": Kind("fraction", UNITLESS, "1", positive=False, upper=1.0, upper_open=True),
    "probability": Kind("probability", UNITLESS, "1", positive=False, upper=1.0),
    "count": Kind("count", UNITLESS, "1", integer=True),
}

QUANTITY_KEYS = ("value", "unit", "source")


@dataclass(frozen=True)
class Quantity:
    """A number as written (value, unit), its SI value, and where it comes from."""

    value: float
    unit: str
    si: float
    source: str
    kind: str

    @property
    def si_unit(self) -> str:
        return KINDS[self.kind].si_unit

    def given(self) -> str:
        """The number as the file wrote it, e.g. "512 KiB"."""
        unit = "" if self.unit == "1" else f" {self.unit}"
        return f"{self.value:g}{unit}"


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A " (did you mean 'x'?)" hint, or "" when nothing is close."""
    # Case-insensitive, so "kib" finds "KiB" and "Mhz" finds "MHz".
    by_lower = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


def check_keys(raw: Mapping[str, Any], allowed: list[str] | tuple[str, ...]) -> str | None:
    """The first key not in `allowed`, or None."""
    for key in raw:
        if key not in allowed:
            return str(key)
    return None


def convert(value: float, unit: str, kind: str) -> float:
    """`value` in `unit` converted to the SI unit of `kind`; QuantityError on a bad unit."""
    spec = KINDS[kind]
    if unit not in spec.units:
        expected = ", ".join(spec.units)
        hint = suggest(unit, list(spec.units))
        raise QuantityError(
            f"{unit!r} is not a unit of {spec.name}{hint} (expected one of {expected})", "unit"
        )
    return value * spec.units[unit]


def parse_quantity(raw: Any, kind: str, *, require_source: bool = True) -> Quantity:
    """Read a `{value, unit, source}` mapping of the given kind; QuantityError names the key."""
    spec = KINDS[kind]
    if not isinstance(raw, Mapping):
        raise QuantityError(
            f"expected a mapping {{value, unit, source}}, got {type(raw).__name__} {raw!r}"
        )
    unknown = check_keys(raw, QUANTITY_KEYS)
    if unknown is not None:
        raise QuantityError(f"unknown key{suggest(unknown, QUANTITY_KEYS)}", unknown)
    if "value" not in raw:
        raise QuantityError("missing (every quantity needs value, unit and source)", "value")
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QuantityError(f"expected a number, got {type(value).__name__} {value!r}", "value")
    if not math.isfinite(value):
        raise QuantityError(f"expected a finite number, got {value!r}", "value")
    unit = raw.get("unit", "1" if "1" in spec.units else None)
    if unit is None:
        expected = ", ".join(spec.units)
        raise QuantityError(f"missing (a {spec.name} needs one of {expected})", "unit")
    if not isinstance(unit, str):
        unit = str(unit)
    si = convert(float(value), unit, kind)
    _check_range(si, value, spec)
    source = raw.get("source")
    if require_source and (not isinstance(source, str) or not source.strip()):
        raise QuantityError(
            "missing or empty: every number needs a source (datasheet, benchmark, "
            "'derived: ...' or 'assumption: ...')",
            "source",
        )
    if spec.integer:
        si = round(si)
    return Quantity(float(value), unit, si, (source or "").strip(), kind)


def _check_range(si: float, value: float, spec: Kind) -> None:
    if si < 0:
        raise QuantityError(f"must not be negative, got {value!r}", "value")
    if spec.positive and si == 0:
        raise QuantityError(f"must be greater than 0, got {value!r}", "value")
    if spec.upper is not None:
        above = si >= spec.upper if spec.upper_open else si > spec.upper
        if above:
            bound = f"[0, {spec.upper:g})" if spec.upper_open else f"[0, {spec.upper:g}]"
            raise QuantityError(f"must lie in {bound}, got {value!r}", "value")
    if spec.integer and spec.name == "count" and si != int(si):
        raise QuantityError(f"must be a whole number, got {value!r}", "value")


def format_si(si: float, kind: str) -> str:
    """A readable SI rendering for summaries (e.g. 524288 B -> "512 KiB")."""
    if kind == "bytes":
        for unit in ("GiB", "MiB", "KiB"):
            if si >= BYTES[unit]:
                return f"{si / BYTES[unit]:.4g} {unit}"
        return f"{si:.0f} B"
    ladders = {
        "throughput": ("MAC/s", ["TMAC/s", "GMAC/s", "MMAC/s", "kMAC/s"]),
        "bandwidth": ("bit/s", ["Gbit/s", "Mbit/s", "kbit/s"]),
        "frequency": ("Hz", ["GHz", "MHz", "kHz"]),
    }
    if kind in ladders:
        base, units = ladders[kind]
        table = KINDS[kind].units
        for unit in units:
            if si >= table[unit]:
                return f"{si / table[unit]:.4g} {unit}"
        return f"{si:.4g} {base}"
    if kind == "time":
        return f"{si * 1e3:.4g} ms"
    if kind == "duration":
        return f"{si / 86400:.4g} d" if si >= 86400 else f"{si:.4g} s"
    unit = KINDS[kind].si_unit
    return f"{si:.4g}" if unit == "1" else f"{si:.4g} {unit}"
