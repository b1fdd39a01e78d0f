"""Handlers of `slimedge ladder info`, `slimedge evaluate` and `slimedge importance`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.ladder.store import LadderError, read_manifest


def parse_levels(text: str, manifest: dict[str, Any]) -> list[int]:
    """`0,0,3,...` (level indices, one per view), or one value for every view; a value with a
    decimal point names a level by its fraction (e.g. 0.5)."""
    V = int(manifest["views"])
    values = [t.strip() for t in text.split(",") if t.strip()]
    if len(values) == 1:
        values = values * V
    if len(values) != V:
        raise LadderError(f"--levels: expected {V} values (one per view) or one, got {len(values)}")
    fractions = [float(e["level"]) for e in manifest["levels"]]
    out = []
    for v, t in enumerate(values):
        if "." in t:
            matches = [i for i, f in enumerate(fractions) if abs(f - float(t)) < 1e-9]
            if not matches:
                raise LadderError(f"--levels: view {v}: no level {t} in the ladder "
                                  f"(levels: {fractions})")
            out.append(matches[0])
        else:
            try:
                out.append(int(t))
            except ValueError:
                raise LadderError(f"--levels: view {v}: '{t}' is not a level index") from None
    return out


def parse_variants(text: str | None, views: int) -> list[str] | None:
    """`--features int8,int8-tflm,...,float16`: the feature variant each view's device sends
    (one per view, or one for every view); None when not given (int8 in LiteRT)."""
    from slimedge.ladder.store import FEATURE_VARIANTS

    if not text:
        return None
    values = [t.strip() for t in text.split(",") if t.strip()]
    if len(values) == 1:
        values = values * views
    if len(values) != views:
        raise LadderError(f"--features: expected {views} values (one per view) or one, got "
                          f"{len(values)}")
    for v, t in enumerate(values):
        if t not in FEATURE_VARIANTS:
            raise LadderError(f"--features: view {v}: unknown feature variant '{t}' (known: "
                              f"{', '.join(FEATURE_VARIANTS)})")
    return values


def parse_dead(text: str | None, views: int) -> np.ndarray:
    live = np.ones(views, bool)
    if not text:
        return live
    for t in text.split(","):
        t = t.strip()
        if not t:
            continue
        try:
            v = int(t)
        except ValueError:
            raise LadderError(f"--dead: '{t}' is not a view index") from None
        if not 0 <= v < views:
            raise LadderError(f"--dead: view {v} out of range 0..{views - 1}")
        live[v] = False
    return live


def add_build_options(p: argparse.ArgumentParser) -> None:
    from slimedge.ladder.build import DEFAULT_LEVELS

    p.add_argument("--dataset", required=True, help="dataset directory the model was trained on")
    p.add_argument("--model", required=True, help="model directory (slimedge train --out)")
    p.add_argument("--out", required=True, help="ladder directory to write")
    p.add_argument("--levels", default=",".join(str(x) for x in DEFAULT_LEVELS),
                   help="pruning levels, increasing from 0 (fractions of prunable filters)")
    p.add_argument("--criterion", default="taylor", help="l1 | taylor | bn_scale")
    p.add_argument("--multiple", type=int, default=4, help="round channel counts to this")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="replace an existing ladder built from another model or dataset")


def build(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.data.container import load_dataset
    from slimedge.ladder.build import LadderConfig, build_ladder

    try:
        levels = tuple(float(x) for x in args.levels.split(",") if x.strip())
    except ValueError:
        raise LadderError(f"--levels: not a list of numbers: '{args.levels}'") from None
    cfg = LadderConfig(levels=levels, criterion=args.criterion, channel_multiple=args.multiple,
                       finetune_epochs=args.finetune_epochs, seed=args.seed)
    cfg.validate()
    ds = load_dataset(args.dataset)
    out = Path(args.out)
    if out.exists() and not args.force:
        try:
            old = read_manifest(out)
        except LadderError:
            old = None
        if old is None or old["dataset_hash"] != ds.content_hash():
            raise LadderError(f"{out}: exists and holds a ladder of other inputs (or none); "
                              "use --force to replace it")
    manifest = build_ladder(ds, args.model, out, cfg, progress=not args.json)
    return {"path": str(out), "levels": manifest["levels"], "seconds": manifest["seconds"]}


def info(args: argparse.Namespace) -> dict[str, Any]:
    manifest = read_manifest(args.ladder)
    keep = ("views", "feature_dim", "n_classes", "pool_mode", "backbone", "dataset_hash",
            "model_hash", "criterion", "channel_multiple", "versions")
    summary = {k: manifest[k] for k in keep if k in manifest}
    summary["path"] = str(Path(args.ladder))
    summary["levels"] = manifest["levels"]
    return summary


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.ladder.evaluator import Evaluator

    manifest = read_manifest(args.ladder)
    levels = parse_levels(args.levels, manifest)
    live = parse_dead(args.dead, int(manifest["views"]))
    variants = parse_variants(getattr(args, "features", None), int(manifest["views"]))
    ev = Evaluator.from_ladder(args.ladder, args.split, manifest=manifest, variants=variants)
    out: dict[str, Any] = {
        "accuracy": ev.accuracy(levels, live),
        "levels": levels,
        "features": list(ev.variants or ["int8"] * ev.n_views),
        "dead": [int(v) for v in np.flatnonzero(~live)],
        "split": args.split,
        "objects": int(len(ev.labels)),
    }
    if ev.fallback:
        out["fallback"] = list(ev.fallback.values())
    if args.vs_failed:
        out["vs_failed"] = ev.accuracy_vs_failed(levels)
    return out


def importance(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.artifacts import write_json
    from slimedge.ladder.evaluator import Evaluator
    from slimedge.ladder.importance import view_importance

    manifest = read_manifest(args.ladder)
    levels = parse_levels(args.levels, manifest) if args.levels else None
    ev = Evaluator.from_ladder(args.ladder, args.split)
    result = view_importance(ev, levels)
    result["split"] = args.split
    result["ladder_model_hash"] = manifest["model_hash"]
    if args.out:
        write_json(args.out, result)
        if args.plot:
            from slimedge.ladder.plots import plot_importance

            plot_importance(result, Path(args.out).with_suffix(".png"))
    return result
