"""Which device runs which view at which level, and in which format: from explicit levels,
from a plan file, or the least-pruned level that fits each device (the cost model decides)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.artifacts import sha256_file
from slimedge.devices.catalog import Board, load_catalog
from slimedge.devices.fleet import Fleet, load_fleet, resolve_fleet_path
from slimedge.export import ExportError


@dataclass(frozen=True)
class DeviceAssignment:
    """What one device runs: its views, one level for all of them, and the format."""

    device: str
    board: Board
    views: tuple[int, ...]
    level_index: int
    fmt: str


@dataclass(frozen=True)
class PlanChoice:
    """What export reads from a plan file: a level and a device per view, the contingency."""

    path: Path
    levels: list[int]  # per view; views the plan leaves out are -1
    placement: dict[int, str]  # view -> device
    contingency: Any
    sha256: str


def as_fleet(fleet: Fleet | str | os.PathLike, catalog: Any) -> Fleet:
    if isinstance(fleet, Fleet):
        return fleet
    boards = catalog
    if catalog is not None and not isinstance(catalog, Mapping):
        boards = load_catalog(catalog)
    return load_fleet(resolve_fleet_path(fleet), boards)


def fleet_cost_table(fleet: Fleet, manifest: Mapping[str, Any],
                formats: Mapping[str, str] | None = None) -> Any:
    from slimedge.devices.cost import CostModelError, CostTable

    try:
        table = CostTable.build(manifest["levels"], fleet, int(manifest["feature_dim"]),
                                formats=formats)
    except CostModelError as exc:
        raise ExportError(f"fleet {fleet.name!r}: {exc}") from None
    if all(len(d.views) <= 1 for d in fleet.devices):
        return table
    # A device that sees several views loads one interpreter per view: its fit is the whole
    # load's, as the planner counts it (slimedge.plan.device_costs).
    import dataclasses

    from slimedge.devices.energy import DEFAULT_FRAME_PERIOD_MS
    from slimedge.plan.device_costs import device_costs

    dev = device_costs(table, fleet, DEFAULT_FRAME_PERIOD_MS)
    return dataclasses.replace(table, fits=dev.fits, ram_needed=dev.ram_needed,
                               ram_margin=table.ram_budget[:, None] - dev.ram_needed)


def least_pruned_levels(fleet: Fleet | str | os.PathLike, ladder_manifest: Mapping[str, Any],
                        *, formats: Mapping[str, str] | None = None,
                        catalog: Any = None) -> list[int]:
    """Per view, the least-pruned level index that fits its device(s) (cost model, each
    board's preferred format unless `formats` says otherwise). A device that sees several views
    runs one artifact, and a view seen by several devices must fit all of them: levels are
    raised until both hold. Views no device sees get level 0. ExportError names the device
    and the bytes its most pruned level needs vs what it has when no level fits."""
    from slimedge.devices.cost import least_pruned_fitting_level, no_fit_message

    fleet = as_fleet(fleet, catalog)
    check_views(fleet, ladder_manifest)
    table = fleet_cost_table(fleet, ladder_manifest, formats)
    device_level: dict[str, int] = {}
    for d in fleet.devices:
        j = least_pruned_fitting_level(table, d.id)
        if j is None:
            raise ExportError(f"fleet {fleet.name!r}: device {d.id}: "
                              f"{no_fit_message(table, d.id)}")
        device_level[d.id] = j
    view_level = [0] * fleet.views
    changed = True
    while changed:  # monotone: levels only rise, bounded by the ladder
        changed = False
        for v, ids in fleet.view_to_devices().items():
            want = max((device_level[i] for i in ids), default=0)
            if want > view_level[v]:
                view_level[v], changed = want, True
        for d in fleet.devices:
            want = max(view_level[v] for v in d.views)
            if want > device_level[d.id]:
                device_level[d.id], changed = want, True
    return view_level


def check_views(fleet: Fleet, manifest: Mapping[str, Any]) -> None:
    if int(manifest["views"]) != fleet.views:
        raise ExportError(f"fleet {fleet.name!r} has {fleet.views} views but the ladder was "
                          f"built for {manifest['views']}")


def read_plan(path: str | os.PathLike, fleet: Fleet, manifest: Mapping[str, Any]) -> PlanChoice:
    """Read `views[*].level_index` and `views[*].device` (and the `contingency` section) of a
    plan file; every error names the file and field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not a readable JSON plan ({exc})") from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("views"), list) \
            or not raw["views"]:
        raise ExportError(f"{path}: views: expected a non-empty list of "
                          "{view, level_index, device} objects")
    n_levels = len(manifest["levels"])
    device_ids = [d.id for d in fleet.devices]
    levels = [-1] * fleet.views
    placement: dict[int, str] = {}
    for i, entry in enumerate(raw["views"]):
        where = f"{path}: views[{i}]"
        if not isinstance(entry, Mapping):
            raise ExportError(f"{where}: expected an object, got {entry!r}")
        for key in ("view", "level_index", "device"):
            if key not in entry:
                raise ExportError(f"{where}.{key}: missing")
        v, j, dev = entry["view"], entry["level_index"], entry["device"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < fleet.views:
            raise ExportError(f"{where}.view: {v!r} is not a view of fleet {fleet.name!r} "
                              f"(0..{fleet.views - 1})")
        if v in placement:
            raise ExportError(f"{where}.view: view {v} is listed twice")
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < n_levels:
            raise ExportError(f"{where}.level_index: {j!r} is not a level index of the ladder "
                              f"(0..{n_levels - 1})")
        if dev not in device_ids:
            raise ExportError(f"{where}.device: {dev!r} is not a device of fleet "
                              f"{fleet.name!r} (devices: {', '.join(device_ids)})")
        levels[v], placement[v] = j, dev
    missing = [v for v in range(fleet.views) if v not in placement]
    if missing and not fleet.allow_unseen_views:
        raise ExportError(f"{path}: views: view(s) {missing} have no entry (fleet "
                          f"{fleet.name!r} requires every view to have a device)")
    return PlanChoice(path, levels, placement, raw.get("contingency"), sha256_file(path))


def assign_devices(fleet: Fleet, manifest: Mapping[str, Any], levels: Sequence[int],
                   *, placement: Mapping[int, str] | None = None,
                   formats: Mapping[str, str] | None = None) -> list[DeviceAssignment]:
    """One assignment per device that runs at least one view. `placement` (view -> device,
    from a plan) replaces the fleet's views; without it each device runs the views its
    camera sees. Levels are per view (-1: the view is not deployed)."""
    from slimedge.devices.cost import CostModelError, _check_format

    check_views(fleet, manifest)
    n_levels = len(manifest["levels"])
    levels = [int(x) for x in levels]
    if len(levels) != fleet.views:
        raise ExportError(f"levels: expected one level index per view ({fleet.views}), "
                          f"got {len(levels)}")
    formats = dict(formats or {})
    ids = {d.id for d in fleet.devices}
    unknown = sorted(set(formats) - ids)
    if unknown:
        raise ExportError(f"formats: fleet {fleet.name!r} has no device {unknown[0]!r}")
    if placement is None:
        views_of = {d.id: [v for v in d.views if levels[v] >= 0] for d in fleet.devices}
    else:
        views_of = {d.id: [] for d in fleet.devices}
        for v, dev in sorted(placement.items()):
            views_of[dev].append(v)
    out = []
    for d in fleet.devices:
        views = views_of[d.id]
        if not views:
            continue
        for v in views:
            if not 0 <= levels[v] < n_levels:
                raise ExportError(f"levels: view {v} (device {d.id}) has level index "
                                  f"{levels[v]}; the ladder has 0..{n_levels - 1}")
        distinct = sorted({levels[v] for v in views})
        if len(distinct) > 1:
            raise ExportError(
                f"device {d.id} ({d.board_id}) runs views {views} at levels "
                f"{[levels[v] for v in views]}: a device runs one artifact, so its views "
                "need one level")
        try:
            fmt = _check_format(d.board, formats.get(d.id))
        except CostModelError as exc:
            raise ExportError(f"device {d.id}: {exc}") from None
        out.append(DeviceAssignment(d.id, d.board, tuple(views), distinct[0], fmt))
    if not out:
        raise ExportError(f"fleet {fleet.name!r}: no device runs any view")
    return out


