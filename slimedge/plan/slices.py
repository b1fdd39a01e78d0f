"""Configurations by system latency: the slice of configurations whose slowest device takes
exactly a given time, and the size of the box below a threshold.

System latency is a max over devices, so the configurations that fit split into disjoint
slices, one per distinct device time t: those whose slowest device takes exactly t. A slice is
a union of grids (the devices before the first one at t below it, that one at t, the rest at
or below t), so it is enumerated without listing anything twice, and the box below t (every
slice up to t) has a closed-form size. Both the oracle and the search's exact enumeration of
small boxes visit configurations this way. A device with several views is one variable.
"""

from __future__ import annotations

import math

import numpy as np

from slimedge.plan.context import PlanContext


def grid(parts: list[np.ndarray]) -> np.ndarray:
    """(prod len, n) every combination of one value from each part."""
    grids = np.meshgrid(*parts, indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


def at_latency(choices: list[np.ndarray], times: list[np.ndarray], t: float) -> np.ndarray:
    """(n, G) every combination (one level per device) whose slowest device takes exactly t."""
    out = []
    for i in range(len(choices)):
        if not np.any(times[i] == t):
            continue
        parts = ([c[tm < t] for c, tm in zip(choices[:i], times[:i], strict=True)]
                 + [choices[i][times[i] == t]]
                 + [c[tm <= t] for c, tm in zip(choices[i + 1:], times[i + 1:], strict=True)])
        if all(len(p) for p in parts):
            out.append(grid(parts))
    return np.concatenate(out) if out else np.zeros((0, len(choices)), np.int64)


class Slices:
    """The fitting levels of each up device and their times, by device (first view)."""

    def __init__(self, ctx: PlanContext) -> None:
        self.ctx = ctx
        self.groups = ctx.groups()
        leads = [int(g[0]) for g in self.groups]
        self.choices = [np.flatnonzero(ctx.fits[v]) for v in leads]
        self.times = [ctx.total_ms[v, c] for v, c in zip(leads, self.choices, strict=True)]
        self.base = ctx.canonical(np.zeros(ctx.views, np.int64))

    @property
    def combinations(self) -> int:
        """Fitting configurations in the whole space."""
        return math.prod(len(c) for c in self.choices)

    def box_size(self, t: float) -> int:
        """Configurations whose slowest device takes <= t."""
        return math.prod(int(np.sum(tm <= t)) for tm in self.times)

    def at(self, t: float) -> np.ndarray:
        """(n, G) the slice at t, one level per device."""
        return at_latency(self.choices, self.times, float(t))

    def configurations(self, combos: np.ndarray) -> np.ndarray:
        """(n, V) full level vectors of (n, G) per-device levels."""
        X = np.repeat(self.base[None, :], len(combos), axis=0)
        for gi, g in enumerate(self.groups):
            X[:, g] = combos[:, gi][:, None]
        return X
