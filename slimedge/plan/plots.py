"""The Pareto figure written next to a plan (`<plan>.pareto.png`), rendered to bytes so the
caller writes it atomically with the plan."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

BASELINE_MARKERS = {"unpruned": "s", "uniform": "D", "importance_only": "^",
                    "device_only": "v", "published": "P"}


def pareto_png(feasible: Sequence[tuple[float, float]], front: Sequence[Mapping[str, Any]],
               chosen: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]],
               title: str) -> bytes:
    """Latency (log scale) vs expected accuracy: every feasible candidate scored, the front,
    the plan, and the baselines (hollow when they miss a constraint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    try:
        if feasible:
            xs, ys = zip(*feasible, strict=True)
            ax.scatter(xs, ys, s=6, c="0.75", label="feasible candidates", zorder=1)
        if front:
            ax.plot([r["latency_ms"] for r in front], [r["expected_accuracy"] for r in front],
                    "o-", ms=4, c="tab:blue", lw=1, label="Pareto front", zorder=2)
        ax.scatter([chosen["latency_ms"]], [chosen["expected_accuracy"]], marker="*", s=220,
                   c="tab:red", edgecolors="k", label="plan", zorder=4)
        for name, b in baselines.items():
            ok = b["meets"]["all"]
            ax.scatter([b["latency_ms"]], [b["val"]["expected_accuracy"]],
                       marker=BASELINE_MARKERS.get(name, "x"), s=60, zorder=3,
                       facecolors="tab:green" if ok else "none", edgecolors="tab:green",
                       label=f"{name}{'' if ok else ' (misses constraints)'}")
        ax.set_xscale("log")
        ax.set_xlabel("system latency (ms, log scale)")
        ax.set_ylabel("expected accuracy under failures (val)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
