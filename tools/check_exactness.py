#!/usr/bin/env python3
"""Is the evaluator exact? Compare its predictions with what the fleet would compute.

For random mixed-level vectors and live masks, run each view's int8 TFLite branch at its
level on the dataset's test images (LiteRT, as a device runs it), pool the int8 features with
the C++ core and classify with the head's Keras classifier; the evaluator (cached features,
NumPy classifier) must give the same prediction for every frame. Beside it: the float Keras
MVCNN (level-0 Keras branch + Keras head, all views) and the int8 system at level 0, so the
cost of int8 shows.

    tools/check_exactness.py LADDER --dataset DS [--configs 5] [--seed 0] [--json]

Exit status 1 when any prediction differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ladder")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--configs", type=int, default=5, help="random level vectors and masks")
    ap.add_argument("--live", type=float, default=0.7, help="chance that a view is live")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import keras

    from slimedge.data.container import load_dataset
    from slimedge.ladder.device_pipeline import DevicePipeline
    from slimedge.ladder.evaluator import Evaluator
    from slimedge.ladder.store import level_dir, read_manifest
    from slimedge.model.mvcnn import branch_features

    manifest = read_manifest(args.ladder)
    ds = load_dataset(args.dataset)
    if ds.content_hash() != manifest["dataset_hash"]:
        raise SystemExit(f"{args.dataset}: not the dataset the ladder was built from "
                         f"({ds.content_hash()[:12]} vs {manifest['dataset_hash'][:12]})")
    images, labels = ds.subset("test")
    ev = Evaluator.from_ladder(args.ladder, "test")
    device = DevicePipeline(args.ladder, images)
    n_levels, V = len(manifest["levels"]), ds.n_views

    rng = np.random.default_rng(args.seed)
    rows = []
    configs = [(np.zeros(V, int), np.ones(V, bool))]  # level 0, all live: the int8 reference
    for _ in range(args.configs):
        live = rng.random(V) < args.live
        live[rng.integers(V)] = True
        configs.append((rng.integers(0, n_levels, V), live))
    for levels, live in configs:
        want = device.predictions(levels, live)
        got = ev.predictions(levels, live)
        rows.append({"levels": [int(x) for x in levels],
                     "dead": [int(v) for v in np.flatnonzero(~live)],
                     "frames": int(len(want)), "equal": int(np.sum(got == want)),
                     "accuracy_device": float(np.mean(want == labels)),
                     "accuracy_evaluator": float(np.mean(got == labels))})

    branch0 = keras.saving.load_model(level_dir(args.ladder, 0) / "branch.keras", compile=False)
    feats = branch_features(branch0, images)
    logits = device.head.predict([feats, np.ones((len(labels), V), np.float32)], verbose=0)
    float_acc = float(np.mean(np.argmax(logits, axis=1) == labels))
    exact = all(r["equal"] == r["frames"] for r in rows)
    summary = {"ladder": args.ladder, "model_hash": manifest["model_hash"],
               "split": "test", "configs": rows, "exact": exact,
               "float_keras_accuracy": float_acc,
               "int8_level0_accuracy": rows[0]["accuracy_device"]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"evaluator vs device pipeline, test split ({len(labels)} frames), ladder model "
              f"{manifest['model_hash'][:12]}")
        print(f"{'levels':<26}{'dead':<18}{'equal':>10}{'device acc':>12}{'evaluator':>11}")
        for r in rows:
            print(f"{','.join(map(str, r['levels'])):<26}{','.join(map(str, r['dead'])) or '-':<18}"
                  f"{r['equal']:>5}/{r['frames']:<4}{r['accuracy_device']:>12.4f}"
                  f"{r['accuracy_evaluator']:>11.4f}")
        print(f"predictions identical: {'yes' if exact else 'NO'}")
        print(f"float Keras MVCNN (level 0, all views): {float_acc:.4f}; int8 system level 0: "
              f"{rows[0]['accuracy_device']:.4f}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
