"""A seeded synthetic ladder for tests, benchmarks and the optimality study.

Features are planted so the structure the planner exploits is present and known:

- class prototypes in D dimensions; each view sees its object's prototype with its own
  informativeness (a random gain) and its own confusion with a neighbouring class, so views are
  unequally useful, as real camera positions are;
- each level adds a fixed distortion of the prototypes and more per-object noise, growing with
  the pruning fraction, so more pruning costs accuracy (not perfectly monotonically: the
  distortion is random, as fine-tuned levels are);
- features pass a ReLU and are quantized to int8 (zero point -128), like a real branch's output.

The classifier is a random ReLU layer plus a ridge-regression readout fitted on max/mean-pooled
level-0 features of a separate training sample with random view dropout ("failout"), so it is
a real fitted head, robust to missing views. Level costs follow the shape of measured ladders
(MACs and weights ~(1-p)^2, activations and arena ~(1-p)) and carry every field the cost model
reads. `write_synthetic_ladder` writes the same thing in the ladder store layout, so every tool
that takes `--ladder PATH` runs on it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.artifacts import atomic_dir, write_json
from slimedge.devices.catalog import Board
from slimedge.devices.fleet import Aggregator, Device, Fleet
from slimedge.ladder.classifier import NumpyClassifier
from slimedge.ladder.evaluator import Evaluator
from slimedge.ladder.store import (
    LADDER_FORMAT,
    LADDER_VERSION,
    level_dir,
    save_level_features,
)

DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FEATURE_SCALE = 0.05
FEATURE_ZERO_POINT = -128


@dataclass(frozen=True)
class SyntheticSpec:
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    n_val: int = 300
    n_test: int = 300
    n_train: int = 1500  # fits the classifier readout only; never cached
    views: int = 12
    dim: int = 128
    classes: int = 10
    hidden: int = 128
    mode: str = "max"
    difficulty: float = 1.0  # scales the per-object noise
    seed: int = 0


def _features(spec: SyntheticSpec, n: int, rng: np.random.Generator, world: dict[str, Any]
              ) -> tuple[np.ndarray, np.ndarray]:
    """int8 (L, n, V, D) features and labels of n fresh objects."""
    L, V, D, C = len(spec.fractions), spec.views, spec.dim, spec.classes
    labels = rng.integers(0, C, n)
    proto = world["proto"]  # (L, C, D): per-level distorted prototypes
    gain, confuse, partner = world["gain"], world["confuse"], world["partner"]
    obj_noise = rng.normal(0.0, 1.0, (n, V, D)) * 1.0 * spec.difficulty  # shared by all levels
    out = np.empty((L, n, V, D), np.int8)
    for j, p in enumerate(spec.fractions):
        lvl_noise = rng.normal(0.0, 1.0, (n, V, D)) * (0.5 + 1.3 * p**1.5) * spec.difficulty
        for v in range(V):
            seen = ((1.0 - confuse[v]) * proto[j, labels] + confuse[v] * proto[j, partner[labels]])
            f = np.maximum(gain[v] * seen + obj_noise[:, v] + lvl_noise[:, v], 0.0)
            q = np.round(f / FEATURE_SCALE) + FEATURE_ZERO_POINT
            out[j, :, v] = np.clip(q, -128, 127).astype(np.int8)
    return out, labels


def _world(spec: SyntheticSpec, rng: np.random.Generator) -> dict[str, Any]:
    L, V, D, C = len(spec.fractions), spec.views, spec.dim, spec.classes
    base = rng.normal(0.0, 1.0, (C, D)) * 0.55 + 1.0
    proto = np.stack([base + rng.normal(0.0, 1.0, (C, D)) * (0.45 * p) for p in spec.fractions])
    assert proto.shape == (L, C, D)
    return {
        "proto": proto,
        "gain": rng.uniform(0.35, 1.0, V),
        "confuse": rng.uniform(0.0, 0.45, V),
        "partner": rng.permutation(C),
    }


def _dequantize(q: np.ndarray) -> np.ndarray:
    return FEATURE_SCALE * (q.astype(np.float32) - FEATURE_ZERO_POINT)


def _fit_classifier(spec: SyntheticSpec, feats: np.ndarray, labels: np.ndarray,
                    rng: np.random.Generator) -> NumpyClassifier:
    """Random ReLU layer + ridge readout on pooled features with random view dropout."""
    n, V, D = feats.shape
    x = _dequantize(feats)
    live = rng.random((n, V)) > rng.uniform(0.0, 0.5, (n, 1))
    live[np.arange(n), rng.integers(0, V, n)] = True  # at least one live view
    if spec.mode == "max":
        pooled = np.where(live[..., None], x, -np.inf).max(axis=1)
    else:
        pooled = (x * live[..., None]).sum(axis=1) / live.sum(axis=1, keepdims=True)
    w1 = (rng.normal(0.0, 1.0, (D, spec.hidden)) / math.sqrt(D)).astype(np.float32)
    h = pooled @ w1
    b1 = (-np.median(h, axis=0)).astype(np.float32)
    h = np.maximum(h + b1, 0.0)
    target = np.eye(spec.classes)[labels] * 2.0 - 1.0
    hb = np.c_[h, np.ones(n)]
    ridge = 1e-1 * np.eye(hb.shape[1])
    sol = np.linalg.solve(hb.T @ hb + ridge, hb.T @ target)
    w2, b2 = sol[:-1].astype(np.float32), sol[-1].astype(np.float32)
    return NumpyClassifier([w1, w2], [b1, b2], [True, False])


def synthetic_evaluators(spec: SyntheticSpec = SyntheticSpec()) -> dict[str, Evaluator]:
    """Evaluators of the val and test splits of one synthetic ladder (same world and head)."""
    rng = np.random.default_rng(spec.seed)
    world = _world(spec, rng)
    train, train_labels = _features(spec, spec.n_train, rng, world)
    clf = _fit_classifier(spec, train[0], train_labels, rng)
    out = {}
    L = len(spec.fractions)
    for split, n in (("val", spec.n_val), ("test", spec.n_test)):
        feats, labels = _features(spec, n, rng, world)
        out[split] = Evaluator(feats, np.full(L, FEATURE_SCALE, np.float32),
                               np.full(L, FEATURE_ZERO_POINT, np.int32), labels, clf, spec.mode)
    return out


def synthetic_level_entries(fractions: Sequence[float] = DEFAULT_FRACTIONS, *,
                            macs0: float = 28e6, arena0: int = 400_000,
                            params0: int = 300_000) -> list[dict[str, Any]]:
    """Ladder manifest level entries with every cost field, shaped like a measured ladder."""
    out = []
    for i, p in enumerate(fractions):
        keep = 1.0 - p
        macs = int(macs0 * keep**2 + 0.02 * macs0 * keep + 50_000)
        params = int(params0 * keep**2 + 2_000)
        tfl = {"int8": int(params * 1.1 + 7_000), "dynamic": int(params * 1.1 + 9_500),
               "float16": params * 2 + 9_000, "float32": params * 4 + 9_000}
        act = int(arena0 * 0.8 * keep + 4_000)
        lat = {fmt: 0.05 + macs / (20e9 if fmt in ("int8", "dynamic") else 7e9) * 1e3
               for fmt in tfl}
        out.append({
            "index": i, "level": float(p), "achieved": float(p), "params": params,
            "macs": macs, "tflite_int8_bytes": tfl["int8"], "tflite_bytes": tfl,
            "tflm_arena_bytes": int(arena0 * keep + 12_000), "peak_activation_bytes": act,
            "latency_ms_int8": lat["int8"], "latency_ms": lat, "val_accuracy": math.nan,
        })
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def synthetic_manifest(spec: SyntheticSpec, evaluators: dict[str, Evaluator]) -> dict[str, Any]:
    """The manifest of a synthetic ladder (level accuracies measured with the evaluators)."""
    entries = synthetic_level_entries(spec.fractions)
    for split, ev in evaluators.items():
        for e in entries:
            e[f"{split}_accuracy"] = ev.accuracy([e["index"]] * spec.views)
    clf = evaluators["val"].classifier
    return {
        "format": LADDER_FORMAT, "format_version": LADDER_VERSION,
        "dataset_hash": _digest({"synthetic-dataset": spec.__dict__}),
        "model_hash": _digest({"synthetic-model": spec.__dict__}),
        "views": spec.views, "feature_dim": spec.dim, "n_classes": spec.classes,
        "pool_mode": spec.mode, "backbone": "synthetic", "criterion": "synthetic",
        "head_classifier_macs": int(sum(w.size for w in clf.weights)),
        "synthetic": dict(spec.__dict__, fractions=list(spec.fractions)),
        "levels": entries,
    }


def write_synthetic_ladder(root: str | os.PathLike, spec: SyntheticSpec = SyntheticSpec()
                           ) -> dict[str, Any]:
    """Write a synthetic ladder in the store layout (atomically); returns its manifest."""
    evs = synthetic_evaluators(spec)
    manifest = synthetic_manifest(spec, evs)
    with atomic_dir(root) as tmp:
        for j in range(len(spec.fractions)):
            d = level_dir(tmp, j)
            d.mkdir(parents=True)
            save_level_features(d / "features.npz",
                                {s: np.ascontiguousarray(ev.features[j]) for s, ev in evs.items()},
                                FEATURE_SCALE, FEATURE_ZERO_POINT)
        evs["val"].classifier.save(Path(tmp) / "classifier.npz")
        with open(Path(tmp) / "labels.npz", "wb") as fh:
            np.savez(fh, **{s: ev.labels for s, ev in evs.items()})
        write_json(Path(tmp) / "manifest.json", manifest)
    return manifest


def make_fleet(boards: Sequence[Board], failure_probabilities: Sequence[float], *,
               aggregator: Board | None = None, host: str | None = None,
               name: str = "synthetic") -> Fleet:
    """A fleet of catalog boards, device i (`cam{i:02d}`) seeing view i, as a fleet file
    would give it (for tests and random sub-fleets; boards unchanged, no overrides)."""
    if len(boards) != len(failure_probabilities):
        raise ValueError("make_fleet: one failure probability per board")
    devices = tuple(
        Device(f"cam{i:02d}", b.id, b, (i,), float(p), "synthetic", {}, "")
        for i, (b, p) in enumerate(zip(boards, failure_probabilities, strict=True)))
    if aggregator is not None:
        agg = Aggregator("board", aggregator.id, aggregator)
    else:
        agg = Aggregator("host", host or "gateway")
    return Fleet(name, "synthetic fleet", None, len(devices), devices, agg)


def synthetic_context(constraints: Any = None, *, spec: SyntheticSpec | None = None,
                      boards: Sequence[str] = ("esp32s3", "nrf52840", "rpi4b", "rpi5"),
                      failure_probabilities: Sequence[float] | None = None,
                      aggregator: str | None = "jetson_orin_nano", arena0: int = 400_000,
                      with_test: bool = True) -> Any:
    """A small `PlanContext` over catalog boards and a synthetic ladder (tests, tools).

    Defaults: 4 views (an ESP32-S3 and an nRF52840 that need pruning to fit, a Pi 4, a Pi 5),
    4 levels, 120 objects, D = 16."""
    from slimedge.devices import load_catalog
    from slimedge.plan.context import Constraints, PlanContext

    spec = spec or SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=120, n_test=120,
                                 n_train=600, views=len(boards), dim=16, classes=4, hidden=16,
                                 difficulty=0.5)
    if spec.views != len(boards):
        raise ValueError(f"synthetic_context: {len(boards)} boards for {spec.views} views")
    catalog = load_catalog()
    p = failure_probabilities or [catalog[b].failure.probability for b in boards]
    fleet = make_fleet([catalog[b] for b in boards], p,
                       aggregator=catalog[aggregator] if aggregator else None)
    evs = synthetic_evaluators(spec)
    entries = synthetic_level_entries(spec.fractions, arena0=arena0)
    return PlanContext.build(evs["val"], fleet, entries, constraints or Constraints(),
                             test_evaluator=evs["test"] if with_test else None,
                             ladder={"path": "synthetic", "model_hash": "synthetic",
                                     "dataset_hash": "synthetic"})
