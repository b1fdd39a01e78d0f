"""Fleet files: which devices exist, which catalog board each is, which views each camera sees.

`firmware_configs/fleets/<name>.yaml`:

```yaml
name: mixed12
description: ...                 # optional
views: 12                        # V, the number of camera views (0 ... V-1)
allow_unseen_views: false        # optional; true lets a view have no device
aggregator: {board: jetson_orin_nano}   # a catalog board id, or {host: gateway-01}
devices:
  - id: cam00                    # unique within the fleet
    board: esp32s3               # catalog board id
    views: [0]                   # the view(s) this device's camera sees
    failure_probability:         # optional; default: the board's failure.probability
      {value: 0.1, source: "..."}
    overrides:                   # optional; per-device changes to numeric board fields
      memory.ram_budget: {value: 128, unit: MiB, source: "...", reason: "..."}
      cpu.clock: {value: 700, unit: MHz, source: "...", reason: "..."}
    notes: ...                   # optional
```

Overrides: each key is a numeric field path of the board's class (`slimedge devices show`
lists them); each value is a quantity `{value, unit, source}` plus a mandatory `reason` (why this
device differs from the catalog board). Overriding `cpu.clock` of a CPU-bound board (mcu,
linux) without also overriding `compute.throughput.<fmt>` scales every throughput by
new/old clock (throughput taken as linear in clock; recorded as a derived source). On
accelerator boards (edgetpu, gpu) throughput does not follow the CPU clock, so such an override
must state the throughputs too.

All boards of a fleet must share one failure.window, so their probabilities can be combined.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from slimedge.devices.catalog import (
    EDGETPU,
    GPU,
    THROUGHPUT_PREFIX,
    Board,
    FileReader,
    check_budgets,
    fleets_dir,
    load_catalog,
    number_field,
    number_paths,
    read_yaml,
)
from slimedge.devices.units import (
    DeviceConfigError,
    Quantity,
    suggest,
)

FLEET_KEYS = ("name", "description", "views", "allow_unseen_views", "aggregator", "devices")
DEVICE_KEYS = ("id", "board", "views", "failure_probability", "overrides", "notes")
OVERRIDE_KEYS = ("value", "unit", "source", "reason")


@dataclass(frozen=True)
class Override:
    """A per-device replacement of one board number, with why."""

    field: str
    quantity: Quantity
    reason: str


@dataclass(frozen=True)
class Device:
    """One device of a fleet; `board` already has the overrides applied."""

    id: str
    board_id: str
    board: Board
    views: tuple[int, ...]
    failure_probability: float
    failure_source: str
    overrides: Mapping[str, Override]
    notes: str = ""


@dataclass(frozen=True)
class Aggregator:
    """Where features are pooled: a catalog board, or a named host outside the catalog."""

    kind: str  # "board" or "host"
    name: str
    board: Board | None = None


@dataclass(frozen=True)
class Fleet:
    name: str
    description: str
    path: Path | None
    views: int
    devices: tuple[Device, ...]
    aggregator: Aggregator
    allow_unseen_views: bool = False

    def view_to_devices(self) -> dict[int, tuple[str, ...]]:
        """Every view 0 ... V-1 -> ids of the devices whose camera sees it (may be empty)."""
        mapping: dict[int, list[str]] = {v: [] for v in range(self.views)}
        for device in self.devices:
            for view in device.views:
                mapping[view].append(device.id)
        return {v: tuple(ids) for v, ids in mapping.items()}

    def device(self, device_id: str) -> Device:
        for device in self.devices:
            if device.id == device_id:
                return device
        ids = [d.id for d in self.devices]
        raise KeyError(f"fleet {self.name!r} has no device {device_id!r}{suggest(device_id, ids)}")

    def summary(self) -> dict[str, Any]:
        """The `fleet show` table."""
        rows = []
        for d in self.devices:
            b = d.board
            rows.append(
                {
                    "id": d.id,
                    "board": d.board_id,
                    "class": b.board_class,
                    "views": list(d.views),
                    "failure_probability": d.failure_probability,
                    "preferred_format": b.preferred_format,
                    "model_memory_bytes": b.model_memory_bytes,
                    "model_storage_bytes": b.model_storage_bytes,
                    "clock_hz": b.cpu.clock_hz,
                    "throughput_mac_per_s": b.throughput(),
                    "link": b.link.medium,
                    "link_bandwidth_bit_per_s": b.link.bandwidth_bps,
                    "overrides": {
                        path: {"given": o.quantity.given(), "reason": o.reason}
                        for path, o in d.overrides.items()
                    },
                }
            )
        agg = self.aggregator
        return {
            "fleet": self.name,
            "path": str(self.path) if self.path else None,
            "description": self.description,
            "views": self.views,
            "aggregator": {"kind": agg.kind, "name": agg.name},
            "devices": rows,
            "view_to_devices": {str(v): list(ids) for v, ids in self.view_to_devices().items()},
        }


def resolve_fleet_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A fleet file by path, or by name in `fleets_dir()`."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    if candidate.suffix in (".yaml", ".yml"):
        raise DeviceConfigError(f"{candidate}: no such file")
    directory = fleets_dir()
    named = directory / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
    raise DeviceConfigError(
        f"unknown fleet {str(name_or_path)!r}{suggest(str(name_or_path), known)} "
        f"(fleets in {directory}: {', '.join(known) or 'none'})"
    )


def load_fleet(path: str | os.PathLike[str], catalog: Mapping[str, Board] | None = None) -> Fleet:
    """Read and validate a fleet file against the catalog (default: `load_catalog()`)."""
    path = Path(path)
    catalog = load_catalog() if catalog is None else catalog
    reader = FileReader(path)
    top = reader.mapping(read_yaml(path), "", FLEET_KEYS)
    for key in ("name", "views", "aggregator", "devices"):
        if key not in top:
            raise reader.fail(key, "missing (required in every fleet file)")
    name = reader.text(top["name"], "name")
    description = reader.text(top["description"], "description") if "description" in top else ""
    n_views = top["views"]
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise reader.fail("views", f"expected a whole number of views >= 1, got {n_views!r}")
    allow_unseen = top.get("allow_unseen_views", False)
    if not isinstance(allow_unseen, bool):
        raise reader.fail("allow_unseen_views", f"expected true or false, got {allow_unseen!r}")
    aggregator = _read_aggregator(reader, top["aggregator"], catalog)
    raw_devices = top["devices"]
    if not isinstance(raw_devices, list) or not raw_devices:
        raise reader.fail("devices", f"expected a non-empty list of devices, got {raw_devices!r}")
    devices: list[Device] = []
    for i, raw in enumerate(raw_devices):
        device = _read_device(reader, raw, f"devices[{i}]", n_views, catalog)
        for j, other in enumerate(devices):
            if other.id == device.id:
                raise reader.fail(
                    f"devices[{i}].id", f"duplicate device id {device.id!r} (also devices[{j}])"
                )
        devices.append(device)
    _check_windows(reader, devices)
    fleet = Fleet(name, description, path, n_views, tuple(devices), aggregator, allow_unseen)
    if not allow_unseen:
        unseen = [v for v, ids in fleet.view_to_devices().items() if not ids]
        if unseen:
            raise reader.fail(
                "devices",
                f"view(s) {unseen} seen by no device (give each view a device, or "
                "set allow_unseen_views: true)",
            )
    return fleet


def _read_aggregator(reader: FileReader, raw: Any, catalog: Mapping[str, Board]) -> Aggregator:
    body = reader.mapping(raw, "aggregator", ("board", "host"))
    if len(body) != 1:
        raise reader.fail("aggregator", "give exactly one of board: <catalog id> or host: <name>")
    if "host" in body:
        return Aggregator("host", reader.text(body["host"], "aggregator.host"))
    board_id = reader.text(body["board"], "aggregator.board")
    if board_id not in catalog:
        raise reader.fail("aggregator.board", _unknown_board(board_id, catalog))
    return Aggregator("board", board_id, catalog[board_id])


def _unknown_board(board_id: str, catalog: Mapping[str, Board]) -> str:
    return f"unknown board {board_id!r}{suggest(board_id, list(catalog))} (catalog: " + (
        ", ".join(sorted(catalog)) + ")"
    )


def _read_device(
    reader: FileReader, raw: Any, where: str, n_views: int, catalog: Mapping[str, Board]
) -> Device:
    body = reader.mapping(raw, where, DEVICE_KEYS)
    for key in ("id", "board", "views"):
        if key not in body:
            raise reader.fail(f"{where}.{key}", "missing (required for every device)")
    device_id = reader.text(body["id"], f"{where}.id")
    board_id = reader.text(body["board"], f"{where}.board")
    if board_id not in catalog:
        raise reader.fail(f"{where}.board", _unknown_board(board_id, catalog))
    views = _read_views(reader, body["views"], f"{where}.views", n_views)
    board = catalog[board_id]
    overrides: dict[str, Override] = {}
    if "overrides" in body:
        board, overrides = _apply_overrides(reader, board, body["overrides"], f"{where}.overrides")
    probability, source = board.failure.probability, board.source_of("failure.probability")
    if "failure_probability" in body:
        qty = reader.quantity(body["failure_probability"], f"{where}.failure_probability",
                              "probability")
        probability, source = qty.si, qty.source
    notes = reader.text(body["notes"], f"{where}.notes") if "notes" in body else ""
    return Device(
        device_id,
        board_id,
        board,
        views,
        probability,
        source,
        MappingProxyType(overrides),
        notes,
    )


def _read_views(reader: FileReader, raw: Any, where: str, n_views: int) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise reader.fail(where, f"expected a non-empty list of view indices, got {raw!r}")
    views: list[int] = []
    for i, view in enumerate(raw):
        if isinstance(view, bool) or not isinstance(view, int):
            raise reader.fail(f"{where}[{i}]", f"expected a view index, got {view!r}")
        if not 0 <= view < n_views:
            raise reader.fail(
                f"{where}[{i}]", f"view {view} out of range (the fleet has views 0..{n_views - 1})"
            )
        if view in views:
            raise reader.fail(f"{where}[{i}]", f"view {view} listed twice")
        views.append(view)
    return tuple(views)


def _apply_overrides(
    reader: FileReader, board: Board, raw: Any, where: str
) -> tuple[Board, dict[str, Override]]:
    allowed = tuple(number_paths(board.board_class, board.formats))
    body = reader.mapping(raw, where, allowed)
    overrides: dict[str, Override] = {}
    replaced: dict[str, Quantity] = {}
    for field_path, value in body.items():
        at = f"{where}.{field_path}"
        entry = reader.mapping(value, at, OVERRIDE_KEYS)
        if "reason" not in entry:
            raise reader.fail(f"{at}.reason", "missing (every override must say why it differs)")
        reason = reader.text(entry.pop("reason"), f"{at}.reason")
        kind = _kind_of(field_path)
        qty = reader.quantity(entry, at, kind)
        noted = Quantity(
            qty.value,
            qty.unit,
            qty.si,
            f"override ({reader.path.name}): {qty.source}; reason: {reason}",
            qty.kind,
        )
        overrides[field_path] = Override(field_path, qty, reason)
        replaced[field_path] = noted
    if "cpu.clock" in replaced:
        replaced.update(_rescale_throughput(reader, board, replaced, where))
    check_budgets(
        {**board.quantities, **replaced},
        lambda field_path, msg: reader.fail(f"{where}.{field_path}", msg),
    )
    return board.with_quantities(replaced), overrides


def _kind_of(field_path: str) -> str:
    spec = number_field(field_path)
    assert spec is not None  # only schema paths reach here
    return spec.kind


def _rescale_throughput(
    reader: FileReader, board: Board, replaced: dict[str, Quantity], where: str
) -> dict[str, Quantity]:
    """Throughputs not overridden follow a CPU-clock override (CPU-bound boards only)."""
    missing = [f for f in board.formats if THROUGHPUT_PREFIX + f not in replaced]
    if not missing:
        return {}
    if board.board_class in (EDGETPU, GPU):
        paths = ", ".join(THROUGHPUT_PREFIX + f for f in missing)
        raise reader.fail(
            f"{where}.cpu.clock",
            f"an accelerator board's throughput does not follow its CPU clock; "
            f"override {paths} as well",
        )
    old = board.quantity("cpu.clock")
    new = replaced["cpu.clock"]
    ratio = new.si / old.si
    scaled: dict[str, Quantity] = {}
    for fmt in missing:
        base = board.quantity(THROUGHPUT_PREFIX + fmt)
        si = base.si * ratio
        source = (
            f"derived: {base.given()} x {new.given()} / {old.given()} = {si / 1e6:.4g} MMAC/s "
            f"(throughput taken as linear in CPU clock after the cpu.clock override; "
            f"base: {base.source})"
        )
        scaled[THROUGHPUT_PREFIX + fmt] = Quantity(
            base.value * ratio, base.unit, si, source, base.kind
        )
    return scaled


def _check_windows(reader: FileReader, devices: list[Device]) -> None:
    first = devices[0]
    for i, device in enumerate(devices[1:], start=1):
        if device.board.failure.window_s != first.board.failure.window_s:
            raise reader.fail(
                f"devices[{i}].board",
                f"failure.window of {device.board_id!r} "
                f"({device.board.quantity('failure.window').given()}) differs from that of "
                f"{first.board_id!r} ({first.board.quantity('failure.window').given()}); "
                "probabilities over different windows cannot be combined",
            )
