"""Handlers of `slimedge devices list|show` and `slimedge fleet show`; each returns the summary
that `--json` prints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from slimedge.devices.catalog import CLASSES, devices_dir, load_catalog, resolve_board
from slimedge.devices.fleet import load_fleet, resolve_fleet_path


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
