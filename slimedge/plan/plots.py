"""The Pareto figure written next to a plan (`<plan>.pareto.png`), rendered to bytes so the
caller writes it atomically with the plan: expected accuracy against latency (left) and against
energy per frame (right), so the trade between all three shows."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

BASELINE_MARKERS = {"unpruned": "s", "uniform": "D", "uniform_fit": "d", "importance_only": "^",
                    "device_only": "v", "published": "P"}


def pareto_png(feasible: Sequence[tuple[float, float, float]],
               front: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any],
               baselines: Mapping[str, Mapping[str, Any]], title: str) -> bytes:
    """Every feasible candidate scored (latency, expected accuracy, energy), the front, the plan,
    and the baselines (hollow when they miss a constraint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=100, sharey=True)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.12, top=0.9, wspace=0.06)
    try:
        for ax, key, label in ((axes[0], "latency_ms", "system latency (ms, log scale)"),
                               (axes[1], "energy_mj", "energy per frame (mJ, log scale)")):
            col = 0 if key == "latency_ms" else 2
            if feasible:
                ax.scatter([f[col] for f in feasible], [f[1] for f in feasible], s=6, c="0.75",
                           label="feasible candidates", zorder=1)
            if front:
                ax.scatter([r[key] for r in front], [r["expected_accuracy"] for r in front],
                           s=18, c="tab:blue", label="Pareto front", zorder=2)
            ax.scatter([chosen[key]], [chosen["expected_accuracy"]], marker="*", s=220,
                       c="tab:red", edgecolors="k", label="plan", zorder=4)
            for name, b in baselines.items():
                ok = b["meets"]["all"]
                ax.scatter([b[key]], [b["val"]["expected_accuracy"]],
                           marker=BASELINE_MARKERS.get(name, "x"), s=60, zorder=3,
                           facecolors="tab:green" if ok else "none", edgecolors="tab:green",
                           label=f"{name}{'' if ok else ' (misses constraints)'}")
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.grid(True, alpha=0.3)
        axes[0].set_ylabel("expected accuracy under failures (val)")
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle(title, fontsize=10)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
