"""How much each view position tells: a linear probe per view, and all views together.

For every view position v, a multinomial logistic regression on the pixels of view v (features
standardized on `train`, L2-regularized, fitted with L-BFGS) is trained on `train` and scored on
`test`. The 12-view (all-view) figure uses the same per-view models and averages their
log-probabilities per object (late fusion, as a multi-view CNN pools its branches).

    .venv/bin/python tools/probe_views.py DATASET [--json] [--l2 0.05] [--pool 2]

A useful multi-view dataset shows accuracy varying across positions and one view well below
all views together.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

# One BLAS thread: the matrices are small, and spinning BLAS threads on a shared 2-core machine
# made each fit 50x slower. Must be set before NumPy loads its BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import slimedge  # noqa: E402
from slimedge.data.container import load_dataset, read_meta  # noqa: E402
from slimedge.errors import SlimEdgeError  # noqa: E402


def features(images: np.ndarray, pool: int) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H/pool * W/pool) float32 mean-pooled pixels."""
    x = images.astype(np.float32) / 255.0
    if pool > 1:
        n, h, w = x.shape
        h2, w2 = h // pool, w // pool
        x = x[:, : h2 * pool, : w2 * pool].reshape(n, h2, pool, w2, pool).mean(axis=(2, 4))
    return x.reshape(len(x), -1)


def fit_softmax(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: mean cross-entropy + l2/2 * |W|^2, by L-BFGS."""
    n, d = x.shape
    onehot = np.zeros((n, n_classes), dtype=np.float32)
    onehot[np.arange(n), y] = 1.0

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: d * n_classes].reshape(d, n_classes).astype(np.float32)
        b = theta[d * n_classes :].astype(np.float32)
        z = x @ w + b
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -float((onehot * logp).sum()) / n + 0.5 * l2 * float((w * w).sum())
        g = (np.exp(logp) - onehot) / n
        gw = x.T @ g + l2 * w
        return loss, np.concatenate([gw.ravel(), g.sum(axis=0)]).astype(np.float64)

    theta0 = np.zeros(d * n_classes + n_classes)
    res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return (
        res.x[: d * n_classes].reshape(d, n_classes).astype(np.float32),
        res.x[d * n_classes :].astype(np.float32),
    )


def log_probs(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    z = x @ w + b
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def probe(path: str, *, l2: float, pool: int, max_iter: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds = load_dataset(path)
    meta = read_meta(path)
    train, test = ds.indices("train"), ds.indices("test")
    y_train, y_test = ds.labels[train], ds.labels[test]
    k = len(ds.class_names)
    per_view, fused = [], np.zeros((len(test), k), dtype=np.float64)
    for v in range(ds.n_views):
        xtr = features(np.asarray(ds.images[train, v, :, :, 0]), pool)
        xte = features(np.asarray(ds.images[test, v, :, :, 0]), pool)
        mean, std = xtr.mean(axis=0), xtr.std(axis=0)
        std[std < 1e-3] = 1.0  # always-background pixels carry nothing
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
        w, b = fit_softmax(xtr, y_train, k, l2, max_iter)
        lp = log_probs(xte, w, b)
        fused += lp
        cam = ds.cameras[v] if ds.cameras else {}
        per_view.append({
            "view": v,
            "azimuth": cam.get("azimuth"),
            "elevation": cam.get("elevation"),
            "accuracy": float((lp.argmax(axis=1) == y_test).mean()),
        })  # fmt: skip
    accs = np.array([p["accuracy"] for p in per_view])
    best = int(accs.argmax())
    return {
        "dataset": str(path),
        "content_hash": meta["content_hash"],
        "objects": ds.n_objects,
        "views": ds.n_views,
        "classes": k,
        "image_size": list(ds.image_size),
        "train": int(len(train)),
        "test": int(len(test)),
        "generator": {
            key: ds.params[key]
            for key in ("generator_version", "seed", "objects_per_class", "yaw_jitter_deg")
            if key in ds.params
        },
        "probe": {
            "model": "multinomial logistic regression on standardized pixels, L-BFGS",
            "l2": l2,
            "pool": pool,
            "max_iter": max_iter,
            "all_views_fusion": "mean of per-view log-probabilities",
        },
        "per_view": per_view,
        "all_views": float((fused.argmax(axis=1) == y_test).mean()),
        "best_single_view": float(accs[best]),
        "best_view": best,
        "mean_single_view": float(accs.mean()),
        "worst_single_view": float(accs.min()),
        "chance": 1.0 / k,
        "versions": {
            "slimedge": slimedge.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "python": platform.python_version(),
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"dataset {r['dataset']}  content hash {r['content_hash'][:16]}")
    print(
        f"{r['objects']} objects, {r['views']} views, {r['classes']} classes, "
        f"{r['image_size'][0]}x{r['image_size'][1]} px; train {r['train']}, test {r['test']}"
    )
    p = r["probe"]
    print(f"probe: {p['model']}, l2={p['l2']}, pool={p['pool']}, max_iter={p['max_iter']}")
    print()
    print(f"{'view':>4}  {'azimuth':>7}  {'elevation':>9}  {'accuracy':>8}")
    for v in r["per_view"]:
        print(
            f"{v['view']:>4}  {v['azimuth']:>7.1f}  {v['elevation']:>9.1f}  {v['accuracy']:>8.3f}"
        )
    print()
    print(f"1 view : mean {r['mean_single_view']:.3f}  best {r['best_single_view']:.3f} "
          f"(view {r['best_view']})  worst {r['worst_single_view']:.3f}")  # fmt: skip
    print(f"{r['views']} views: {r['all_views']:.3f}  ({p['all_views_fusion']}); "
          f"chance {r['chance']:.3f}")  # fmt: skip
    vs = r["versions"]
    print(
        f"slimedge {vs['slimedge']}, numpy {vs['numpy']}, scipy {vs['scipy']}, "
        f"python {vs['python']}; generator {r['generator']}; {r['seconds']} s"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="dataset directory (slimedge data generate / import)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--l2", type=float, default=0.05, help="L2 strength on the weights")
    ap.add_argument("--pool", type=int, default=1, help="mean-pool pixels k x k first")
    ap.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations per view")
    args = ap.parse_args(argv)
    if args.pool < 1 or args.l2 < 0 or args.max_iter < 1:
        print("probe_views: --pool and --max-iter must be >= 1, --l2 >= 0", file=sys.stderr)
        return 2
    try:
        result = probe(args.dataset, l2=args.l2, pool=args.pool, max_iter=args.max_iter)
    except SlimEdgeError as exc:
        print(f"probe_views: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
