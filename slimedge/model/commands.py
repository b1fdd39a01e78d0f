"""Handler of `slimedge train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError


def add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="dataset directory (slimedge data ...)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--config", default=None,
                   help="JSON file of TrainConfig fields (options below override it)")
    p.add_argument("--backbone", default=None, help="branch backbone (vgg, mobilenet)")
    p.add_argument("--width", type=float, default=None)
    p.add_argument("--feature-dim", type=int, default=None)
    p.add_argument("--pooling", default=None, choices=["max", "mean", "weighted"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--failout-rate", type=float, default=None,
                   help="mean fraction of a sample's views dropped (0 = no failout)")
    p.add_argument("--failout-schedule", default=None, choices=["constant", "warmup", "ramp"])
    p.add_argument("--failout-sampler", default=None, choices=["bernoulli", "uniform_k"])
    p.add_argument("--head-failout-epochs", type=int, default=None,
                   help="epochs of the head failout stage after joint training (0 = none)")
    p.add_argument("--head-failout-rate", type=float, default=None,
                   help="the stage's drop rate (default: its sampler's highest)")
    p.add_argument("--head-failout-sampler", default=None, choices=["bernoulli", "uniform_k"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="TensorFlow thread-pool size (default: the CPUs this process may use); "
                   "the same seed and threads on the same CPU give the same model bytes")


def config_from_args(args: argparse.Namespace) -> Any:
    from slimedge.model.train import TrainConfig

    data: dict[str, Any] = {}
    if args.config:
        try:
            data = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SlimEdgeError(f"{args.config}: cannot read train config ({exc})") from exc
    for key in ("backbone", "width", "feature_dim", "pooling", "epochs", "batch_size",
                "learning_rate", "failout_rate", "failout_schedule", "failout_sampler",
                "head_failout_epochs", "head_failout_rate", "head_failout_sampler", "seed",
                "threads"):
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    return TrainConfig.from_dict(data)


def train(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.data.container import load_dataset
    from slimedge.model.train import train as run_training

    config = config_from_args(args)
    ds = load_dataset(args.dataset)
    result = run_training(ds, config, out_dir=args.out, progress=not args.json)
    rec = result.record
    return {
        "out": str(result.out_dir),
        "val_accuracy": result.val_accuracy,
        "test_accuracy": result.test_accuracy,
        "best_epoch": result.best_epoch,
        "epochs_run": rec["epochs_run"],
        "head_failout_kept_epoch": (rec.get("head_failout") or {}).get("best_epoch"),
        "test_accuracy_vs_failed_views": (rec["test"] or {}).get("accuracy_vs_failed_views"),
        "seconds": rec.get("seconds"),
        "files": rec["files"],
        "threads": rec["host"]["threads"],
    }
