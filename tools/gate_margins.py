#!/usr/bin/env python3
"""How far does a correct int8 quantization move the float model's top-2 margins, in units of
the deploy gate's one-step logit quantization error eps_i? (The measurement behind
`slimedge.export.gate.DELTA_STEPS`.)

For each ladder, split and level vector, the correct int8 system is the evaluator itself (the
ladder's cached int8 features -> core pooling -> classifier; a deployment that passes the
gate's exactness check computes exactly this), the float pipeline each view's `branch.keras`
-> core pooling -> the same classifier. Per frame: |margin change| = max over classes k of
|(z8_top - z8_k) - (zf_top - zf_k)| (top: the float top class), and the ratio to eps_i.
A frame can flip only if its float margin is below its margin change, so the gate's rule
(flips allowed only at margin <= DELTA_STEPS x eps_i) is safe while the largest ratio stays
well below DELTA_STEPS.

    .venv/bin/python tools/gate_margins.py LADDER --dataset DS [LADDER --dataset DS ...]
        [--splits test,val] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _level_vectors(n_levels: int, views: int) -> list[list[int]]:
    vectors = [[0] * views, [n_levels - 1] * views, [v % n_levels for v in range(views)]]
    out = []
    for v in vectors:
        if v not in out:
            out.append(v)
    return out


def measure(ladder: str, dataset: str, split: str) -> list[dict]:
    import keras

    from slimedge import _core
    from slimedge.data.container import load_dataset
    from slimedge.export.agreement import top2_margins
    from slimedge.export.gate import DELTA_STEPS, GateReference, quantization_logit_error
    from slimedge.ladder.store import level_dir, read_manifest
    from slimedge.model.mvcnn import branch_features

    manifest = read_manifest(ladder)
    ds = load_dataset(dataset)
    if ds.content_hash() != manifest["dataset_hash"]:
        raise SystemExit(f"{dataset}: not the dataset {ladder} was built from")
    images = np.asarray(ds.images[ds.indices(split)])
    n_levels = len(manifest["levels"])
    floats = {j: branch_features(keras.saving.load_model(level_dir(ladder, j) / "branch.keras",
                                                         compile=False), images)
              for j in range(n_levels)}
    ref = GateReference.from_ladder(ladder, floats, None, split=split)
    ev, clf = ref.evaluator, ref.classifier
    rows = []
    for levels in _level_vectors(n_levels, ev.n_views):
        live = np.ones(ev.n_views, bool)
        feats, scale, zp = ev.gather(levels)
        pooled8, _ = _core.pool(feats, live, mode=ev.mode, scale=scale, zero_point=zp)
        flo = np.stack([floats[lv][:, v] for v, lv in enumerate(levels)], 1)
        pooledf, _ = _core.pool(flo, live, mode=ev.mode)
        z8, zf = clf.logits(pooled8).astype(np.float64), clf.logits(pooledf).astype(np.float64)
        top = np.argmax(zf, 1)
        rows_i = np.arange(len(top))
        change = np.max(np.abs((z8 - z8[rows_i, top][:, None]) - (zf - zf[rows_i, top][:, None])),
                        axis=1)
        eps = quantization_logit_error(ref, levels, live, pooledf, top)
        margin = top2_margins(zf)
        ratio = change / eps
        flips = np.argmax(z8, 1) != top
        delta = DELTA_STEPS * eps
        rows.append({"ladder": ladder, "model_hash": manifest["model_hash"][:12], "split": split,
                     "levels": levels, "frames": int(len(top)),
                     "ratio_max": float(ratio.max()), "ratio_median": float(np.median(ratio)),
                     "margin_median": float(np.median(margin)),
                     "delta_median": float(np.median(delta)),
                     "near_ties": int(np.sum(margin <= delta)), "disagree": int(flips.sum()),
                     "disagree_above_delta": int(np.sum(flips & (margin > delta)))})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ladder", nargs="+")
    ap.add_argument("--dataset", action="append", required=True,
                    help="one per ladder, in the same order")
    ap.add_argument("--splits", default="test,val")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if len(args.dataset) != len(args.ladder):
        raise SystemExit("give one --dataset per ladder")

    import tensorflow as tf

    from slimedge import __version__
    from slimedge.export.gate import DELTA_STEPS

    rows = [r for lad, ds in zip(args.ladder, args.dataset, strict=True)
            for split in args.splits.split(",") for r in measure(lad, ds, split)]
    info = {"slimedge": __version__, "tensorflow": tf.__version__, "numpy": np.__version__,
            "cpu": platform.processor() or platform.machine(), "delta_steps": DELTA_STEPS,
            "largest_ratio": max(r["ratio_max"] for r in rows)}
    if args.json:
        print(json.dumps({"info": info, "rows": rows}))
        return 0
    print(f"margin change of the correct int8 system / eps_i (gate: delta = {DELTA_STEPS:g} "
          f"eps_i); slimedge {info['slimedge']}, TF {info['tensorflow']}, {info['cpu']}")
    print(f"{'model':<13}{'split':<6}{'levels':<16}{'frames':>7}{'ratio max':>10}"
          f"{'median':>8}{'margin med':>11}{'delta med':>10}{'near ties':>10}{'flips':>6}"
          f"{'>delta':>7}")
    for r in rows:
        lv = ",".join(str(x) for x in r["levels"][:4]) + ("…" if len(r["levels"]) > 4 else "")
        print(f"{r['model_hash']:<13}{r['split']:<6}{lv:<16}{r['frames']:>7}"
              f"{r['ratio_max']:>10.3f}{r['ratio_median']:>8.3f}{r['margin_median']:>11.3g}"
              f"{r['delta_median']:>10.3g}{r['near_ties']:>10}{r['disagree']:>6}"
              f"{r['disagree_above_delta']:>7}")
    headroom = DELTA_STEPS / info["largest_ratio"]
    print(f"largest ratio: {info['largest_ratio']:.3f} (headroom {headroom:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
