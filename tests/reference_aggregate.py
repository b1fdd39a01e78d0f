"""NumPy reference for the C++ aggregation core. It lives only with the tests (and the benchmark
that compares against it): the product has exactly one implementation, in cpp/."""

from __future__ import annotations

import numpy as np


def dequantize(features: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """int8 (B, V, D) -> float32, x = scale[v] * (q - zero_point[v])."""
    zp = zero_point.astype(np.float32)[None, :, None]
    return (features.astype(np.float32) - zp) * scale.astype(np.float32)[None, :, None]


def pool_reference(
    features: np.ndarray,
    mask: np.ndarray,
    weights: np.ndarray | None = None,
    mode: str = "max",
    scale: np.ndarray | None = None,
    zero_point: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batch (B, V, D) pooling as the core defines it; returns (pooled (B, D), empty (B,))."""
    x = features
    if x.dtype == np.int8:
        x = dequantize(x, scale, zero_point)
    B, V, _ = x.shape
    live = np.broadcast_to(np.asarray(mask).astype(bool), (B, V))
    if mode == "max":
        masked = np.where(live[:, :, None], x, -np.inf)
        out = masked.max(axis=1)
        empty = ~live.any(axis=1)
    else:
        if mode == "mean":
            w = live.astype(np.float32)
        else:
            w = live * np.broadcast_to(np.asarray(weights, np.float32), (B, V))
        total = w.sum(axis=1)
        empty = total <= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (w[:, :, None] * x).sum(axis=1) / total[:, None]
    out[empty] = 0.0
    return out.astype(np.float32), empty


def renormalize_reference(base: np.ndarray, live: np.ndarray) -> np.ndarray:
    base = np.asarray(base, np.float64)
    live = np.asarray(live).astype(bool)
    if not live.any():
        return np.zeros_like(base, dtype=np.float32)
    live_total = base[live].sum()
    if live_total <= 0:
        total = base.sum() if base.sum() > 0 else 1.0
        return np.where(live, total / live.sum(), 0.0).astype(np.float32)
    return np.where(live, base * (base.sum() / live_total), 0.0).astype(np.float32)
