"""`slimedge controller run --work DIR --broker URL [--fleet F] [--grace S]`: the host process
that closes the loop between the fleet's health and its plan.

1. watch: every device's retained status and heartbeats, judged by the aggregator's failure
   detector (`controller_watch.FleetWatch`);
2. decide: the set of devices to plan without is the one in service, plus every device dead
   for longer than the grace period, minus every down device alive again for that long;
3. replan: when that set changes, the planner runs with those devices down (the function
   behind `slimedge plan --down`, same constraints and search settings as the plan in service);
   when no plan meets the floors the controller says so, and by how much, and keeps the
   aggregator's contingency weights: nothing is exported or pushed;
4. export: a new signed, verified deployment in `<work>/deployments/<n>-down-<dev>/` (the one
   in service stays as it is);
5. push: the aggregator's part and the devices up whose model changed (`changed`), all
   switching at one frame F a little ahead of the aggregator's last answered frame
   (`controller_switch`); a device whose artifact is byte-identical is sent nothing
   (`unchanged_devices`: the aggregator pools its messages, under its old deployment id, with
   the new deployment since it names the same model). When every part is acknowledged the new
   deployment is recorded as the one in service.

Every state change and decision is a row of `controller.jsonl` (in the deployments folder, or
`--log`): a decision row holds the devices down before and after, the predicted accuracy
(nominal and expected) and latency before, degraded (the deployment in service with the dead
devices' views gone, the contingency row) and after, and the wall-clock time of each phase
(detected, replanned, exported, pushed, acked).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError
from slimedge.fleet.controller_plan import (
    PLAN_SUFFIX,
    ControllerError,
    ControllerWork,
    Current,
    degraded_of,
    device_changes,
    export,
    predicted_of,
    replan,
)
from slimedge.fleet.run_folder import append_jsonl
from slimedge.runtime.detector import ALIVE, DEAD

LOG_NAME = "controller.jsonl"
DEFAULT_GRACE_S = 2.0
DEFAULT_LEAD_S = 3.0


def add_controller_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", required=True, metavar="DIR",
                   help="work folder: ladder/, dataset/, plan.json, deploy/, keys/ (as "
                        "`slimedge demo` leaves it); new deployments go to DIR/deployments/")
    p.add_argument("--broker", required=True, metavar="URL",
                   help="mqtt://[user:pass@]host:port (the controller user's credentials)")
    p.add_argument("--fleet", default=None, metavar="F",
                   help="fleet file or name (default: the one the plan in service records)")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, metavar="S",
                   help="seconds a device stays dead (or, once down, alive again) before the "
                        "controller replans")
    p.add_argument("--heartbeat", type=float, default=1.0, metavar="S",
                   help="heartbeat period assumed until a device announces its own")
    p.add_argument("--lead", type=float, default=DEFAULT_LEAD_S, metavar="S",
                   help="the switch frame is this many seconds of frames after the last one "
                        "the aggregator answered: the time every part has to download, "
                        "verify and prepare")
    p.add_argument("--push-timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for every acknowledgment of a push")
    p.add_argument("--log", default=None, metavar="PATH",
                   help=f"decision log (default: DIR/deployments/{LOG_NAME})")
    p.add_argument("--deployments", default=None, metavar="DIR",
                   help="where new deployments, current.json and the log go (default: "
                        "DIR/deployments; `fleet up --controller` gives each run its own)")
    p.add_argument("--public-key", default=None, metavar="K",
                   help="the key the fleet verifies with (default: DIR/keys/public_key.pem)")


class Controller:
    """Watch, decide, replan, export, push (module docstring). `run()` returns at `stop`."""

    def __init__(self, work: ControllerWork, url: str, *, grace_s: float = DEFAULT_GRACE_S,
                 heartbeat_s: float = 1.0, lead_s: float = DEFAULT_LEAD_S,
                 push_timeout: float = 60.0,
                 log: Path | None = None, public_key: Path | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        from slimedge.fleet.reference import load_deployment

        if not (math.isfinite(grace_s) and grace_s >= 0):
            raise ControllerError(f"--grace: expected seconds >= 0, got {grace_s}")
        if not (math.isfinite(lead_s) and lead_s > 0):
            raise ControllerError(f"--lead: expected seconds > 0, got {lead_s}")
        self.work, self.url = work, url
        self.grace_ns = int(grace_s * 1e9)
        self.heartbeat_s, self.lead_s = heartbeat_s, lead_s
        self.push_timeout = push_timeout
        self.log = Path(log) if log is not None else work.dir / LOG_NAME
        self.say = say or (lambda msg: None)
        self.current = work.current()
        from slimedge.export.signing import PUBLIC_KEY_NAME

        self.public_key = Path(public_key or work.key.parent / PUBLIC_KEY_NAME)
        dep = load_deployment(self.current.deploy, self.public_key)
        self.fleet = dep.fleet
        self.devices = [d.device for d in dep.manifest.devices]
        self.changed_at: dict[str, int] = {}  # device -> when its current state began (ns)
        # Devices heard alive at least once: one never heard from (still starting, or not
        # part of this run) is not planned around.
        self.heard: set[str] = set()
        self.refused: tuple[str, ...] | None = None  # a down set found infeasible (not retried)
        self.decisions: list[dict[str, Any]] = []
        self.watch: Any = None

    # ---------------------------------------------------------------- log

    def _log(self, row: dict[str, Any]) -> None:
        t = time.time_ns()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.log, {"t_ns": t, "t": round(t / 1e9, 6), **row})

    # ---------------------------------------------------------------- loop

    def run(self, stop: threading.Event) -> dict[str, Any]:
        from slimedge.fleet.controller_watch import FleetWatch

        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.watch = FleetWatch(self.url, self.fleet, self.devices,
                                heartbeat_s=self.heartbeat_s).start()
        self._log({"event": "started", "fleet": self.fleet, "devices": self.devices,
                   "current": self.current.to_dict(), "grace_s": self.grace_ns / 1e9,
                   "lead_s": self.lead_s})
        self.say(f"watching fleet {self.fleet} ({len(self.devices)} devices); in service: "
                 f"{self.current.deploy}")
        try:
            while not stop.is_set():
                self._drain_changes()
                want = self._wanted_down(time.time_ns())
                if want is not None and not stop.is_set():
                    with self.watch.busy():
                        self._act(want)
                stop.wait(0.05)
        finally:
            counts = self.watch.counts()
            self.watch.stop()
            self._log({"event": "stopped", "rejected": counts,
                       "current": self.current.to_dict(), "decisions": len(self.decisions)})
        return {"decisions": self.decisions, "rejected": counts,
                "current": self.current.to_dict()}

    def _drain_changes(self) -> None:
        import queue

        while True:
            try:
                c = self.watch.changes.get_nowait()
            except queue.Empty:
                return
            self.changed_at[c.device] = c.t_ns
            if c.state == ALIVE:
                self.heard.add(c.device)
            self._log({"event": "state", "device": c.device, "state": c.state,
                       "previous": c.previous, "reason": c.reason, "at_ns": c.t_ns})
            if c.state in (DEAD, ALIVE):
                self.say(f"{c.device}: {c.state} ({c.reason})")

    def _wanted_down(self, now_ns: int) -> tuple[str, ...] | None:
        """The down set to plan for, when it differs from the one in service (and was not
        already found infeasible); None otherwise."""
        states = self.watch.states()
        settled = {d for d in self.devices
                   if now_ns - self.changed_at.get(d, now_ns) >= self.grace_ns}
        down = set(self.current.down)
        down |= {d for d in settled if states[d] == DEAD and d in self.heard}
        down -= {d for d in settled if states[d] == ALIVE}
        want = tuple(sorted(down))
        if want == tuple(sorted(self.current.down)):
            self.refused = None  # back where the deployment in service is
            return None
        if want == self.refused:
            return None
        return want

    # ---------------------------------------------------------------- one decision

    def _act(self, want: tuple[str, ...]) -> dict[str, Any]:
        from slimedge.export import ExportError
        from slimedge.plan.plan_file import read_plan

        cur = self.current
        lost = sorted(set(want) - set(cur.down))
        back = sorted(set(cur.down) - set(want))
        n, name = self.work.next_name(want)
        deploy = self.work.dir / name
        old_plan = read_plan(cur.plan)
        phases: dict[str, Any] = {
            "detected_ns": max(self.changed_at.get(d, 0) for d in lost + back)}
        row: dict[str, Any] = {"event": "decision", "lost": lost, "returned": back,
                               "down_before": list(cur.down), "down_after": list(want),
                               "before": predicted_of(old_plan).to_dict(),
                               "floors": {k: old_plan["constraints"].get(k) for k in
                                          ("min_accuracy", "min_accuracy_k", "k_failures",
                                           "max_latency_ms")}}
        if lost:
            row["degraded"] = degraded_of(old_plan, self.work.ladder, want).to_dict()
        self.say(f"replanning with {', '.join(want) or 'no device'} down "
                 f"({'lost ' + ', '.join(lost) if lost else 'back ' + ', '.join(back)})")
        try:
            r = replan(self.work, cur, want, self.work.dir / f"{name}{PLAN_SUFFIX}")
        except SlimEdgeError as exc:  # e.g. every device down: nothing to plan
            self.refused = want
            phases["replanned_ns"] = time.time_ns()
            row.update({"decision": "replan-failed", "message": str(exc)})
            return self._decided(row, phases)
        phases["replanned_ns"] = time.time_ns()
        row["replan_s"] = round(r.seconds, 3)
        if not r.ok:
            self.refused = want
            misses = [x for x in r.infeasible or [] if "shortfall" in x]
            row.update({"decision": "keep-contingency", "infeasible": r.infeasible,
                        "shortfall": max((x["shortfall"] for x in misses), default=None),
                        "message": "no plan meets the floors without "
                                   f"{', '.join(want)}: "
                                   + "; ".join(x.get("message", "") for x in r.infeasible or [])
                                   + "; the aggregator keeps its contingency weights, "
                                     "nothing is pushed"})
            return self._decided(row, phases)
        row["after"] = predicted_of(r.plan).to_dict()
        try:
            summary = export(self.work, r.plan_path, deploy)
        except (ExportError, ControllerError) as exc:
            self.refused = want
            row.update({"decision": "export-failed", "message": str(exc)})
            return self._decided(row, phases)
        phases["exported_ns"] = time.time_ns()
        row["export_s"] = summary.get("seconds")
        row["deployment"] = str(deploy)
        changes = device_changes(cur.deploy, deploy, skip=want)
        row["changed"] = changes
        last, fps = self.watch.frame_now()  # the push picks F from the aggregator's state
        row.update({"last_frame_seen": last, "fps_seen": None if fps is None else round(fps, 3)})
        phases["pushed_ns"] = time.time_ns()
        from slimedge.fleet.controller_switch import push_switch

        try:
            pushed = push_switch(deploy, self.url, list(want), at_frame=None,
                                 lead_s=self.lead_s,
                                 key=self.work.key, fleet=self.fleet,
                                 timeout=self.push_timeout)
        except SlimEdgeError as exc:  # an update that cannot be built or sent
            pushed = {"ok": False, "message": str(exc), "acked_ns": None}
        row["push"] = pushed
        row["at_frame"] = pushed.get("at_frame")
        row["pushed_devices"] = pushed.get("pushed", [])
        row["unchanged_devices"] = pushed.get("unchanged", [])
        row["late_devices"] = pushed.get("late", [])
        if pushed.get("aggregator") is not None:
            late = (f"; applied after frame {row['at_frame']} (views missing until then): "
                    f"{', '.join(row['late_devices'])}" if row["late_devices"] else "")
            self.say(f"pushed {', '.join(row['pushed_devices']) or 'no device'} and the "
                     f"aggregator at frame {row['at_frame']}; unchanged (nothing sent): "
                     f"{', '.join(row['unchanged_devices']) or 'none'}{late}")
        phases["acked_ns"] = pushed.get("acked_ns") if pushed["ok"] else None
        if pushed["ok"]:
            self.current = Current(deploy, r.plan_path, want, n)
            self.work.record(self.current)
            row["decision"] = "switched"
        else:
            self.refused = want
            row["decision"] = "push-failed"
            row["message"] = pushed.get("message")
        return self._decided(row, phases)

    def _decided(self, row: dict[str, Any], phases: dict[str, Any]) -> dict[str, Any]:
        t0 = phases["detected_ns"]
        row["phases"] = phases
        row["seconds"] = {k[:-3]: round((v - t0) / 1e9, 3) for k, v in phases.items()
                          if isinstance(v, int) and v}
        self._log(row)
        self.decisions.append(row)
        self.say(f"decision: {row['decision']}"
                 + (f" ({row['message']})" if row.get("message") else ""))
        return row


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def controller_run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of `slimedge controller run`: runs until SIGTERM / Ctrl-C; returns the
    decisions made and the messages refused."""
    def say(msg: str) -> None:
        if not getattr(args, "json", False):
            print(f"[controller] {msg}", file=sys.stderr, flush=True)

    work = ControllerWork(args.work, fleet=args.fleet, deployments=args.deployments)
    ctl = Controller(work, args.broker, grace_s=args.grace, heartbeat_s=args.heartbeat,
                     lead_s=args.lead, push_timeout=args.push_timeout,
                     log=Path(args.log) if args.log else None,
                     public_key=Path(args.public_key) if args.public_key else None, say=say)
    stop = threading.Event()
    with _stop_on_signals(stop):
        return ctl.run(stop)


def summary_text(s: dict[str, Any]) -> str:
    """What `controller run` prints at exit without --json: one line per decision."""
    lines = []
    for d in s["decisions"]:
        what = (f"lost {', '.join(d['lost'])}" if d["lost"] else
                f"back {', '.join(d['returned'])}")
        secs = ", ".join(f"{k} {v:.2f} s" for k, v in d.get("seconds", {}).items() if k !=
                         "detected")
        extra = (f" at frame {d['at_frame']}, pushed "
                 f"{', '.join(d.get('pushed_devices') or []) or 'no device'}"
                 if d["decision"] == "switched" else
                 f" ({d.get('message')})" if d.get("message") else "")
        lines.append(f"{what}: {d['decision']}{extra}; after detection: {secs}")
    if s["rejected"]:
        lines.append("messages refused: " + ", ".join(f"{k} {v}" for k, v in
                                                      sorted(s["rejected"].items())))
    lines.append(f"in service: {s['current']['deploy']}")
    return "\n".join(lines)


__all__ = ["Controller", "ControllerError", "add_controller_options", "controller_run",
           "summary_text"]
