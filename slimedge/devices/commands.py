"""Handlers of `slimedge devices list|show` and `slimedge fleet show`; each returns the summary
that `--json` prints, and has a text layout for people (`*_text`: tables, one line per board or
device, sources under their values)."""

from __future__ import annotations

import argparse
import shutil
import textwrap
from pathlib import Path
from typing import Any

from slimedge.console import text_table
from slimedge.devices.catalog import CLASSES, devices_dir, load_catalog, resolve_board
from slimedge.devices.fleet import load_fleet, resolve_fleet_path
from slimedge.devices.units import format_si


def _add_catalog_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--catalog",
        metavar="DIR",
        default=None,
        help="folder of board files (default: firmware_configs/devices, or "
        "$SLIMEDGE_FIRMWARE_CONFIGS/devices)",
    )


def add_list_options(p: argparse.ArgumentParser) -> None:
    _add_catalog_option(p)
    p.add_argument(
        "--class", dest="board_class", choices=CLASSES, default=None, help="only boards of a class"
    )


def list_boards(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(args.catalog) if getattr(args, "catalog", None) else devices_dir()
    catalog = load_catalog(directory)
    wanted = getattr(args, "board_class", None)
    boards = [b.summary() for b in catalog.values() if wanted in (None, b.board_class)]
    return {"catalog": str(directory), "count": len(boards), "boards": boards}


def add_show_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("board", help="board id (e.g. rpi4b) or path to a board YAML file")
    _add_catalog_option(p)


def show_board(args: argparse.Namespace) -> dict[str, Any]:
    catalog_dir = getattr(args, "catalog", None)
    catalog = load_catalog(catalog_dir) if catalog_dir else None
    return resolve_board(args.board, catalog).describe()


def add_fleet_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("fleet", help="fleet name (e.g. mixed12) or path to a fleet YAML file")
    _add_catalog_option(p)


def show_fleet(args: argparse.Namespace) -> dict[str, Any]:
    catalog_dir = getattr(args, "catalog", None)
    catalog = load_catalog(catalog_dir) if catalog_dir else load_catalog()
    return load_fleet(resolve_fleet_path(args.fleet), catalog).summary()


# -- text layouts ---------------------------------------------------------------------------

def _si(value: float | None, kind: str) -> str:
    return "-" if value is None else format_si(value, kind)


def _link(medium: str | None, bandwidth: float | None) -> str:
    return f"{medium or '-'} {_si(bandwidth, 'bandwidth')}" if bandwidth else (medium or "-")


def list_text(summary: dict[str, Any]) -> str:
    """`devices list`: one row per board."""
    rows = [[b["id"], b["class"], _si(b["model_memory_bytes"], "bytes"),
             _si(b["throughput_mac_per_s"].get("int8"), "throughput"),
             _link(b["link"], b["link_bandwidth_bit_per_s"]),
             f"{b['failure_probability']:.3f}", b["name"]] for b in summary["boards"]]
    table = text_table(["id", "class", "memory budget", "int8 throughput", "link",
                        "failure p", "name"], rows, right=(2, 3, 5))
    return f"{summary['count']} boards in {summary['catalog']}\n\n{table}"


def _wrap(text: str, indent: str) -> str:
    width = max(60, shutil.get_terminal_size((100, 24)).columns)
    return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent)


def board_text(board: dict[str, Any]) -> str:
    """`devices show`: the board's facts, then every field with its value and, under it, its
    source."""
    formats = ", ".join(f"{f} (preferred)" if f == board["preferred_format"] else f
                        for f in board["formats"])
    runtime = board["runtime"] + (f" ({board['runtime_note']})" if board.get("runtime_note")
                                  else "")
    lines = [f"{board['id']}: {board['name']}",
             f"  class {board['class']}; runtime {runtime}; link {board['link_medium']}",
             f"  cpu {board['cpu_core']}", f"  formats {formats}", f"  file {board['path']}"]
    if board.get("notes"):
        lines.append(_wrap(f"notes: {board['notes']}", "  "))
    lines.append("")
    width = max(len(path) for path in board["fields"])
    for path, f in board["fields"].items():
        value = f["readable"]
        if f.get("given") and f["given"] != value:
            value += f" (given {f['given']})"
        lines.append(f"  {path.ljust(width)}  {value}")
        lines.append(_wrap(f["source"], "      "))
    return "\n".join(lines)


def fleet_text(summary: dict[str, Any]) -> str:
    """`fleet show`: the fleet's header, one row per device, then the overrides."""
    agg = summary["aggregator"]
    lines = [f"{summary['fleet']}: {summary['views']} views, {len(summary['devices'])} "
             f"devices, aggregator {agg['name']} ({agg['kind']})"]
    if summary.get("description"):
        lines.append(_wrap(summary["description"], "  "))
    if summary.get("path"):
        lines.append(f"  file {summary['path']}")
    rows = [[d["id"], d["board"], d["class"], ",".join(map(str, d["views"])),
             f"{d['failure_probability']:.3f}", d["preferred_format"],
             _si(d["model_memory_bytes"], "bytes"), _si(d["model_storage_bytes"], "bytes"),
             _si(d["throughput_mac_per_s"], "throughput"), _si(d["clock_hz"], "frequency"),
             _link(d["link"], d["link_bandwidth_bit_per_s"])] for d in summary["devices"]]
    lines += ["", text_table(["device", "board", "class", "views", "failure p", "format",
                              "memory budget", "storage", "throughput", "clock", "link"],
                             rows, right=(4, 6, 7, 8, 9))]
    overrides = [(d["id"], path, o) for d in summary["devices"]
                 for path, o in d.get("overrides", {}).items()]
    if overrides:
        lines += ["", "overrides:"]
        lines += [f"  {dev} {path} = {o['given']}" + (f" ({o['reason']})" if o.get("reason")
                                                       else "") for dev, path, o in overrides]
    return "\n".join(lines)
