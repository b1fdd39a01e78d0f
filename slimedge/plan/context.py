"""The instance being planned: which evaluator, which devices, which constraints.

Placement is the fixed mapping of the fleet file: each view runs on the one device whose
camera sees it, and each device runs one view. (Every fleet file so far is one device per
view. A device hosting several views would need summed memory and serialized latency in the
cost model, and a view seen by several devices a placement variable; neither is modelled, so
such fleets are refused with a message rather than planned approximately.)

Arrays are indexed by view: `fits[v, j]` is whether level j fits view v's device,
`total_ms[v, j]` its inference + transfer time there, `model_bytes[v, j]` its model file size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.devices.cost import (
    CostModelError,
    CostTable,
    aggregator_ms,
    calibrate_host,
    head_macs,
)
from slimedge.devices.fleet import Fleet
from slimedge.ladder.evaluator import Evaluator
from slimedge.ladder.store import LadderError, read_manifest
from slimedge.plan import PlanError


@dataclass(frozen=True)
class Constraints:
    """What a plan must meet. Accuracies are fractions in [0, 1] on the val split.

    `k_failures`: the failure sets of size 1..k are the ones the worst-k accuracy is taken over
    and the contingency table covers; `min_accuracy_k` (optional) is a floor on that worst case.
    `epsilon`: failure sets with probability <= epsilon are left out of the expected accuracy
    (their total probability is reported as the bound of the neglected mass).
    """

    min_accuracy: float = 0.0
    k_failures: int = 1
    min_accuracy_k: float | None = None
    max_latency_ms: float | None = None
    epsilon: float = 2e-4

    def validate(self, views: int) -> Constraints:
        for name in ("min_accuracy", "min_accuracy_k"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise PlanError(f"{name}: expected an accuracy in [0, 1], got {value!r}")
        k = self.k_failures
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k < views:
            raise PlanError(f"k_failures: expected a whole number in 0..{views - 1} "
                            f"(the fleet has {views} views), got {k!r}")
        if self.min_accuracy_k is not None and k == 0:
            raise PlanError("min_accuracy_k: a floor under failures needs k_failures >= 1")
        lat = self.max_latency_ms
        if lat is not None and (not isinstance(lat, int | float) or not math.isfinite(lat)
                                or lat <= 0):
            raise PlanError(f"max_latency_ms: expected a time > 0 in ms, got {lat!r}")
        eps = self.epsilon
        if not isinstance(eps, int | float) or not 0.0 <= eps < 1.0:
            raise PlanError(f"epsilon: expected a probability in [0, 1), got {eps!r}")
        return self

    @property
    def report_k(self) -> int:
        """k used for the worst-k figure and the contingency table (at least 1)."""
        return max(1, int(self.k_failures))

    def to_dict(self) -> dict[str, Any]:
        return {"min_accuracy": self.min_accuracy, "k_failures": self.k_failures,
                "min_accuracy_k": self.min_accuracy_k, "max_latency_ms": self.max_latency_ms,
                "epsilon": self.epsilon}


@dataclass
class PlanContext:
    """Everything the search, the baselines and the oracle score a configuration against."""

    evaluator: Evaluator  # val split: the search is scored here
    cost: CostTable  # rows follow `fleet.devices`
    fleet: Fleet
    constraints: Constraints
    view_row: np.ndarray  # (V,) cost-table row of each view's device
    aggregator_ms: float
    pool_mode: str
    base_weights: np.ndarray | None  # (V,) float32 for weighted/mean heads, None for max
    test_evaluator: Evaluator | None = None
    ladder: Mapping[str, Any] = field(default_factory=dict)  # provenance (path, hashes)
    # derived, per view
    fits: np.ndarray = field(init=False)
    total_ms: np.ndarray = field(init=False)
    model_bytes: np.ndarray = field(init=False)
    failure_p: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rows = self.view_row
        self.fits = self.cost.fits[rows]
        self.total_ms = self.cost.total_ms[rows]
        self.model_bytes = self.cost.storage_needed[rows].astype(np.int64)
        self.failure_p = np.array([self.fleet.devices[r].failure_probability for r in rows])

    # ------------------------------------------------------------------ basic facts
    @property
    def views(self) -> int:
        return self.evaluator.n_views

    @property
    def levels(self) -> int:
        return self.evaluator.n_levels

    @property
    def fractions(self) -> np.ndarray:
        return self.cost.levels

    def device_of(self, view: int) -> str:
        return self.cost.devices[int(self.view_row[view])]

    def board_of(self, view: int) -> str:
        return self.cost.boards[int(self.view_row[view])]

    def who(self, view: int) -> str:
        return f"{self.device_of(view)} ({self.board_of(view)})"

    def least_pruned_fitting(self) -> np.ndarray:
        """(V,) smallest fitting level index per view, -1 where none fits."""
        any_fit = self.fits.any(axis=1)
        return np.where(any_fit, self.fits.argmax(axis=1), -1)

    def repair_map(self) -> np.ndarray:
        """(V, L): level j of view v -> the least-pruned fitting level >= j (more pruning means
        a smaller model), else the most-pruned fitting level below j; -1 if nothing fits."""
        V, L = self.fits.shape
        out = np.full((V, L), -1, np.int64)
        for v in range(V):
            ok = np.flatnonzero(self.fits[v])
            if not ok.size:
                continue
            for j in range(L):
                up = ok[ok >= j]
                out[v, j] = up[0] if up.size else ok[-1]
        return out

    def latency(self, levels: Sequence[int] | np.ndarray,
                live: np.ndarray | None = None) -> float:
        """System latency: slowest live device's inference + transfer, plus the aggregator."""
        x = np.asarray(levels, np.int64)
        per = self.total_ms[np.arange(self.views), x]
        if live is not None:
            per = per[np.asarray(live, bool)]
        return float((per.max() if per.size else 0.0) + self.aggregator_ms)

    def latencies(self, X: np.ndarray) -> np.ndarray:
        """(P,) system latency of P configurations (P, V)."""
        return self.total_ms[np.arange(self.views), X].max(axis=1) + self.aggregator_ms

    def with_constraints(self, constraints: Constraints) -> PlanContext:
        return replace(self, constraints=constraints.validate(self.views))

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, evaluator: Evaluator, fleet: Fleet, level_entries: Sequence[Mapping[str, Any]],
              constraints: Constraints, *, feature_dim: int | None = None,
              head_classifier_macs: int | None = None, pool_mode: str | None = None,
              view_weights: Sequence[float] | None = None,
              test_evaluator: Evaluator | None = None, ladder: Mapping[str, Any] | None = None,
              formats: Mapping[str, str] | None = None) -> PlanContext:
        """Check that fleet and ladder agree, cost every level on every device, time the
        aggregator (a catalog board, or a host timed by the ladder's host latency fit)."""
        V = evaluator.n_views
        where = (ladder or {}).get("path") or "the ladder"
        if fleet.views != V:
            raise PlanError(f"fleet {fleet.name!r} has {fleet.views} views "
                            f"({len(fleet.devices)} devices); {where} has {V} views")
        if len(fleet.devices) != V:
            raise PlanError(f"fleet {fleet.name!r} has {len(fleet.devices)} devices for {V} "
                            f"views; the planner places one view per device "
                            f"({where} has {V} views)")
        if len(level_entries) != evaluator.n_levels:
            raise PlanError(f"{where}: {len(level_entries)} level entries but cached features "
                            f"for {evaluator.n_levels} levels")
        rows = np.full(V, -1, np.int64)
        for r, device in enumerate(fleet.devices):
            if len(device.views) != 1:
                raise PlanError(f"fleet {fleet.name!r}: device {device.id!r} sees views "
                                f"{list(device.views)}; the planner places exactly one view per "
                                "device")
            rows[device.views[0]] = r
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            raise PlanError(f"fleet {fleet.name!r}: view {int(missing[0])} is seen by no device")
        D = int(feature_dim if feature_dim is not None else evaluator.features.shape[-1])
        try:
            cost = CostTable.build(level_entries, fleet, D, formats=formats)
        except CostModelError as exc:
            raise PlanError(f"{where}: {exc}") from None
        clf_macs = (int(head_classifier_macs) if head_classifier_macs is not None
                    else int(sum(w.size for w in evaluator.classifier.weights)))
        macs = head_macs(V, D, clf_macs)
        agg = fleet.aggregator
        fit = None if agg.kind == "board" else calibrate_host(list(level_entries), "int8")
        agg_ms = aggregator_ms(macs, agg, host_fit=fit)
        mode = pool_mode or evaluator.mode
        if mode != evaluator.mode:
            raise PlanError(f"{where}: pool_mode {mode!r} but the evaluator pools with "
                            f"{evaluator.mode!r}")
        base = None
        if mode in ("weighted", "mean"):
            base = (np.ones(V, np.float32) if view_weights is None
                    else np.asarray(view_weights, np.float32))
            if base.shape != (V,) or not np.all(np.isfinite(base)) or np.any(base < 0):
                raise PlanError(f"{where}: view_weights must be {V} finite values >= 0")
        return cls(evaluator=evaluator, cost=cost, fleet=fleet,
                   constraints=constraints.validate(V), view_row=rows, aggregator_ms=agg_ms,
                   pool_mode=mode, base_weights=base, test_evaluator=test_evaluator,
                   ladder=dict(ladder or {}))

    @classmethod
    def from_ladder(cls, root: str | os.PathLike, fleet: Fleet, constraints: Constraints, *,
                    split: str = "val", test_split: str | None = "test") -> PlanContext:
        """A context over a ladder on disk; `test_split` is also scored where cached."""
        root = Path(root)
        manifest = read_manifest(root)
        ev = Evaluator.from_ladder(root, split, manifest=manifest)
        test = None
        if test_split and test_split != split:
            try:
                test = Evaluator.from_ladder(root, test_split, manifest=manifest)
            except LadderError:
                test = None  # a ladder without that split: figures on `split` only
        from slimedge.artifacts import sha256_file

        info = {"path": str(root), "model_hash": manifest["model_hash"],
                "dataset_hash": manifest["dataset_hash"],
                "manifest_sha256": sha256_file(root / "manifest.json"), "split": split,
                "test_split": test_split if test is not None else None}
        return cls.build(ev, fleet, manifest["levels"], constraints,
                         feature_dim=int(manifest["feature_dim"]),
                         head_classifier_macs=manifest.get("head_classifier_macs"),
                         pool_mode=manifest["pool_mode"],
                         view_weights=manifest.get("view_weights"), test_evaluator=test,
                         ladder=info)
