"""The sweep's figures (PNG): latency ratio CDFs per generator, constraint satisfaction, and
expected accuracy against latency (relative to the unpruned configuration of each fleet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slimedge.simulate.results import Rows

STYLES = {"per-layer": "-", "authors": "--"}
FILES = {"ratio_cdf": "ratio_cdf.png", "satisfaction": "satisfaction.png",
         "accuracy_latency": "accuracy_latency.png"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(methods: list[str]) -> dict[str, Any]:
    cmap = _plt().get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def ratio_cdf(rows: Rows, path: Path, key: str = "ratio_vs_unpruned") -> None:
    """One panel per generator: the CDF of the plan's (and each baseline's) ratio."""
    plt = _plt()
    gens, methods = rows.values("generator"), rows.values("method")
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(gens), figsize=(6 * len(gens), 4.2), dpi=100,
                             squeeze=False)
    try:
        for ax, gen in zip(axes[0], gens, strict=True):
            for cm in rows.values("cost_model"):
                for m in methods:
                    sel = ((rows["generator"] == gen) & (rows["cost_model"] == cm)
                           & (rows["method"] == m))
                    v = np.sort(rows[key][sel].astype(float))
                    v = v[np.isfinite(v)]
                    if not len(v) or m == "unpruned":
                        continue
                    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post",
                            color=colors[m], linestyle=STYLES.get(cm, ":"),
                            linewidth=2.2 if m == "plan" else 1.1, label=f"{m} ({cm})")
            ax.axvline(4.7, color="grey", linewidth=0.8, linestyle=":")
            ax.set_xscale("log")
            ax.set_xlabel(f"{key.replace('_', ' ')} (log; dotted: the paper's 4.7x)")
            ax.set_ylabel("share of scenarios")
            ax.set_title(f"{gen}: latency ratio CDF")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=6, loc="lower right")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def satisfaction(rows: Rows, path: Path) -> None:
    """Share of feasible scenarios where each method meets every floor, val and test."""
    plt = _plt()
    gens, cms, methods = rows.values("generator"), rows.values("cost_model"), \
        rows.values("method")
    fig, axes = plt.subplots(1, len(gens), figsize=(6 * len(gens), 4.2), dpi=100,
                             squeeze=False)
    try:
        for ax, gen in zip(axes[0], gens, strict=True):
            width = 0.8 / (2 * len(cms))
            for k, (cm, split) in enumerate((c, s) for c in cms for s in ("val", "test")):
                vals = []
                for m in methods:
                    sel = ((rows["generator"] == gen) & (rows["cost_model"] == cm)
                           & (rows["method"] == m) & rows["scenario_feasible"].astype(bool))
                    flags = rows[f"satisfied_{split}"][sel].astype(bool)
                    vals.append(flags.mean() if len(flags) else np.nan)
                ax.bar(np.arange(len(methods)) + (k - len(cms) + 0.5) * width, vals, width,
                       label=f"{cm}, {split}")
            ax.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right",
                          fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("share of feasible scenarios meeting every floor")
            ax.set_title(f"{gen}: constraint satisfaction")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def accuracy_latency(rows: Rows, path: Path) -> None:
    """Expected accuracy (val) against latency / the unpruned latency of the same fleet."""
    plt = _plt()
    gens, methods = rows.values("generator"), rows.values("method")
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(gens), figsize=(6 * len(gens), 4.2), dpi=100,
                             squeeze=False)
    try:
        for ax, gen in zip(axes[0], gens, strict=True):
            for m in methods:
                sel = ((rows["generator"] == gen) & (rows["method"] == m)
                       & np.isfinite(rows["ratio_vs_unpruned"].astype(float)))
                x = 1.0 / rows["ratio_vs_unpruned"][sel].astype(float)
                ax.scatter(x, rows["expected_val"][sel].astype(float), s=10 if m != "plan"
                           else 16, alpha=0.6, color=colors[m], label=m)
            ax.set_xscale("log")
            ax.set_xlabel("latency / unpruned latency of the same fleet (log)")
            ax.set_ylabel("expected accuracy (val)")
            ax.set_title(f"{gen}: expected accuracy vs latency (both cost models)")
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def write_plots(rows: Rows, out: Path) -> dict[str, str]:
    """All three figures into `out`; returns name -> file name."""
    ratio_cdf(rows, out / FILES["ratio_cdf"])
    satisfaction(rows, out / FILES["satisfaction"])
    accuracy_latency(rows, out / FILES["accuracy_latency"])
    return dict(FILES)
