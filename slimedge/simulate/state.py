"""What a sweep process keeps between scenarios: the ladder's facts and one accuracy memo.

The accuracy of a configuration depends only on each live view's (level, feature variant) and
on which views are dead, not on the devices: the memo of one scenario is valid for every other
scenario over the same ladder. `ScenarioCache` reads and fills a process-wide `AccuracyStore`
(keyed on the ladder's manifest digest) but counts its `calls` and `hits` as a fresh memo
would. The search stops on those counts (`search._Stall`), so a scenario takes the same path,
and gives the same plan, whatever the process computed before it: a scenario is determined
by its seed, not by the worker it ran on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.ladder.evaluator import Evaluator
from slimedge.ladder.store import LadderError, read_manifest
from slimedge.plan.failures import AccuracyCache, accuracy_job, live_masks
from slimedge.simulate import SimulateError

STORE_CAP = 2_000_000  # memo entries kept per process (~200 MB); cleared when exceeded


class AccuracyStore:
    """Process-wide accuracy values of one ladder, keyed like `ScenarioCache.key`."""

    def __init__(self, cap: int = STORE_CAP) -> None:
        self.values: dict[bytes, float] = {}
        self.cap = cap
        self.computed = 0  # values computed over the process's life
        self.served = 0  # values served to a scenario that another scenario computed

    def room(self, extra: int) -> None:
        if len(self.values) + extra > self.cap:
            self.values.clear()  # only speed is lost: every value can be recomputed


class ScenarioCache(AccuracyCache):
    """An `AccuracyCache` over a shared store whose counters read as a fresh memo's."""

    def __init__(self, ev: Evaluator, weights: np.ndarray | None, store: AccuracyStore) -> None:
        super().__init__(ev, weights)
        self.store = store
        # `memo` (the base class's) holds every value this scenario was given: the store may
        # be cleared (`room`) at any call, so what the scenario has seen is read from there
        variants = getattr(ev, "variants", None)
        # the features a view's level stands for differ by variant (TFLite Micro, float)
        codes = sorted(set(variants)) if variants else []
        self.suffix = (bytes(codes.index(u) for u in variants) + b"|"
                       + ",".join(codes).encode()) if variants else b""

    def key(self, levels: np.ndarray, dead_mask: int) -> bytes:
        return super().key(levels, dead_mask) + self.suffix

    def get_many(self, requests: Sequence[tuple[np.ndarray, Sequence[int]]]) -> list[np.ndarray]:
        keys = [[self.key(lv, int(m)) for m in masks] for lv, masks in requests]
        values, mine = self.store.values, self.memo
        new: set[bytes] = set()
        jobs: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]] = []
        job_keys: list[list[bytes]] = []
        V = self.ev.n_views
        for (lv, masks), ks in zip(requests, keys, strict=True):
            need = []
            for m, k in zip(masks, ks, strict=True):
                if k in mine or k in new:
                    continue
                new.add(k)
                held = values.get(k)
                if held is not None:
                    mine[k] = held
                    self.store.served += 1
                else:
                    need.append((int(m), k))
            if need:
                live = live_masks([m for m, _ in need], V)
                jobs.append((self.ev, np.asarray(lv, np.int64), live, self.weights))
                job_keys.append([k for _, k in need])
        if jobs:
            results = [accuracy_job(job) for job in jobs]
            self.store.room(sum(len(ks) for ks in job_keys))
            for ks, res in zip(job_keys, results, strict=True):
                for k, a in zip(ks, np.asarray(res, float), strict=True):
                    values[k] = mine[k] = float(a)
                self.store.computed += len(ks)
            self.gathers += len(jobs)
        out = [np.array([mine[k] for k in ks]) for ks in keys]
        self.calls += len(new)
        self.hits += sum(len(ks) for ks in keys) - len(new)
        return out


@dataclass
class LadderState:
    """A ladder as the sweep reads it, once per process."""

    root: Path
    manifest: dict[str, Any]
    digest: str  # sha256 of manifest.json
    importance: dict[str, Any]  # view_importance at level 0 (val, int8 features)
    unpruned_accuracy: float  # val, every view live, level 0
    unpruned_worst1: float  # val, level 0, the worst single dead view
    store: AccuracyStore

    @property
    def views(self) -> int:
        return int(self.manifest["views"])


_STATES: dict[tuple[str, str], LadderState] = {}


def ladder_digest(root: str | os.PathLike) -> str:
    from slimedge.artifacts import sha256_file

    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise SimulateError(f"--ladder {root}: no ladder there ({path} is missing; build one "
                            "with `slimedge ladder build`)")
    return sha256_file(path)


def ladder_state(root: str | os.PathLike) -> LadderState:
    """The ladder at `root`, loaded once per process (and again if its manifest changed)."""
    from slimedge.ladder.importance import view_importance

    root = Path(root).resolve()
    digest = ladder_digest(root)
    key = (str(root), digest)
    if key in _STATES:
        return _STATES[key]
    try:
        manifest = read_manifest(root)
        ev = Evaluator.from_ladder(root, "val", manifest=manifest)
    except (LadderError, OSError, KeyError, ValueError) as exc:
        raise SimulateError(f"--ladder {root}: cannot be read ({exc})") from None
    V = ev.n_views
    imp = view_importance(ev)
    loo = np.asarray(imp["leave_one_out"], float)
    full = float(imp["full_accuracy"])
    state = LadderState(root, manifest, digest, imp, full, full - float(loo.max()),
                        AccuracyStore())
    if V < 2:
        raise SimulateError(f"--ladder {root}: {V} view; a fleet sweep needs at least 2")
    _STATES.clear()  # one ladder per process at a time: its memo is what is worth keeping
    _STATES[key] = state
    return state
