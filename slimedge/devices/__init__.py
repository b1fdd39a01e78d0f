"""Device catalog and fleets: board facts with sources, loaded into typed objects in SI units.

- `load_board(path)`, `load_catalog(directory=None)` -> boards (`firmware_configs/devices`).
- `load_fleet(path, catalog=None)` -> a fleet (`firmware_configs/fleets`).
- Every mistake in a file raises `DeviceConfigError` naming the file and the field.
"""

from slimedge.devices.catalog import (
    CLASSES,
    FORMATS,
    Board,
    devices_dir,
    firmware_configs_dir,
    fleets_dir,
    load_board,
    load_catalog,
    resolve_board,
)
from slimedge.devices.fleet import Aggregator, Device, Fleet, load_fleet, resolve_fleet_path
from slimedge.devices.units import DeviceConfigError, Quantity, parse_quantity

__all__ = [
    "CLASSES",
    "FORMATS",
    "Aggregator",
    "Board",
    "Device",
    "DeviceConfigError",
    "Fleet",
    "Quantity",
    "devices_dir",
    "firmware_configs_dir",
    "fleets_dir",
    "load_board",
    "load_catalog",
    "load_fleet",
    "parse_quantity",
    "resolve_board",
    "resolve_fleet_path",
]
