"""Handlers of `slimedge data ...`; each returns the summary that `--json` prints."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from slimedge.data.container import load_dataset


def add_generate_options(p: argparse.ArgumentParser) -> None:
    from slimedge.data import generator

    generator.add_cli_options(p)


def add_modelnet_options(p: argparse.ArgumentParser) -> None:
    from slimedge.data import modelnet

    modelnet.add_cli_options(p)


def add_meshes_options(p: argparse.ArgumentParser) -> None:
    from slimedge.data import meshes

    meshes.add_cli_options(p)


def _saved(ds: Any, out: str, seconds: float) -> dict[str, Any]:
    digest = ds.save(out)
    summary = ds.summary()
    summary["content_hash"] = digest
    summary["path"] = str(Path(out))
    summary["seconds"] = round(seconds, 3)
    return summary


def generate(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.data import generator

    config = generator.config_from_args(args)
    t0 = time.perf_counter()
    ds = generator.generate(config, workers=args.workers, progress=not args.json)
    return _saved(ds, args.out, time.perf_counter() - t0)


def import_modelnet(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.data import modelnet

    t0 = time.perf_counter()
    ds = modelnet.import_from_args(args, progress=not args.json)
    return _saved(ds, args.out, time.perf_counter() - t0)


def import_meshes(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.data import meshes

    t0 = time.perf_counter()
    ds = meshes.import_from_args(args, progress=not args.json)
    return _saved(ds, args.out, time.perf_counter() - t0)


def info(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset(args.path, verify=args.verify)
    summary = ds.summary()
    summary["path"] = str(Path(args.path))
    if args.verify:
        summary["verified"] = True
    return summary


def show(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.data.contact_sheet import write_contact_sheet

    ds = load_dataset(args.path)
    rows = write_contact_sheet(
        ds, args.out, n_objects=args.objects, split=args.split, seed=args.seed
    )
    return {"path": str(Path(args.out)), "objects": rows, "views": ds.n_views}
