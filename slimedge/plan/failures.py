"""Failure sets and the memoized accuracy engine.

Devices fail independently, device i with probability p_i within the fleet's failure window;
a failure set S (the dead views, as a bitmask: bit v = view v dead) has probability
P(S) = prod_{i in S} p_i * prod_{i not in S} (1 - p_i).

Expected accuracy is summed exactly over every failure set with P(S) > epsilon (enumerated by a
depth-first search that prunes on a bound, so the 2^V sets are never listed); the probability
of the sets left out, m = 1 - sum P(S), is reported: the true expected accuracy lies in
[E, E + m], E being the kept sum (left-out sets counted as accuracy 0).

Worst-k accuracy is the minimum over every failure set of size 1..k (so a plan meeting a k-floor
also meets it with fewer failures), enumerated exactly: C(V, 1) + ... + C(V, k) sets.

The accuracy of (levels, failure set) is deterministic, and does not depend on the levels of
the dead views, so it is memoized under the levels of the live views only. Missing entries are
computed in batches: one gather of the level features, one C++ pooling call per live mask
(`slimedge._core.pool`, the runtime's code), and one classifier call for the whole batch.
Batches can run on a pymoo-style runner (`runner(f, jobs) -> list`, e.g.
`pymoo.parallelization.dask.DaskParallelization(client)`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimedge.failure_sets import (  # noqa: F401  (the planner's names for them)
    bits,
    live_masks,
    mask_of,
    sets_up_to,
    views_of,
)
from slimedge.ladder.evaluator import Evaluator

DEAD = 255  # level code of a dead view in a memo key

Runner = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


# --------------------------------------------------------------------------- failure sets


@dataclass(frozen=True)
class FailureSets:
    """Failure sets kept for the expected accuracy, with their probabilities."""

    masks: np.ndarray  # int64 (K,), dead-view bitmasks, by size then value; 0 = no failure
    probabilities: np.ndarray  # (K,)
    neglected_mass: float  # total probability of the sets left out
    epsilon: float

    def __len__(self) -> int:
        return len(self.masks)


def set_probability(mask: int, p: np.ndarray) -> float:
    dead = bits(mask, len(p))
    return float(np.prod(np.where(dead, p, 1.0 - p)))


def enumerate_failure_sets(p: Sequence[float], epsilon: float) -> FailureSets:
    """Every failure set with probability > epsilon (the empty set always included)."""
    p = np.asarray(p, float)
    V = len(p)
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError(f"failure probabilities must be in [0, 1], got {p.tolist()}")
    always = [v for v in range(V) if p[v] >= 1.0]
    free = [v for v in range(V) if 0.0 < p[v] < 1.0]
    base_mask = mask_of(always)
    p0 = float(np.prod([1.0 - p[v] for v in free])) if free else 1.0
    odds = {v: p[v] / (1.0 - p[v]) for v in free}
    order = sorted(free, key=lambda v: -odds[v])
    # Bound on what adding any subset of order[i:] can multiply a probability by.
    gain = [1.0] * (len(order) + 1)
    for i in range(len(order) - 1, -1, -1):
        gain[i] = gain[i + 1] * max(1.0, odds[order[i]])
    found: list[tuple[int, float]] = []

    def visit(start: int, mask: int, prob: float) -> None:
        if prob > epsilon:
            found.append((mask, prob))
        for i in range(start, len(order)):
            q = prob * odds[order[i]]
            if q * gain[i + 1] <= epsilon:
                # Views are in decreasing odds and the bound covers any later odds > 1, so no
                # later view can do better from here.
                break
            visit(i + 1, mask | (1 << order[i]), q)

    if p0 * gain[0] > epsilon:
        visit(0, base_mask, p0)
    found.sort(key=lambda mp: (bin(mp[0]).count("1"), mp[0]))
    masks = np.array([m for m, _ in found], np.int64)
    probs = np.array([q for _, q in found])
    return FailureSets(masks, probs, max(0.0, 1.0 - float(probs.sum())), float(epsilon))


# --------------------------------------------------------------------------- accuracy


def accuracy_job(job: tuple[Evaluator, np.ndarray, np.ndarray, np.ndarray | None]) -> np.ndarray:
    """One runner job: (evaluator, levels, live masks (K, V), weights) -> (K,) accuracies."""
    ev, levels, live, weights = job
    return ev.accuracy_over_masks(levels, live, weights)


class AccuracyCache:
    """Memoized accuracy of (levels, failure set) with the head's base weights.

    `calls`: accuracy values computed (cache misses); `hits`: values served from the memo;
    `gathers`: level vectors whose features were gathered (one per computed batch).
    """

    def __init__(self, ev: Evaluator, weights: np.ndarray | None = None,
                 runner: Runner | None = None, evaluator_ref: Any = None) -> None:
        self.ev = ev
        self.weights = None if weights is None else np.asarray(weights, np.float32)
        self.runner = runner
        # What a job carries as its evaluator: the evaluator itself, or (Dask) a future of it.
        self.evaluator_ref = ev if evaluator_ref is None else evaluator_ref
        self.memo: dict[bytes, float] = {}
        self.calls = 0
        self.hits = 0
        self.gathers = 0

    def key(self, levels: np.ndarray, dead_mask: int) -> bytes:
        k = np.asarray(levels, np.uint8).copy()
        k[bits(dead_mask, len(k))] = DEAD
        return k.tobytes()

    def get(self, levels: Sequence[int], dead_masks: Sequence[int]) -> np.ndarray:
        return self.get_many([(np.asarray(levels, np.int64), dead_masks)])[0]

    def get_many(self, requests: Sequence[tuple[np.ndarray, Sequence[int]]]) -> list[np.ndarray]:
        """Accuracies for several (levels, dead masks) requests; the missing entries of all of
        them are computed in one round of jobs (one job per level vector)."""
        keys = [[self.key(lv, int(m)) for m in masks] for lv, masks in requests]
        jobs: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]] = []
        job_keys: list[list[bytes]] = []
        pending: set[bytes] = set()
        V = self.ev.n_views
        for (lv, masks), ks in zip(requests, keys, strict=True):
            need = [(int(m), k) for m, k in zip(masks, ks, strict=True)
                    if k not in self.memo and k not in pending]
            if not need:
                continue
            pending.update(k for _, k in need)
            live = live_masks([m for m, _ in need], V)
            jobs.append((self.evaluator_ref, np.asarray(lv, np.int64), live, self.weights))
            job_keys.append([k for _, k in need])
        if jobs:
            results = (self.runner(accuracy_job, jobs) if self.runner is not None
                       else [accuracy_job((self.ev, *job[1:])) for job in jobs])
            self.gathers += len(jobs)
            for ks, res in zip(job_keys, results, strict=True):
                for k, a in zip(ks, np.asarray(res, float), strict=True):
                    self.memo[k] = float(a)
                self.calls += len(ks)
        out = []
        for ks in keys:
            vals = np.array([self.memo[k] for k in ks])
            out.append(vals)
        self.hits += sum(len(ks) for ks in keys) - sum(len(k) for k in job_keys)
        return out


def expected_accuracy(acc: np.ndarray, sets: FailureSets) -> float:
    """sum P(S) acc(S) over the kept sets (left-out mass counted as accuracy 0)."""
    return float(np.dot(sets.probabilities, acc))
