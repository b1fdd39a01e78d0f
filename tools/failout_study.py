#!/usr/bin/env python3
"""Failout study: train the same MVCNN with and without failout (and other rates/schedules),
then measure test accuracy vs the number of failed views k = 0…V−1.

Failout comes in two places (see slimedge/model/head_failout.py): joint (branch and head,
RATE/SCHEDULE/SAMPLER) and the head failout stage (head alone on frozen branch features,
HEAD_EPOCHS epochs, 0 = none; the stage's other settings are TrainConfig's defaults).

Each variant differs from the base training config only in its failout settings (same data,
seed, epochs, early stopping). Accuracy vs k is the mean (and worst) over failure sets of
size k: exact where there are at most --max-subsets sets, otherwise a seeded sample. Features
come from the float Keras branch, pooled by the C++ core as the aggregator pools them.

A variant whose model directory already holds a run of the same config on the same dataset
is not retrained (the study resumes).

    tools/failout_study.py DATASET --out DIR [--variant NAME:RATE:SCHEDULE:SAMPLER ...]
        [--epochs 30] [--json]

    VARIANT: NAME:RATE:SCHEDULE:SAMPLER[:HEAD_EPOCHS]  (HEAD_EPOCHS default: TrainConfig's)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEFAULT_VARIANTS = (
    "none:0:constant:bernoulli:0",
    "joint25:0.25:ramp:bernoulli:0",
    "headonly:0:constant:bernoulli",
    "ramp25:0.25:ramp:bernoulli",
)


def parse_variant(text: str) -> tuple[str, dict]:
    try:
        name, rate, schedule, sampler, *head = text.split(":")
        if len(head) > 1:
            raise ValueError
        out = {"failout_rate": float(rate), "failout_schedule": schedule,
               "failout_sampler": sampler}
        if head:
            out["head_failout_epochs"] = int(head[0])
        return name, out
    except ValueError:
        raise SystemExit(f"--variant: expected NAME:RATE:SCHEDULE:SAMPLER[:HEAD_EPOCHS], got "
                         f"'{text}'") from None


def curve_for(model_dir: Path, dataset, max_subsets: int, seed: int) -> dict:
    from slimedge.ladder.classifier import NumpyClassifier
    from slimedge.ladder.evaluator import Evaluator
    from slimedge.model.head import head_classifier, head_info
    from slimedge.model.mvcnn import branch_features
    from slimedge.model.train import load_trained

    branch, head, record = load_trained(model_dir)
    images, labels = dataset.subset("test")
    feats = branch_features(branch, images).astype(np.float32)
    ev = Evaluator(feats[None], None, None, labels,
                   NumpyClassifier.from_keras(head_classifier(head)), head_info(head)["pooling"])
    rows = ev.accuracy_vs_failed([0] * ev.n_views, max_subsets=max_subsets, seed=seed)
    return {"record": record, "curve": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--out", required=True, help="folder for the variants' models")
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-subsets", type=int, default=1000,
                    help="exact mean over failure sets up to this many per k (C(12,k) <= 924)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from slimedge.data.container import load_dataset
    from slimedge.model.train import TrainConfig, train

    ds = load_dataset(args.dataset)
    digest = ds.content_hash()
    out = Path(args.out)
    results = []
    for text in args.variant or DEFAULT_VARIANTS:
        name, failout = parse_variant(text)
        cfg = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed,
                          failout_warmup_epochs=3, failout_ramp_epochs=3, **failout)
        model_dir = out / name
        record_path = model_dir / "train.json"
        reused = False
        if record_path.is_file():
            rec = json.loads(record_path.read_text())
            reused = rec["config"] == cfg.to_dict() and rec["dataset"]["content_hash"] == digest
        t0 = time.perf_counter()
        if not reused:
            print(f"[study] training {name}: {failout}", file=sys.stderr, flush=True)
            train(ds, cfg, out_dir=model_dir, progress=not args.json)
        seconds = time.perf_counter() - t0
        res = curve_for(model_dir, ds, args.max_subsets, args.seed)
        curve = res["curve"]
        full = curve[0]["mean"]
        results.append({
            "variant": name, **failout, "reused": reused,
            "train_seconds": round(seconds, 1),
            "best_epoch": res["record"]["best_epoch"], "epochs_run": res["record"]["epochs_run"],
            "val_accuracy": res["record"]["val_accuracy"],
            "head_failout_epochs": cfg.head_failout_epochs,
            "head_failout_kept_epoch": (res["record"].get("head_failout") or {}).get("best_epoch"),
            "test_accuracy": full,
            "vs_failed": curve,
            "ratio_9_dead": (curve[9]["mean"] / full) if len(curve) > 9 and full else None,
        })

    summary = {"dataset": digest, "epochs": args.epochs, "seed": args.seed, "results": results}
    if args.json:
        print(json.dumps(summary))
        return 0
    V = len(results[0]["vs_failed"])
    ks = [k for k in (0, 3, 6, 9, V - 1) if k < V]
    print(f"test accuracy vs failed views (mean over failure sets), dataset {digest[:12]}")
    print(f"{'variant':<12}{'rate':>6} {'schedule':<9}{'sampler':<11}"
          + f"{'head':>5}" + "".join(f"{'k=' + str(k):>8}" for k in ks)
          + f"{'k9/k0':>8}{'epochs':>8}")
    for r in results:
        means = {row["k"]: row["mean"] for row in r["vs_failed"]}
        ratio = f"{r['ratio_9_dead']:.3f}" if r["ratio_9_dead"] is not None else "-"
        print(f"{r['variant']:<12}{r['failout_rate']:>6.2f} {r['failout_schedule']:<9}"
              f"{r['failout_sampler']:<11}{r['head_failout_epochs']:>5}"
              + "".join(f"{means[k]:>8.3f}" for k in ks)
              + f"{ratio:>8}{r['best_epoch']:>5}/{r['epochs_run']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
