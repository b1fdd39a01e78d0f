"""The timeline of a fleet run as one PNG: accuracy, live views and latency per frame over time,
with every injected failure, its detection and the contingency switch marked.

Host side (matplotlib). Times are seconds after the first frame's capture time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# One colour per kind of mark, so the legend reads the same on every run.
MARK_STYLE = {
    "kill": ("tab:red", "-"),
    "detected": ("tab:orange", "--"),
    "switch": ("tab:green", ":"),
    "restart": ("tab:blue", "-"),
    "rejoined": ("tab:cyan", "--"),
    "broker-restart": ("tab:purple", "-"),
    "replanned": ("tab:brown", "-."),  # the controller's new plan
    "pushed": ("tab:pink", "-"),  # every part of the new deployment acknowledged
}

LABELLED = ("kill", "restart", "broker-restart")


@dataclass(frozen=True)
class Mark:
    kind: str  # a key of MARK_STYLE
    t_s: float
    label: str  # e.g. the device


@dataclass(frozen=True)
class TimelineData:
    t_s: np.ndarray  # (n,) capture time of each frame of the run
    answered: np.ndarray  # (n,) bool
    correct: np.ndarray  # (n,) bool (False where not answered)
    reference_correct: np.ndarray  # (n,) bool: the evaluator on the same live set
    predicted_accuracy: np.ndarray  # (n,) the plan's accuracy of the live set (nan: unknown)
    live_views: np.ndarray  # (n,) views used (0 where not answered)
    latency_ms: np.ndarray  # (n,) capture -> answer (nan where not answered)
    deadline_ms: float | None  # the per-frame deadline after capture, if known
    marks: Sequence[Mark]
    title: str


def rolling_accuracy(correct: np.ndarray, answered: np.ndarray, window: int) -> np.ndarray:
    """Correct / answered over the last `window` frames at each point (fewer at the start;
    nan where none of them was answered: lost frames are marked apart, not counted wrong)."""
    def sums(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(np.asarray(x, np.float64))])
        idx = np.arange(1, len(x) + 1)
        return c[idx] - c[np.maximum(0, idx - window)]

    num, den = sums(correct), sums(answered)
    return np.divide(num, den, out=np.full(len(num), np.nan), where=den > 0)


def plot_timeline(data: TimelineData, out: Path, window: int = 20) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1, 1.4]})
    ax_acc, ax_live, ax_lat = axes
    t = data.t_s
    if len(t):
        ax_acc.plot(t, rolling_accuracy(data.correct, data.answered, window), color="black",
                    lw=1.5, label=f"fleet (answered of the last {window} frames)")
        ax_acc.plot(t, rolling_accuracy(data.reference_correct, data.answered, window),
                    color="tab:gray", lw=1, ls="--", label="evaluator, same live sets")
        ax_acc.plot(t, data.predicted_accuracy, color="tab:olive", lw=1, ls=":",
                    label="plan's accuracy of the live set")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title(data.title)

    answered = data.answered
    ax_live.step(t[answered], data.live_views[answered], where="post", color="black", lw=1)
    lost = ~answered
    if lost.any():
        ax_live.plot(t[lost], np.zeros(int(lost.sum())), "x", color="tab:red", ms=5,
                     label=f"lost ({int(lost.sum())})")
        ax_live.legend(loc="lower left", fontsize=8)
    top = int(data.live_views.max()) if len(t) else 1
    ax_live.set_ylim(-0.5, top + 0.8)
    ax_live.set_ylabel("live views")

    ax_lat.plot(t[answered], data.latency_ms[answered], ".", ms=3, color="black")
    if data.deadline_ms is not None:
        ax_lat.axhline(data.deadline_ms, color="tab:red", lw=0.8, ls="--", label="deadline")
        ax_lat.legend(loc="upper left", fontsize=8)
    ax_lat.set_ylabel("latency ms\n(capture → answer)")
    ax_lat.set_xlabel("seconds after the first frame")

    seen: set[str] = set()
    for m in data.marks:
        color, style = MARK_STYLE[m.kind]
        for ax in axes:
            ax.axvline(m.t_s, color=color, ls=style, lw=1,
                       label=m.kind if ax is ax_acc and m.kind not in seen else None)
        seen.add(m.kind)
        if m.kind in LABELLED:  # the cause is named; its effects share its colour key
            ax_acc.annotate(m.label, (m.t_s, 0.02), fontsize=7, color=color, rotation=90,
                            ha="right", va="bottom")
    ax_acc.legend(loc="best", fontsize=8, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
