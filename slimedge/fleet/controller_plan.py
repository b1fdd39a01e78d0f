"""What the controller reads and writes in a work folder, and its replan and export steps.

A work folder as `slimedge demo` leaves it (or any with the same names)::

    ladder/  dataset/  importance.json (optional)  plan.json  deploy/  keys/private_key.pem

The controller adds::

    deployments/<n>-down-<dev>[+<dev>...]/   a signed deployment planned with those devices down
    deployments/<n>-full/                    one planned again with every device
    deployments/<n>-....plan.json            the plan each was exported from
    deployments/current.json                 the deployment the fleet was last switched to
    deployments/controller.jsonl             every decision (slimedge.fleet.controller)

A new deployment never replaces an older one: the last good one stays where it is, and
`current.json` names the one in service (absent: `deploy/` with `plan.json`).

Replanning calls the same function as `slimedge plan --down DEV` (`slimedge.plan.commands.plan`)
with the constraints, search settings and cost model the current plan records, so a replan is
the plan a person would get from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.artifacts import sha256_file, write_json
from slimedge.errors import SlimEdgeError

DEPLOYMENTS_DIR = "deployments"
CURRENT_FILE = "current.json"
PLAN_SUFFIX = ".plan.json"


class ControllerError(SlimEdgeError):
    """A work folder the controller cannot act on (names the file or field), or a step that
    failed."""


@dataclass(frozen=True)
class Current:
    """The deployment in service and the plan it was exported from."""

    deploy: Path
    plan: Path
    down: tuple[str, ...]
    index: int  # the <n> of deployments/<n>-...; 0 for the work folder's own deploy/

    def to_dict(self) -> dict[str, Any]:
        return {"deploy": str(self.deploy), "plan": str(self.plan), "down": list(self.down),
                "index": self.index}


@dataclass(frozen=True)
class Predicted:
    """The planner's figures for one configuration (val split: what the floors are on; test:
    the split a local fleet replays)."""

    accuracy: float  # nominal: the down devices' views dead, no other failure
    expected_accuracy: float | None
    worst_k_accuracy: float | None
    latency_ms: float | None
    test_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "expected_accuracy": self.expected_accuracy,
                "worst_k_accuracy": self.worst_k_accuracy, "latency_ms": self.latency_ms,
                "test_accuracy": self.test_accuracy}


def predicted_of(plan: dict[str, Any]) -> Predicted:
    p = plan["predicted"]
    val, test = p["val"], p.get("test") or {}
    return Predicted(float(val["accuracy"]), val.get("expected_accuracy"),
                     val.get("worst_k_accuracy"), p.get("latency_ms"), test.get("accuracy"))


def degraded_of(plan: dict[str, Any], ladder: Path, dead: Sequence[str]) -> Predicted:
    """The plan's accuracy with `dead` devices' views dead, pooled with the contingency row of
    that failure set (the aggregator's switch); the evaluator where the table has no row."""
    dead_set = set(dead) | set(plan.get("down") or [])
    for row in plan["contingency"]["rows"]:
        if set(row["dead_devices"]) | set(plan.get("down") or []) == dead_set:
            acc = row["accuracy"]
            return Predicted(float(acc["val"]), None, None, row.get("latency_ms"),
                             acc.get("test"))
    import numpy as np

    from slimedge.ladder.evaluator import Evaluator

    levels = [int(v["level_index"]) for v in plan["views"]]
    live = np.array([v["device"] not in dead_set for v in plan["views"]])
    out = {}
    for split in ("val", "test"):
        ev = Evaluator.from_ladder(ladder, split)
        out[split] = float(ev.accuracy(levels, live)) if live.any() else 0.0
    return Predicted(out["val"], None, None, plan["predicted"].get("latency_ms"), out["test"])


class ControllerWork:
    """The work folder's inputs, checked once; `current()` and `record()` keep track of the
    deployment in service."""

    def __init__(self, root: str | os.PathLike, *, fleet: str | None = None,
                 deployments: str | os.PathLike | None = None) -> None:
        from slimedge.export.signing import PRIVATE_KEY_NAME
        from slimedge.plan.plan_file import read_plan

        self.root = Path(root)
        if not self.root.is_dir():
            raise ControllerError(f"{self.root}: no such work folder")
        self.ladder = self.root / "ladder"
        self.dataset = self.root / "dataset"
        self.key = self.root / "keys" / PRIVATE_KEY_NAME
        imp = self.root / "importance.json"
        self.importance = imp if imp.is_file() else None
        self.dir = Path(deployments) if deployments is not None else self.root / DEPLOYMENTS_DIR
        for path, what in ((self.ladder / "manifest.json", "ladder"),
                           (self.dataset, "dataset"), (self.key, "signing key")):
            if not path.exists():
                raise ControllerError(f"{path}: missing ({what} of the work folder; the "
                                      "controller replans, exports and signs from it)")
        cur = self.current()
        plan = read_plan(cur.plan)
        want = plan["ladder"].get("manifest_sha256")
        if want and sha256_file(self.ladder / "manifest.json") != want:
            raise ControllerError(f"{cur.plan}: planned on another ladder than {self.ladder} "
                                  "(ladder.manifest_sha256 differs)")
        self.fleet = self._fleet(fleet, plan)

    @staticmethod
    def _fleet(given: str | None, plan: dict[str, Any]) -> Path:
        from slimedge.devices import resolve_fleet_path
        from slimedge.devices.units import DeviceConfigError

        if given is not None:
            try:
                return resolve_fleet_path(given)
            except DeviceConfigError as exc:
                raise ControllerError(f"--fleet: {exc}") from None
        path = plan["fleet"].get("path")
        if path and Path(path).is_file():
            return Path(path)
        try:
            return resolve_fleet_path(plan["fleet"]["name"])
        except DeviceConfigError as exc:
            raise ControllerError(f"the plan's fleet {plan['fleet']['name']!r}: {exc} (pass "
                                  "the fleet file with --fleet)") from None

    def current(self) -> Current:
        path = self.dir / CURRENT_FILE
        if not path.is_file():
            plan = self.root / "plan.json"
            deploy = self.root / "deploy"
            for p in (plan, deploy / "manifest.json"):
                if not p.exists():
                    raise ControllerError(f"{p}: missing (the deployment in service and its "
                                          "plan)")
            down = tuple(json.loads(plan.read_text()).get("down") or ())
            return Current(deploy, plan, down, 0)
        try:
            doc = json.loads(path.read_text())
            return Current(Path(doc["deploy"]), Path(doc["plan"]), tuple(doc["down"]),
                           int(doc["index"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ControllerError(f"{path}: unreadable ({exc})") from None

    def record(self, cur: Current) -> None:
        write_json(self.dir / CURRENT_FILE, {**cur.to_dict(), "since": time.time()})

    def next_name(self, down: Sequence[str]) -> tuple[int, str]:
        """(n, folder name) of the next deployment: n above every one made so far."""
        taken = [0]
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                head = p.name.split("-", 1)[0]
                if head.isdigit():
                    taken.append(int(head))
        n = max(taken) + 1
        return n, f"{n}-down-{'+'.join(sorted(down))}" if down else f"{n}-full"


@dataclass
class Replan:
    """A replan's outcome: a plan file, or why none meets the floors."""

    down: tuple[str, ...]
    plan_path: Path | None
    plan: dict[str, Any] | None
    infeasible: list[dict[str, Any]] | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.plan is not None


def plan_args(plan: dict[str, Any], fleet: Path, ladder: Path, out: Path,
              down: Sequence[str], importance: Path | None) -> argparse.Namespace:
    """`slimedge plan` options that redo `plan` (same constraints, search settings, cost
    model) with `down` devices permanently failed."""
    from slimedge.plan import commands as plan_cmd

    c, s = plan["constraints"], plan["search"]
    argv = ["--fleet", str(fleet), "--ladder", str(ladder), "--out", str(out),
            "--min-accuracy", repr(float(c["min_accuracy"])),
            "--k-failures", str(int(c["k_failures"])), "--epsilon", repr(float(c["epsilon"])),
            "--seed", str(int(s["seed"])), "--pop", str(int(s["pop"])),
            "--generations", str(int(s["generations"])),
            "--stall-evaluations", str(int(s.get("stall_evaluations") or 0)),
            "--patience", str(int(s.get("patience") or 0)),
            "--prefer", s.get("prefer", "latency"),
            "--link-latency", plan.get("link_latency", "expected"),
            "--split", plan["ladder"].get("split", "val"), "--no-baselines", "--no-plot"]
    if s.get("front_thresholds") is not None:
        argv += ["--front-thresholds", str(int(s["front_thresholds"]))]
    if c.get("min_accuracy_k") is not None:
        argv += ["--min-accuracy-k", repr(float(c["min_accuracy_k"]))]
    if c.get("max_latency_ms") is not None:
        argv += ["--max-latency-ms", repr(float(c["max_latency_ms"]))]
    if s.get("objectives"):
        argv += ["--objectives", ",".join(s["objectives"])]
    if plan.get("cost_model"):
        argv += ["--cost-model", plan["cost_model"]]
    if plan.get("frame_period_ms") is not None:
        argv += ["--frame-period-ms", repr(float(plan["frame_period_ms"]))]
    if down:
        argv += ["--down", ",".join(down)]
    if importance is not None:
        argv += ["--importance", str(importance)]
    p = argparse.ArgumentParser(prog="slimedge plan")
    plan_cmd.add_plan_options(p)
    ns = p.parse_args(argv)
    ns.json = True  # no progress output from inside the controller
    return ns


def replan(work: ControllerWork, cur: Current, down: Sequence[str], out: Path) -> Replan:
    """The plan with `down` devices failed, written to `out`; an infeasible outcome carries the
    planner's reasons (each with its `shortfall` where a floor is missed)."""
    from slimedge.plan import PlanInfeasibleError
    from slimedge.plan import commands as plan_cmd
    from slimedge.plan.plan_file import read_plan

    t0 = time.perf_counter()
    base = read_plan(cur.plan)
    down = tuple(sorted(down))
    ns = plan_args(base, work.fleet, work.ladder, out, down, work.importance)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        plan_cmd.plan(ns)
    except PlanInfeasibleError as exc:
        return Replan(down, None, None, list(exc.summary.get("infeasible") or
                                             [{"message": str(exc)}]),
                      time.perf_counter() - t0)
    return Replan(down, out, read_plan(out), None, time.perf_counter() - t0)


def export(work: ControllerWork, plan_path: Path, out: Path) -> dict[str, Any]:
    """The plan exported, signed with the work folder's key and verified into `out` (a new
    folder: the one in service is never touched)."""
    from slimedge.export.deploy import export_deployment

    if out.exists():
        raise ControllerError(f"{out}: exists; a new deployment never replaces another")
    return export_deployment(work.fleet, work.ladder, None, out, dataset=work.dataset,
                             plan=plan_path, key_path=work.key, progress=False)


def device_changes(old_deploy: Path, new_deploy: Path, skip: Sequence[str] = ()
                   ) -> dict[str, dict[str, Any]]:
    """Per device of the new deployment whose artifact differs from the old one's (skipping
    `skip`, the devices down): old and new level, format and sha256."""
    from slimedge.export.manifest import MANIFEST_NAME, DeploymentManifest

    def read(root: Path) -> Any:
        return DeploymentManifest.from_json((root / MANIFEST_NAME).read_bytes(),
                                            source=str(root / MANIFEST_NAME))

    old = {d.device: d for d in read(old_deploy).devices}
    out = {}
    for d in read(new_deploy).devices:
        if d.device in skip:
            continue
        o = old.get(d.device)
        if o is not None and o.sha256 == d.sha256:
            continue
        out[d.device] = {"level": [None if o is None else o.level_index, d.level_index],
                         "format": [None if o is None else o.format, d.format],
                         "sha256": [None if o is None else o.sha256[:16], d.sha256[:16]]}
    return out
