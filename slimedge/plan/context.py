"""The instance being planned: which evaluator, which devices, which constraints.

Placement is the fixed mapping of the fleet file: each view runs on the one device whose
camera sees it. A device may see several views (a Pi with two cameras): it runs one artifact,
so its views share one level, and it costs what `device_costs` says (branches in series
through one interpreter). A view seen by several devices would need a placement variable; that
is not modelled, so such fleets are refused with a message rather than planned approximately.

Devices listed as down (`down`, the controller's `--down`) are permanently failed: their views
are never live, so every failure set includes them, and they add no time, energy or memory.

Arrays are indexed by view: `fits[v, j]` is whether view v's device fits level j (with all of
its views at j), `total_ms[v, j]` that device's time for a frame, `model_bytes[v, j]` its model
file (counted on the device's first view), `energy_mj[v, j]` the view's share of the device's
energy per frame (they sum to the device's), `life_h[v, j]` the device's battery life.

Failures are independent per device: failure sets are enumerated over the up devices and
expressed as dead-view bitmasks (what the memo, the evaluator and the runtime's contingency
table are keyed by); `nominal_mask` is the set with no (further) failure: the down views.
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
from slimedge.devices.energy import DEFAULT_FRAME_PERIOD_MS
from slimedge.devices.fleet import Fleet
from slimedge.devices.units import suggest
from slimedge.ladder.evaluator import Evaluator
from slimedge.ladder.store import INT8, LadderError, feature_variant, read_manifest
from slimedge.plan import PlanError
from slimedge.plan.device_costs import DeviceCosts, device_costs
from slimedge.plan.failures import FailureSets, enumerate_failure_sets, mask_of, sets_up_to


def fleet_variants(fleet: Fleet, formats: Mapping[str, str] | None = None) -> list[str]:
    """Per view, the features its device sends (`slimedge.ladder.store.feature_variant`): the
    format the device runs (`formats`, else its board's preferred one), in TFLite Micro on a
    microcontroller board. The evaluator pools these, so what the planner measures is what
    the fleet computes."""
    from slimedge.devices.catalog import MCU

    out = [INT8] * fleet.views
    for d in fleet.devices:
        fmt = (formats or {}).get(d.id) or d.board.preferred_format
        try:
            variant = feature_variant(fmt, d.board.board_class == MCU)
        except LadderError as exc:
            raise PlanError(f"fleet {fleet.name!r}: device {d.id!r} ({d.board.id}): "
                            f"{exc}") from None
        for v in d.views:
            if 0 <= v < fleet.views:
                out[v] = variant
    return out


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
    down: tuple[str, ...] = ()  # device ids permanently failed
    frame_period_ms: float = DEFAULT_FRAME_PERIOD_MS  # for battery life
    # derived, per view
    device: DeviceCosts = field(init=False)
    fits: np.ndarray = field(init=False)
    total_ms: np.ndarray = field(init=False)
    model_bytes: np.ndarray = field(init=False)
    energy_mj: np.ndarray = field(init=False)
    life_h: np.ndarray = field(init=False)
    failure_p: np.ndarray = field(init=False)  # (V,) of each view's device
    up: np.ndarray = field(init=False)  # (V,) bool: the view's device is not down
    nominal_mask: int = field(init=False)  # dead views with no failure: the down devices'
    lead_view: np.ndarray = field(init=False)  # (V,) first view of each view's device
    up_rows: tuple[int, ...] = field(init=False)  # cost-table rows of the up devices

    def __post_init__(self) -> None:
        rows = np.asarray(self.view_row, np.int64)
        V, L = len(rows), self.cost.total_ms.shape[1]
        dev = device_costs(self.cost, self.fleet, self.frame_period_ms)
        self.device = dev
        ids = [d.id for d in self.fleet.devices]
        down_rows = {ids.index(d) for d in self.down}
        self.up = np.array([int(r) not in down_rows for r in rows])
        self.nominal_mask = mask_of(np.flatnonzero(~self.up))
        self.up_rows = tuple(r for r in range(len(ids)) if r not in down_rows
                             and len(self.fleet.devices[r].views))
        first = {}
        for v in range(V):
            first.setdefault(int(rows[v]), v)
        self.lead_view = np.array([first[int(r)] for r in rows], np.int64)
        up = self.up[:, None]
        self.fits = np.where(up, dev.fits[rows], True)
        self.total_ms = np.where(up, dev.time_ms[rows], 0.0)
        once = (self.lead_view == np.arange(V))[:, None] & up
        self.model_bytes = np.where(once, dev.storage_needed[rows], 0).astype(np.int64)
        share = np.array([dev.views[r] for r in rows], float)[:, None]
        self.energy_mj = np.where(up, dev.energy_mj[rows] / share, 0.0)
        self.life_h = np.where(up, dev.life_h[rows], np.inf)
        self.failure_p = np.array([self.fleet.devices[r].failure_probability for r in rows])
        assert self.fits.shape == (V, L)

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

    @property
    def up_views(self) -> np.ndarray:
        return np.flatnonzero(self.up)

    def device_of(self, view: int) -> str:
        return self.cost.devices[int(self.view_row[view])]

    def board_of(self, view: int) -> str:
        return self.cost.boards[int(self.view_row[view])]

    def who(self, view: int) -> str:
        return f"{self.device_of(view)} ({self.board_of(view)})"

    def groups(self) -> list[np.ndarray]:
        """Views of each up device (one artifact, one level), by first view."""
        leads = np.unique(self.lead_view[self.up])
        return [np.flatnonzero(self.lead_view == lead) for lead in leads]

    def least_pruned_fitting(self) -> np.ndarray:
        """(V,) smallest fitting level index per view, -1 where none fits."""
        any_fit = self.fits.any(axis=1)
        return np.where(any_fit, self.fits.argmax(axis=1), -1)

    def canonical(self, X: np.ndarray) -> np.ndarray:
        """Configurations (P, V) with each device's views at its first view's level and the
        down devices' views at a fixed level (they never run, so their level is moot)."""
        X = np.asarray(X, np.int64)
        out = X[..., self.lead_view]
        if not self.up.all():
            out[..., ~self.up] = self.down_level[~self.up]
        return out

    @property
    def down_level(self) -> np.ndarray:
        """(V,) the level a down view is written with: its device's least-pruned fitting one
        alone (the device's level before it went down, as far as the plan can tell), else 0."""
        rows = self.view_row
        alone = self.cost.fits[rows]
        return np.where(alone.any(axis=1), alone.argmax(axis=1), 0)

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
        """System latency: slowest live device's frame time (its branches + transfers), plus
        the aggregator."""
        x = np.asarray(levels, np.int64)
        per = self.total_ms[np.arange(self.views), x]
        if live is not None:
            per = per[np.asarray(live, bool)]
        return float((per.max() if per.size else 0.0) + self.aggregator_ms)

    def latencies(self, X: np.ndarray) -> np.ndarray:
        """(P,) system latency of P configurations (P, V)."""
        return self.total_ms[np.arange(self.views), X].max(axis=1) + self.aggregator_ms

    def energies(self, X: np.ndarray) -> np.ndarray:
        """(P,) energy per frame (mJ), summed over the up devices."""
        return self.energy_mj[np.arange(self.views), X].sum(axis=1)

    def lives(self, X: np.ndarray) -> np.ndarray:
        """(P,) battery life (h) of the weakest battery-powered up device; inf when none."""
        return self.life_h[np.arange(self.views), X].min(axis=1)

    @property
    def has_battery(self) -> bool:
        return bool(np.isfinite(self.life_h).any())

    # ------------------------------------------------------------------ failure sets
    def _device_view_masks(self) -> np.ndarray:
        return np.array([mask_of(self.fleet.devices[r].views) for r in self.up_rows],
                        np.int64)

    def _to_views(self, device_masks: np.ndarray) -> np.ndarray:
        dvm = self._device_view_masks()
        out = np.full(len(device_masks), self.nominal_mask, np.int64)
        for i, m in enumerate(np.asarray(device_masks, np.int64).tolist()):
            for d in range(len(dvm)):
                if m >> d & 1:
                    out[i] |= dvm[d]
        return out

    def failure_sets(self) -> FailureSets:
        """Failure sets of the up devices with probability > epsilon, as dead-view masks (the
        down views always dead); the first is the nominal set."""
        p = [self.fleet.devices[r].failure_probability for r in self.up_rows]
        fs = enumerate_failure_sets(p, self.constraints.epsilon)
        return FailureSets(self._to_views(fs.masks), fs.probabilities, fs.neglected_mass,
                           fs.epsilon)

    def k_masks(self, k: int | None = None) -> np.ndarray:
        """Dead-view masks of every failure set of 1..k up devices (k: the report k)."""
        k = self.constraints.report_k if k is None else k
        k = min(int(k), len(self.up_rows) - 1)
        if k < 1:
            return np.zeros(0, np.int64)
        return self._to_views(sets_up_to(len(self.up_rows), k))

    def set_probability(self, view_mask: int) -> float:
        """Probability that exactly the up devices with a dead view in `view_mask` fail."""
        out = 1.0
        for r in self.up_rows:
            p = self.fleet.devices[r].failure_probability
            dead = any(int(view_mask) >> v & 1 for v in self.fleet.devices[r].views)
            out *= p if dead else 1.0 - p
        return out

    def with_constraints(self, constraints: Constraints) -> PlanContext:
        return replace(self, constraints=constraints.validate(self.views))

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, evaluator: Evaluator, fleet: Fleet, level_entries: Sequence[Mapping[str, Any]],
              constraints: Constraints, *, feature_dim: int | None = None,
              head_classifier_macs: int | None = None, pool_mode: str | None = None,
              view_weights: Sequence[float] | None = None,
              test_evaluator: Evaluator | None = None, ladder: Mapping[str, Any] | None = None,
              formats: Mapping[str, str] | None = None, down: Sequence[str] = (),
              cost_model: str | None = None, link_latency: str = "expected",
              frame_period_ms: float = DEFAULT_FRAME_PERIOD_MS) -> PlanContext:
        """Check that fleet and ladder agree, cost every level on every device, time the
        aggregator (a catalog board, or a host timed by the ladder's host latency fit)."""
        V = evaluator.n_views
        where = (ladder or {}).get("path") or "the ladder"
        if fleet.views != V:
            raise PlanError(f"fleet {fleet.name!r} has {fleet.views} views "
                            f"({len(fleet.devices)} devices); {where} has {V} views")
        if len(level_entries) != evaluator.n_levels:
            raise PlanError(f"{where}: {len(level_entries)} level entries but cached features "
                            f"for {evaluator.n_levels} levels")
        rows = np.full(V, -1, np.int64)
        for r, device in enumerate(fleet.devices):
            for v in device.views:
                if rows[v] >= 0:
                    other = fleet.devices[int(rows[v])].id
                    raise PlanError(f"fleet {fleet.name!r}: view {v} is seen by devices "
                                    f"{other!r} and {device.id!r}; the planner places each "
                                    "view on the one device that sees it")
                rows[v] = r
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            raise PlanError(f"fleet {fleet.name!r}: view {int(missing[0])} is seen by no device")
        ids = [d.id for d in fleet.devices]
        down = tuple(dict.fromkeys(str(d) for d in down))
        for d in down:
            if d not in ids:
                raise PlanError(f"down: fleet {fleet.name!r} has no device {d!r}"
                                f"{suggest(d, ids)} (devices: {', '.join(ids)})")
        if len(down) == len(ids):
            raise PlanError(f"down: every device of fleet {fleet.name!r} is down; nothing to "
                            "plan")
        n_up = len(ids) - len(down)
        if constraints.k_failures >= n_up:
            raise PlanError(f"k_failures: {constraints.k_failures} failures of {n_up} up "
                            f"device(s) leave nothing to classify with; expected 0.."
                            f"{n_up - 1}")
        if isinstance(frame_period_ms, bool) or not isinstance(frame_period_ms, int | float) \
                or not math.isfinite(frame_period_ms) or frame_period_ms <= 0:
            raise PlanError(f"frame_period_ms: expected a time > 0 in ms, got "
                            f"{frame_period_ms!r}")
        D = int(feature_dim if feature_dim is not None else evaluator.features.shape[-1])
        try:
            cost = CostTable.build(level_entries, fleet, D, formats=formats,
                                   cost_model=cost_model, link_latency=link_latency)
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
                   ladder=dict(ladder or {}), down=down,
                   frame_period_ms=float(frame_period_ms))

    @classmethod
    def from_ladder(cls, root: str | os.PathLike, fleet: Fleet, constraints: Constraints, *,
                    split: str = "val", test_split: str | None = "test",
                    **options: Any) -> PlanContext:
        """A context over a ladder on disk; `test_split` is also scored where cached.
        `options`: `down`, `cost_model`, `link_latency`, `frame_period_ms`, `formats` (`build`)."""
        root = Path(root)
        manifest = read_manifest(root)
        # A fleet of another size is refused by `build`, naming both sizes.
        variants = (fleet_variants(fleet, options.get("formats"))
                    if fleet.views == int(manifest["views"]) else None)
        ev = Evaluator.from_ladder(root, split, manifest=manifest, variants=variants)
        test = None
        if test_split and test_split != split:
            try:
                test = Evaluator.from_ladder(root, test_split, manifest=manifest,
                                             variants=variants)
            except LadderError:
                test = None  # a ladder without that split: figures on `split` only
        from slimedge.artifacts import sha256_file

        info = {"path": str(root), "model_hash": manifest["model_hash"],
                "dataset_hash": manifest["dataset_hash"],
                "manifest_sha256": sha256_file(root / "manifest.json"), "split": split,
                "test_split": test_split if test is not None else None,
                "feature_variants": list(ev.variants or [])}
        if ev.fallback:
            info["feature_fallback"] = list(ev.fallback.values())
        return cls.build(ev, fleet, manifest["levels"], constraints,
                         feature_dim=int(manifest["feature_dim"]),
                         head_classifier_macs=manifest.get("head_classifier_macs"),
                         pool_mode=manifest["pool_mode"],
                         view_weights=manifest.get("view_weights"), test_evaluator=test,
                         ladder=info, **options)
