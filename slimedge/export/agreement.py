"""Does the deployed system compute what the Keras model computes?

Two pipelines over the same test frames, both pooled by the C++ core (`slimedge._core.pool`,
the code the aggregator runs):

- device: each view's features from its device's artifact (int8 with the artifact's own
  scale/zero point, or float), pooled, then classified by the exported head;
- float: each view's `branch.keras` at the same level, float features, pooled, then the Keras
  classifier.

Raw top-1 agreement between the two is reported (the system check is the deploy gate,
`slimedge.export.gate`, which uses these pieces); per device, the feature error is
|dequantized - float| relative to the float features' full scale (the largest |float feature|
of that device's views on the test split), so 0.004 means 0.4% of full scale, about one int8
step of a range that spans 0..full scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from slimedge import _core
from slimedge.export import ExportError


@dataclass(frozen=True)
class ViewFeatures:
    """One view's features over N frames: int8 with `scale`/`zero_point`, or float32."""

    features: np.ndarray  # (N, D)
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def dequantized(self) -> np.ndarray:
        """Real values, dequantized by the core (pooling one live view is the identity)."""
        if not self.quantized:
            return np.asarray(self.features, np.float32)
        pooled, _ = _core.pool(np.ascontiguousarray(self.features[:, None, :]),
                               np.ones(1, bool), mode="max",
                               scale=np.array([self.scale], np.float32),
                               zero_point=np.array([self.zero_point], np.int32))
        return np.asarray(pooled, np.float32)


def pool_views(views: Sequence[ViewFeatures | None], mode: str,
               weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pool V views over N frames with the core; a None view is dead in every frame.

    All-int8 views go to the core as int8 with per-view scale/zero point (as the evaluator and
    the aggregator do); a mix of int8 and float views is pooled as float, each int8 view
    dequantized by the core first.
    """
    live = np.array([v is not None for v in views], bool)
    if not live.any():
        raise ExportError("pool: no view has features (every view is dead)")
    first = next(v for v in views if v is not None)
    n, d = first.features.shape
    if weights is None and mode == "weighted":
        weights = np.ones(len(views), np.float32)
    present = [v for v in views if v is not None]
    if all(v.quantized for v in present):
        feats = np.zeros((n, len(views), d), np.int8)
        scale = np.ones(len(views), np.float32)
        zp = np.zeros(len(views), np.int32)
        for i, v in enumerate(views):
            if v is not None:
                feats[:, i] = v.features
                scale[i], zp[i] = v.scale, v.zero_point
        return _core.pool(feats, live, weights, mode=mode, scale=scale, zero_point=zp)
    feats = np.zeros((n, len(views), d), np.float32)
    for i, v in enumerate(views):
        if v is not None:
            feats[:, i] = v.dequantized()
    return _core.pool(feats, live, weights, mode=mode)


@dataclass(frozen=True)
class FeatureError:
    """|dequantized - float| over a device's views, relative to the float full scale."""

    mean_rel: float
    max_rel: float
    max_abs: float
    full_scale: float
    max_lsb: float | None  # max_abs in output quantization steps (int8 artifacts)

    def to_dict(self) -> dict[str, float | None]:
        return {"mean_rel": self.mean_rel, "max_rel": self.max_rel, "max_abs": self.max_abs,
                "full_scale": self.full_scale, "max_lsb": self.max_lsb}


def feature_error(got: Sequence[ViewFeatures], want: Sequence[np.ndarray]) -> FeatureError:
    """Error of a device's features (one entry per view it runs) against the float ones."""
    deq = np.concatenate([g.dequantized().ravel() for g in got])
    ref = np.concatenate([np.asarray(w, np.float32).ravel() for w in want])
    if deq.shape != ref.shape:
        raise ExportError(f"feature error: {deq.size} device values vs {ref.size} float values")
    diff = np.abs(deq.astype(np.float64) - ref)
    full = float(np.max(np.abs(ref))) if ref.size else 0.0
    denom = full if full > 0 else 1.0
    scale = got[0].scale if got and got[0].quantized else None
    return FeatureError(
        mean_rel=float(diff.mean() / denom) if diff.size else 0.0,
        max_rel=float(diff.max() / denom) if diff.size else 0.0,
        max_abs=float(diff.max()) if diff.size else 0.0,
        full_scale=full,
        max_lsb=float(diff.max() / scale) if scale and diff.size else None,
    )


def cache_equality(static: np.ndarray, cached: np.ndarray) -> dict[str, float | int]:
    """How far a static artifact's outputs are from the ladder's cached features (int8: in
    quantization steps, `max_lsb`; float: `max_abs`)."""
    if static.shape != cached.shape:
        raise ExportError(f"static artifact outputs {static.shape} vs cached features "
                          f"{cached.shape}: not the same frames")
    if static.dtype != cached.dtype:
        raise ExportError(f"static artifact outputs {static.dtype} vs cached features "
                          f"{cached.dtype}: not the same format")
    if static.dtype == np.int8:
        diff = np.abs(static.astype(np.int16) - cached.astype(np.int16))
        largest = {"max_lsb": int(diff.max(initial=0))}
    else:
        diff = np.abs(static.astype(np.float64) - cached.astype(np.float64))
        largest = {"max_abs": float(diff.max(initial=0.0))}
    return {"elements": int(diff.size), "equal_fraction": float(np.mean(diff == 0)),
            "differing": int(np.count_nonzero(diff)), **largest}


def top2_margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per frame (how decided the classifier is there)."""
    top2 = np.sort(np.asarray(logits, np.float64), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


@dataclass(frozen=True)
class Agreement:
    """Top-1 agreement of the device pipeline with the float Keras pipeline; `threshold`: a
    floor asked for (informational), None when none was."""

    agreement: float
    frames: int
    disagreeing: tuple[int, ...]  # frame indices
    device_accuracy: float
    float_accuracy: float
    threshold: float | None = None
    # Float top-1 minus top-2 logit: at the disagreeing frames (largest) and over all frames
    # (median). Disagreements only at near-ties say the float model itself is undecided there.
    disagreeing_margin_max: float | None = None
    median_margin: float | None = None

    @property
    def ok(self) -> bool:
        return self.threshold is None or self.agreement >= self.threshold

    def to_dict(self) -> dict[str, object]:
        return {"agreement": self.agreement, "frames": self.frames,
                "disagreeing_frames": list(self.disagreeing)[:20],
                "device_accuracy": self.device_accuracy, "float_accuracy": self.float_accuracy,
                "threshold": self.threshold, "ok": self.ok,
                "disagreeing_margin_max": self.disagreeing_margin_max,
                "median_margin": self.median_margin}


def agreement(device_pred: np.ndarray, float_pred: np.ndarray, labels: np.ndarray, *,
              threshold: float | None = None,
              float_logits: np.ndarray | None = None) -> Agreement:
    device_pred, float_pred = np.asarray(device_pred), np.asarray(float_pred)
    if device_pred.shape != float_pred.shape or device_pred.ndim != 1 or device_pred.size == 0:
        raise ExportError(f"agreement: predictions {device_pred.shape} vs {float_pred.shape}")
    same = device_pred == float_pred
    margin_max = median = None
    if float_logits is not None and np.shape(float_logits)[-1] >= 2:
        margins = top2_margins(float_logits)
        median = float(np.median(margins))
        margin_max = float(margins[~same].max()) if (~same).any() else None
    return Agreement(
        agreement=float(same.mean()),
        frames=int(same.size),
        disagreeing=tuple(int(i) for i in np.flatnonzero(~same)),
        device_accuracy=float(np.mean(device_pred == labels)),
        float_accuracy=float(np.mean(float_pred == labels)),
        threshold=threshold,
        disagreeing_margin_max=margin_max,
        median_margin=median,
    )
