"""Figures of the ladder stage: view importance, ladder costs, accuracy vs failed views."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from slimedge.artifacts import atomic_file


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> None:
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")


def plot_importance(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Bars per view: Shapley value, leave-one-out drop, and the published ratio (rescaled)."""
    plt = _pyplot()
    V = len(result["shapley"])
    x = list(range(V))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.27
    shap = result["shapley"]
    loo = result["leave_one_out"]
    total = sum(shap) or 1.0
    ax.bar([i - width for i in x], [s / total for s in shap], width, label="Shapley (share)")
    ax.bar(x, result["ratio"], width, label="published ratio Δdrop/Δsingle (share)")
    ax.bar([i + width for i in x], loo, width, label="leave-one-out drop")
    ax.set_xticks(x)
    ax.set_xlabel("view")
    ax.set_title(f"View importance (full accuracy {result['full_accuracy']:.3f})")
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def plot_ladder_costs(levels: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    plt = _pyplot()
    lv = [e["level"] for e in levels]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    axes[0].plot(lv, [e["latency_ms_int8"] for e in levels], "o-")
    axes[0].set_title("int8 LiteRT latency (ms)")
    axes[1].plot(lv, [e["tflm_arena_bytes"] / 1024 for e in levels], "o-", label="TFLM arena")
    axes[1].plot(lv, [e["tflite_int8_bytes"] / 1024 for e in levels], "s-", label="int8 .tflite")
    axes[1].set_title("memory (KiB)")
    axes[1].legend(fontsize=7)
    axes[2].plot(lv, [e["val_accuracy"] for e in levels], "o-")
    axes[2].set_title("val accuracy (all views at this level)")
    for ax in axes:
        ax.set_xlabel("level")
    _save(fig, path)
    plt.close(fig)


def plot_vs_failed(curves: dict[str, Sequence[dict[str, Any]]], path: str | os.PathLike) -> None:
    """Accuracy vs number of failed views, mean (solid) and worst (dashed), one curve per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, rows in curves.items():
        k = [r["k"] for r in rows]
        line = ax.plot(k, [r["mean"] for r in rows], "o-", label=f"{name} mean")[0]
        ax.plot(k, [r["worst"] for r in rows], "--", color=line.get_color(),
                label=f"{name} worst")
    ax.set_xlabel("failed views k")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
