"""`slimedge aggregator run`: the `Aggregator` wired to MQTT, a run folder and HTTP.

One network thread (paho, inside `MqttClient`) hands messages to a bounded queue; this module's
loop takes them one at a time, with the current time, into `Aggregator.handle`, calls
`Aggregator.tick` when a deadline or timeout is due, publishes each result on
slimedge/<fleet>/results and queues it for the results database. The run folder:

    results.sqlite   one row per answered frame (`results_db` documents the columns)
    events.jsonl     one JSON object per line: {"t_ns", "t" (Unix s), "event", ...}:
                     started, state ({"device", "state": alive|suspected|dead, "previous",
                     "reason"}), contingency_switch, replan_needed, link ({"up": bool}: our
                     own broker connection), switch_prepared ({"sequence", "deployment_id",
                     "commit_at_frame", "previous"}), switch_applied ({"frame", ...}),
                     switch_refused ({"sequence", "reason", "message"}), switch_superseded,
                     stopped
    metrics.json     the final status snapshot (the keys of /status, plus "mqtt",
                     "inbound_dropped", "frames_expected", "frames_lost", "events")
    deployments/     deployments received for a fleet-wide switch (`aggregator_switch`):
                     <sequence>-<deployment id>/ with the manifest and the aggregator's files

A fleet-wide switch arrives on slimedge/<fleet>/aggregator/update, is verified with the key the
aggregator started with and prepared off the frame loop, and serves frames >= its frame F;
acknowledgments go to slimedge/<fleet>/aggregator/ack, and slimedge/<fleet>/aggregator/state
(retained) says what is served and the last frame answered (`slimedge push` picks F from it).

With `--frames N --fps F --start-at NS` (what `fleet up` passes) the aggregator knows the
replay's schedule: it exits on its own once the last frame's deadline has passed, and counts
the frames of which no view ever arrived as lost. SIGTERM/SIGINT stop it cleanly, files
complete.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError

__all__ = ["EVENTS_FILE", "METRICS_FILE", "add_run_options", "run"]

EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.json"
STATUS_EVERY_S = 0.5  # snapshot for HTTP and results-database commit period
TICK_NS = 5_000_000  # Aggregator.tick every 5 ms: a deadline is acted on at most this late
END_GRACE_S = 1.0  # after the last deadline, before exiting


class AggregatorRunError(SlimEdgeError):
    """Options or files that keep the aggregator from starting."""


def add_run_options(p: argparse.ArgumentParser) -> None:
    from slimedge.runtime.aggregator import DEFAULT_SLACK_MS

    p.add_argument("--deploy", required=True, help="deployment directory (slimedge export)")
    p.add_argument("--broker", required=True, help="mqtt://[user:pass@]host:port or mqtts://")
    p.add_argument("--public-key", default=None, metavar="PEM",
                   help="the public key provisioned out of band (default: "
                        "$SLIMEDGE_PUBLIC_KEY; required: the deployment's own "
                        "public_key.pem proves integrity only); the manifest's signing_key "
                        "must be its fingerprint")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="serve /metrics, /status and the status page here (port 0: any)")
    p.add_argument("--run-dir", default=None,
                   help="run folder for results.sqlite, events.jsonl, metrics.json "
                        "(default: aggregator-run-<UTC time>)")
    p.add_argument("--slack-ms", type=float, default=DEFAULT_SLACK_MS,
                   help="deadline = capture time + the plan's predicted latency + this")
    p.add_argument("--heartbeat", type=float, default=1.0, metavar="S",
                   help="heartbeat period assumed until a device announces its own")
    p.add_argument("--dataset", default=None,
                   help="dataset of replayed frames: labels of its test split score accuracy")
    p.add_argument("--frames", type=int, default=None,
                   help="frames in the replay (with --fps and --start-at: exit after the last)")
    p.add_argument("--fps", type=float, default=None, help="replay frame rate")
    p.add_argument("--start-at", type=int, default=None, metavar="UNIX_NS",
                   help="capture time of frame 0")


def _http_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AggregatorRunError(f"--http {text!r}: expected HOST:PORT (port 0..65535)")
    return host, int(port)


def _labels(dataset: str | None) -> Any:
    if dataset is None:
        return None
    from slimedge.data.container import load_dataset

    ds = load_dataset(dataset)
    return ds.labels[ds.indices("test")]


def _check_schedule(args: argparse.Namespace) -> None:
    if args.frames is not None and (args.start_at is None or args.fps is None):
        raise AggregatorRunError("--frames needs --fps and --start-at (the replay's "
                                 "schedule) to know when the last frame is due")
    if args.frames is not None and (args.frames < 1 or not args.fps > 0):
        raise AggregatorRunError(f"--frames {args.frames} --fps {args.fps}: need >= 1 and > 0")


def _end_ns(args: argparse.Namespace, window_ns: int) -> int | None:
    if args.frames is None or args.start_at is None or args.fps is None:
        return None
    last_capture = args.start_at + int((args.frames - 1) / args.fps * 1e9)
    return last_capture + window_ns + int(END_GRACE_S * 1e9)


class _EventLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run

    def write(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.counts[e["event"]] += 1
            row = {"t_ns": e["t_ns"], "t": round(e["t_ns"] / 1e9, 6), **e}
            self._fh.write(json.dumps(row, default=str) + "\n")
        if events:
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGINT set `stop` (only the main thread may install handlers: a caller in
    another thread stops the loop through `stop` itself)."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
        except ValueError:
            break
    return previous


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> dict[str, Any]:
    """The `aggregator run` handler: serve until the replay ends or SIGTERM; returns the final
    metrics (also written to metrics.json)."""
    from slimedge.artifacts import write_json
    from slimedge.runtime import device_setup, topics
    from slimedge.runtime.aggregator import Aggregator
    from slimedge.runtime.aggregator_deployment import load_aggregator_deployment, provisioned_key
    from slimedge.runtime.aggregator_switch import SwitchLink
    from slimedge.runtime.detector import DetectorConfig
    from slimedge.runtime.head import HeadRunner
    from slimedge.runtime.mqtt import Message, MqttClient
    from slimedge.runtime.results_db import RESULTS_DB, ResultsDB
    from slimedge.runtime.status_http import StatusBoard, StatusServer

    http = _http_address(args.http) if args.http else None
    _check_schedule(args)
    # The agent's rule: an out-of-band key, whose fingerprint the manifest must name.
    key_path = device_setup.provisioned_key(args.public_key)
    dep = load_aggregator_deployment(args.deploy, key_path)
    device_setup.check_signing_key(dep.manifest, key_path, who="aggregator", root=dep.root)
    trusted_key = provisioned_key(args.deploy, key_path)  # verifies every later switch
    head = HeadRunner(dep.head_path, dep.feature_dim, dep.n_classes)
    labels = _labels(args.dataset)
    run_dir = Path(args.run_dir or time.strftime("aggregator-run-%Y%m%d%H%M%S", time.gmtime()))
    run_dir.mkdir(parents=True, exist_ok=True)
    now = time.time_ns()
    agg = Aggregator(dep, head, now_ns=now, slack_ms=args.slack_ms,
                     detector=DetectorConfig(period_s=args.heartbeat), labels=labels)
    agg.link(False, now)  # deaf until connected: no device is blamed for our slow start
    end_ns = _end_ns(args, agg.window_ns)
    board = StatusBoard()
    try:
        server = StatusServer(board, *http) if http else None
    except OSError as e:
        raise AggregatorRunError(f"--http {args.http}: cannot listen there ({e.strerror})") \
            from None
    db = ResultsDB(run_dir / RESULTS_DB, {"deployment_id": dep.deployment_id,
                                          "fleet": dep.fleet, "views": dep.views,
                                          "started_ns": now})
    events = _EventLog(run_dir / EVENTS_FILE)
    events.write([{"t_ns": now, "event": "started", "deployment_id": dep.deployment_id,
                   "fleet": dep.fleet, "window_ms": agg.window_ns / 1e6,
                   "slack_ms": args.slack_ms, "heartbeat_s": args.heartbeat,
                   "devices": sorted(dep.devices)}])
    if server is not None:
        print(f"[aggregator] status page {server.url}/", file=sys.stderr, flush=True)
    switch = SwitchLink(agg, trusted_key, run_dir / "deployments")
    gone = Message(switch.state_topic, json.dumps({"running": False}), 1, retain=True)
    client = MqttClient(args.broker, name="aggregator", will=gone,
                        subscriptions=[(topics.features_all(dep.fleet), 0),
                                       (topics.heartbeat_all(dep.fleet), 0),
                                       (topics.status_all(dep.fleet), 1),
                                       (switch.topic, 1)])
    stop = stop or threading.Event()
    previous = _on_signals(stop)
    results_topic = topics.results(dep.fleet)
    seen_frames: set[int] = set()

    def snapshot(t: int) -> dict[str, Any]:
        s = agg.status(t)
        s["switch"]["updates"] = switch.counts()
        s["mqtt"] = client.stats()
        s["inbound_dropped"] = client.inbound.dropped
        s["http"] = None if server is None else server.url
        return s

    try:
        client.start(wait=None)
        print(f"[aggregator] {dep.deployment_id}: {len(dep.devices)} devices, {dep.views} views, "
              f"window {agg.window_ns / 1e6:.0f} ms, broker {client.url}", file=sys.stderr,
              flush=True)
        next_status = next_tick = 0
        while not stop.is_set():
            m = client.get(timeout=max(0.0, (next_tick - time.time_ns()) / 1e9))
            if client.refused is not None:
                raise client.refused
            t = time.time_ns()
            out = []
            if t >= next_tick:  # deadlines and silence, at most TICK_NS late
                agg.link(client.connected, t)
                out = agg.tick(t)
                next_tick = t + TICK_NS
            if m is not None and m.topic == switch.topic:
                for ack in switch.handle(m.payload, t):
                    client.publish(switch.ack_topic, ack.to_bytes(), qos=1)
            elif m is not None:
                out += agg.handle(m.topic, m.payload, t)
            for r in out:
                client.publish(results_topic, json.dumps(r.to_message()))
                db.add(r)
                if args.frames is not None and 0 <= r.frame < args.frames:
                    seen_frames.add(r.frame)  # bounded by --frames
            for ack in switch.poll(t):  # prepared (scheduled at F), refused, applied
                client.publish(switch.ack_topic, ack.to_bytes(), qos=1)
            events.write(agg.drain_events())
            if t >= next_status:
                db.flush()
                board.publish(snapshot(t))
                client.publish(switch.state_topic, json.dumps(switch.state(t, args.fps)), qos=1,
                               retain=True)
                next_status = t + int(STATUS_EVERY_S * 1e9)
            if end_ns is not None and t >= end_ns and not agg.aligner.pending:
                break
    finally:
        t = time.time_ns()
        events.write(agg.drain_events())
        events.write([{"t_ns": t, "event": "stopped",
                       "reason": "signal" if stop.is_set() else "replay finished"}])
        final = snapshot(t)
        if args.frames is not None:
            final["frames_expected"] = args.frames
            final["frames_lost"] = args.frames - len(seen_frames)
        final["events"] = dict(events.counts)
        final["run_dir"] = str(run_dir)
        db.close()
        events.close()
        write_json(run_dir / METRICS_FILE, final)
        board.publish(final)
        switch.stop()
        client.stop(final=[gone])
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return final
