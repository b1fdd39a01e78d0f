#!/usr/bin/env python3
"""Benchmark: a fleet-wide switch to a new deployment in the middle of a replay, against the
way it went before (devices updated at frame F, the aggregator restarted on the new deployment).

Both cases run real processes: Mosquitto, one `slimedge agent run` per device of the old
deployment (replaying the dataset's test split) and `slimedge aggregator run`, all on one
start time. While frames flow:

- switch (ours): `run_push(new, aggregator=True, lead_s=L)`: the aggregator's part first
  (prepared off its frame loop), then every device's update, all committing at the frame F push
  picks from the aggregator's last frame answered;
- restart (baseline): `run_push(new, aggregator=False, at_frame=F)` with the same F; when the
  aggregator has answered frame F - 1 it gets SIGTERM and a new `aggregator run` starts on the
  new deployment (what the fleet needed before the switch existed).

Per case: F, seconds from the push's start to the aggregator's prepared / applied
acknowledgment, each device's apply time (push start of its delivery -> its applied ack at F),
frames lost (no answer in any results database; also after the push began, once frame
--push-after was answered), frames answered by the wrong deployment (frame < F not by the
old one, frame >= F not by the new one), feature messages refused as
wrong_deployment, frames around F with views missing. Medians over repeats.

    python tools/bench_switch.py --old OLD/deploy --new NEW/deploy --dataset DATASET \
        --public-key keys/public_key.pem [--fps 5] [--lead 5] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from slimedge import provenance
from slimedge.artifacts import sha256_file
from slimedge.export.manifest import DeploymentManifest
from slimedge.fleet.broker import start_broker
from slimedge.fleet.push import run_push
from slimedge.runtime import topics
from slimedge.runtime.mqtt import MqttClient

S = 1_000_000_000
ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("frames_lost", "frames_lost_after_push", "wrong_deployment_frames",
           "wrong_deployment_messages", "views_missing_near_F", "aggregator_prepared_s",
           "aggregator_applied_s", "restart_s", "device_apply_s_median", "device_apply_s_max",
           "devices_applied")


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "slimedge.cli", *argv]


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return None if not xs else round(statistics.median(xs), 3)


class _State:
    """The aggregator's retained state, followed on a thread."""

    def __init__(self, url: str, fleet: str) -> None:
        self.last_frame: int | None = None
        self.client = MqttClient(url, name="bench-watch",
                                 subscriptions=[(topics.aggregator_state(fleet), 1)]).start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self.client.get(0.05)
            if m is not None:
                s = json.loads(m.payload)
                if s.get("running"):
                    self.last_frame = s.get("last_frame")

    def wait_frame(self, frame: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and (self.last_frame or -1) < frame:
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.stop()


def run_case(args: argparse.Namespace, case: str, work: Path, at_frame: int | None) -> dict:
    old = DeploymentManifest.from_json((args.old / "manifest.json").read_bytes())
    new = DeploymentManifest.from_json((args.new / "manifest.json").read_bytes())
    fleet = topics.fleet_name(old.deployment_id, old.created)
    broker = start_broker(kind="mosquitto", workdir=work / "broker")
    start = time.time_ns() + int(args.startup * S)
    common = ["--broker", broker.url, "--public-key", str(args.public_key), "--fps",
              f"{args.fps:g}", "--frames", str(args.frames), "--start-at", str(start),
              "--heartbeat", "0.3"]
    logs = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen:
        fh = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed after the run
        logs.append(fh)
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)

    def aggregator(deploy: Path, run: str) -> subprocess.Popen:
        return spawn(run, _cli("aggregator", "run", "--deploy", str(deploy), "--run-dir",
                               str(work / run), "--dataset", str(args.dataset), *common))

    procs = {"aggregator": aggregator(args.old, "run")}
    for d in old.devices:
        procs[d.device] = spawn(d.device, _cli(
            "agent", "run", "--deploy", str(args.old), "--device", d.device, "--source",
            f"replay:{args.dataset}", "--state", str(work / "state" / d.device), *common))
    state = _State(broker.url, fleet)
    runs = ["run"]
    try:
        state.wait_frame(args.push_after, args.startup + 60)
        t0 = time.monotonic()
        if case == "switch":
            pushed = run_push(args.new, broker.url, aggregator=True, lead_s=args.lead,
                              listen=1.0, timeout=args.timeout, key=args.key)
        else:
            out: dict = {}
            pusher = threading.Thread(target=lambda: out.update(run_push(
                args.new, broker.url, aggregator=False, at_frame=at_frame, listen=1.0,
                timeout=args.timeout, key=args.key)))
            pusher.start()
            state.wait_frame(at_frame - 1, args.timeout)
            restart_t = time.monotonic()
            procs["aggregator"].terminate()
            procs["aggregator"].wait(60)
            procs["aggregator2"] = aggregator(args.new, "run2")
            runs.append("run2")
            pusher.join(args.timeout + 30)
            pushed = out
            pushed["restart_s"] = round(restart_t - t0, 3)
        for p in procs.values():
            p.wait(timeout=args.frames / args.fps + 120)
    finally:
        state.close()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for fh in logs:
            fh.close()
        broker.close()
    F = pushed["at_frame"]
    answered: dict[int, tuple[str, list[int]]] = {}
    wrong_dep_msgs = 0
    for run in runs:
        with sqlite3.connect(work / run / "results.sqlite") as con:
            for frame, dep, views in con.execute(
                    "SELECT frame, deployment_id, views FROM results"):
                answered.setdefault(frame, (dep, json.loads(views)))
        metrics = json.loads((work / run / "metrics.json").read_text())
        wrong_dep_msgs += metrics["rejected"].get("wrong_deployment", 0)
    n_views = sum(len(d.views) for d in old.devices)
    wrong_model = sum(1 for f, (dep, _) in answered.items()
                      if dep != (old.deployment_id if f < F else new.deployment_id))
    around = range(max(0, F - 5), min(args.frames, F + 5))
    lost = sorted(set(range(args.frames)) - set(answered))
    agg = pushed.get("aggregator") or {}
    dev_s = [o["seconds"] for o in pushed["devices"].values()]
    return {
        "case": case, "at_frame": F, "frames": args.frames,
        "frames_lost": len(lost), "lost_ranges": _ranges(lost),
        "frames_lost_after_push": sum(f > args.push_after for f in lost),
        "wrong_deployment_frames": wrong_model, "wrong_deployment_messages": wrong_dep_msgs,
        "views_missing_near_F": sum(n_views - len(answered[f][1]) if f in answered else n_views
                                    for f in around),
        "aggregator_status": agg.get("status", "restarted"),
        "aggregator_prepared_s": agg.get("prepared_seconds"),
        "aggregator_applied_s": agg.get("seconds"), "restart_s": pushed.get("restart_s"),
        "devices_applied": sum(o["status"] == "applied" for o in pushed["devices"].values()),
        "devices": len(pushed["devices"]), "device_apply_s_median": _median(dev_s),
        "device_apply_s_max": max([x for x in dev_s if x is not None], default=None),
        "push_s": round(time.monotonic() - t0, 3),
    }


def _ranges(ids: list[int]) -> list[list[int]]:
    """[[first, last], ...] of runs of consecutive frame ids."""
    out: list[list[int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def bench(args: argparse.Namespace) -> dict:
    rows = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-switch-", dir=args.keep) as tmp:
            ours = run_case(args, "switch", Path(tmp) / "switch", None)
            rows.append(ours)
            rows.append(run_case(args, "restart", Path(tmp) / "restart", ours["at_frame"]))
            if args.keep:  # the run folders and logs stay for inspection
                Path(tmp).rename(Path(args.keep) / f"repeat{r + 1}")
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    keys = ("at_frame", *FIGURES)
    medians = {case: {k: _median([r[k] for r in rows if r["case"] == case]) for k in keys}
               for case in ("switch", "restart")}
    return {
        "runs": rows, "medians": medians, "repeats": args.repeats, "fps": args.fps,
        "lead_s": args.lead,
        "deployments": {
            name: {"dir": str(d), "manifest_sha256": sha256_file(d / "manifest.json"),
                   "deployment_id": DeploymentManifest.from_json(
                       (d / "manifest.json").read_bytes()).deployment_id}
            for name, d in (("old", args.old), ("new", args.new))},
        "cpu": f"{provenance.cpu_name()} ({os.cpu_count()} cores)",
        "versions": provenance.versions(extra=("paho-mqtt",)),
        "mosquitto": subprocess.run(["mosquitto", "-h"], capture_output=True, text=True)
        .stdout.splitlines()[0],
    }


def table(result: dict) -> str:
    m = result["medians"]
    rows = [("", "switch (ours)", "restart (baseline)")]
    for k in FIGURES:
        rows.append((k, str(m["switch"][k]), str(m["restart"][k])))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"fleet-wide switch, medians of {result['repeats']} repeat(s), {result['fps']:g} "
             f"frames/s, lead {result['lead_s']:g} s, F = {m['switch']['at_frame']}"]
    lines += ["  ".join(c.ljust(x) for c, x in zip(r, w, strict=True)) for r in rows]
    d = result["deployments"]
    lines.append(f"old {d['old']['deployment_id']} (manifest {d['old']['manifest_sha256'][:12]}), "
                 f"new {d['new']['deployment_id']} (manifest {d['new']['manifest_sha256'][:12]})")
    lines.append(f"CPU {result['cpu']}; {result['mosquitto']}; " + ", ".join(
        f"{k} {v}" for k, v in result["versions"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=True)
    p.add_argument("--new", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True, help="replayed (its test split)")
    p.add_argument("--public-key", type=Path, required=True)
    p.add_argument("--key", type=Path, default=None, help="private key (default beside old)")
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--frames", type=int, default=None, help="default: the test split")
    p.add_argument("--lead", type=float, default=5.0)
    p.add_argument("--push-after", type=int, default=10, help="push once this frame answered")
    p.add_argument("--startup", type=float, default=10.0, help="seconds before frame 0")
    p.add_argument("--timeout", type=float, default=90.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--keep", default=None, help="keep each repeat's run folders here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.frames is None:
        from slimedge.data.container import load_dataset

        args.frames = len(load_dataset(args.dataset).indices("test"))
    result = bench(args)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
