"""The device agent: the daemon on one device. It verifies and loads its model
(`device_setup`), then per frame of its source runs the branch and publishes the feature
message (SEFM version 2) on `slimedge/<fleet>/<device>/features`; a heartbeat every period on
`.../heartbeat`; its status, retained, on `.../status`: "online" on every (re)connect, the Will
"offline" when it vanishes, "stopped" when it exits cleanly (frames done, SIGTERM, SIGINT).

Threads, and why:
- the frame loop (main thread): waits for each frame's capture time (start + i / fps), runs
  the branch, encodes, and puts the message in the outbox. Given `--start-at` (a fleet's
  common clock), an agent started late — restarted mid-run — skips the frames already past
  (capture time + the plan's system latency before now: the aggregator would refuse them as
  late) and starts with the next frame due;
- the sender: takes messages from the outbox when the link has room (at most `window`
  messages in flight) and, with `emulate_latency`, not before capture time + the board's
  predicted inference + link time;
- the heartbeat;
- the update link (`update_receiver.UpdateLink`): signed updates from `.../update` are
  verified, self-tested and their engine built there; the frame loop only swaps the prepared
  model in between two frames (A/B slots in `--state`, `runtime.slots`).
The outbox is bounded and drops its oldest message when full (counted), so a slow or absent
link costs frames, never memory; the frame loop never blocks on the network.

    python -m slimedge.runtime.agent --deploy DIR --device cam00 --broker mqtt://h:1883 ...
is the same as `slimedge agent run ...` (options in `runtime.commands`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError
from slimedge.runtime import frames, topics
from slimedge.runtime.bounded import DropOldestQueue
from slimedge.runtime.device_setup import DeviceRuntime, load_device
from slimedge.runtime.mqtt import Message, MqttClient

__all__ = ["Agent", "AgentConfig", "AgentError", "first_due_frame", "heartbeat_payload",
           "main", "run_agent"]

log = logging.getLogger("slimedge.agent")
TIMINGS_KEPT = 4096


class AgentError(SlimEdgeError):
    """The agent cannot run as configured, or its link was refused."""


@dataclass(frozen=True)
class AgentConfig:
    deploy: Path
    device: str
    broker: str
    public_key: Path | None = None
    source: str = "replay"
    fps: float = 10.0
    frames: int | None = None  # None: every frame of the source
    start_at_ns: int | None = None  # capture time of frame 0; None: when the agent is ready
    heartbeat_s: float = 1.0
    emulate_latency: bool = False
    outbox: int = 64  # frames waiting for the link, oldest dropped beyond
    window: int = 16  # messages in flight on the link
    keepalive: int = 5  # MQTT keep-alive (s): the broker sends the Will after 1.5 x this
    ca_file: Path | None = None
    connect_wait_s: float = 10.0  # how long to wait for the first connection before frames
    # A/B model slots for signed updates (runtime.slots); None: <deploy>/../device-state/<id>
    state: Path | None = None
    updates: bool = True  # False: serve the deployment as given, ignore the update topic

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise AgentError(f"--fps: expected frames per second > 0, got {self.fps}")
        if not self.heartbeat_s > 0:
            raise AgentError(f"--heartbeat: expected a period in seconds > 0, "
                             f"got {self.heartbeat_s}")
        if self.frames is not None and self.frames < 0:
            raise AgentError(f"--frames: expected a count >= 0, got {self.frames}")
        if self.outbox < 1 or self.window < 1:
            raise AgentError("outbox and window must be >= 1")


def capture_time_ns(start_ns: int, period_ns: float, frame: int) -> int:
    """Frame `frame`'s scheduled capture time (start + frame / fps)."""
    return start_ns + int(round(frame * period_ns))


def first_due_frame(start_ns: int, period_ns: float, now_ns: int, late_ns: int) -> int:
    """The first frame not yet past at `now_ns`: capture time + `late_ns` (the part of the
    aggregator's deadline the device knows) not before now. 0 until the run has started."""
    if now_ns <= start_ns + late_ns:
        return 0
    i = max(0, math.ceil((now_ns - late_ns - start_ns) / period_ns) - 1)
    while capture_time_ns(start_ns, period_ns, i) + late_ns < now_ns:
        i += 1
    return i


def heartbeat_payload(dev: DeviceRuntime, *, seq: int, boot_ns: int, period_s: float,
                      last_frame: int | None, dropped: int, update_sequence: int = 0) -> bytes:
    """The heartbeat JSON of FLEET_CONTRACT."""
    return json.dumps({
        "device": dev.device, "seq": seq, "boot": boot_ns, "sent_ns": time.time_ns(),
        "period_s": period_s, "last_frame": last_frame, "deployment_id": dev.deployment_id,
        "model_hash": dev.model_hash, "update_sequence": update_sequence, "dropped": dropped,
        "runtime": dev.runtime,
    }, separators=(",", ":")).encode()


@dataclass
class _Outgoing:
    frame: int
    ready_ns: int  # not before (emulated board latency); 0: at once
    payload: bytes


class Agent:
    """One device's daemon around a loaded `DeviceRuntime`; `run()` until done or `stop()`."""

    def __init__(self, cfg: AgentConfig, dev: DeviceRuntime, receiver: Any = None) -> None:
        from slimedge.runtime.sources import open_source

        if cfg.emulate_latency and dev.predicted_latency_ms is None:
            raise AgentError(f"--emulate-latency: the manifest gives device {dev.device} no "
                             "predicted_latency_ms")
        if len(dev.views) > 1 and not cfg.source.startswith("replay"):
            raise AgentError(f"device {dev.device} sees views {list(dev.views)}: only a "
                             "replay source feeds more than one view")
        self.cfg, self.dev = cfg, dev
        self.sources = [open_source(cfg.source, view=v, image_shape=dev.image_shape,
                                    deploy_dir=dev.deploy_dir) for v in dev.views]
        self.boot_ns = time.time_ns()
        self._stop = threading.Event()  # stop now (signal)
        self._produced = threading.Event()  # the frame loop has put its last frame
        self.outbox: DropOldestQueue[_Outgoing] = DropOldestQueue(cfg.outbox)
        self._lock = threading.Lock()
        # dropped_held: the sender's oldest frame, given up for newer ones while the link
        # was not ready (the outbox's own drops are in self.outbox.dropped)
        # skipped_past: frames already past when the agent started (a restart mid-run)
        self.counts = {"frames": 0, "published": 0, "dropped_link": 0, "dropped_held": 0,
                       "heartbeats": 0, "skipped_past": 0}
        self.last_frame: int | None = None
        # per-frame timings of the last TIMINGS_KEPT frames (medians in the summary): bounded,
        # so a daemon that runs for months does not grow
        self.inference_s: deque[float] = deque(maxlen=TIMINGS_KEPT)
        self.overhead_s: deque[float] = deque(maxlen=TIMINGS_KEPT)  # encode + enqueue
        self.publish_s: deque[float] = deque(maxlen=TIMINGS_KEPT)  # handing it to the link
        self.error: SlimEdgeError | None = None
        f = dev.fleet
        self.topic_features = topics.features(f, dev.device)
        self.topic_heartbeat = topics.heartbeat(f, dev.device)
        self.topic_status = topics.status(f, dev.device)
        self.client = MqttClient(
            cfg.broker, name=dev.device, keepalive=cfg.keepalive, ca_file=cfg.ca_file,
            reconnect_delay=(0.1, 2.0),  # a device back within seconds of its broker
            will=Message(self.topic_status, "offline", 1, True),
            birth=Message(self.topic_status, "online", 1, True),
        )
        self.updates = None  # signed updates: verified and prepared on their own thread
        if receiver is not None:
            from slimedge.runtime.update_receiver import UpdateLink, prepare_model

            self.updates = UpdateLink(self.client, f, receiver,
                                      functools.partial(prepare_model, dev))

    # ---- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop soon (from a signal handler or another thread)."""
        self._stop.set()

    @property
    def dropped(self) -> int:
        s = self.client.stats()
        with self._lock:
            link = self.counts["dropped_link"] + self.counts["dropped_held"]
        return self.outbox.dropped + link + s["lost_in_flight"]

    # ---- threads -------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            self.client.publish(self.topic_heartbeat, heartbeat_payload(
                self.dev, seq=seq, boot_ns=self.boot_ns, period_s=self.cfg.heartbeat_s,
                last_frame=self.last_frame, dropped=self.dropped,
                update_sequence=self.update_sequence))
            with self._lock:
                self.counts["heartbeats"] = seq
            self._stop.wait(self.cfg.heartbeat_s)

    def _link_ready(self) -> bool:
        return self.client.connected and self.client.pending < self.cfg.window

    def _sender(self) -> None:
        while not self._stop.is_set():
            item = self.outbox.get(0.05)
            if item is None:
                if self._produced.is_set() and len(self.outbox) == 0:
                    return
                continue
            while not self._stop.is_set():
                wait_ns = item.ready_ns - time.time_ns()
                if wait_ns > 0:  # the board would still be computing / sending
                    self._stop.wait(min(wait_ns / 1e9, 0.05))
                    continue
                if self.client.refused is not None:
                    self.error = AgentError(str(self.client.refused))
                    self._stop.set()
                    return
                if self._link_ready():
                    break
                if len(self.outbox) >= self.cfg.outbox:  # newer frames waiting: drop this one
                    with self._lock:
                        self.counts["dropped_held"] += 1
                    item = None
                    break
                self._stop.wait(0.005)
            if item is None or self._stop.is_set():
                continue
            t0 = time.perf_counter()
            ok = self.client.publish(self.topic_features, item.payload)
            self.publish_s.append(time.perf_counter() - t0)
            with self._lock:
                self.counts["published" if ok else "dropped_link"] += 1

    # ---- the frame loop ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg, dev = self.cfg, self.dev
        self.client.start(wait=None)
        end = time.monotonic() + cfg.connect_wait_s
        try:  # wait for the broker a while (a signal still stops us), then run regardless:
            # frames made while it is away wait in the outbox
            while not self.client.wait_connected(0.1) and time.monotonic() < end:
                if self._stop.is_set():
                    break
        except SlimEdgeError as e:  # refused: no point in running
            self.client.stop()
            raise AgentError(f"device {dev.device}: {e}") from None
        threads = [threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True),
                   threading.Thread(target=self._sender, name="sender", daemon=True)]
        for t in threads:
            t.start()
        if self.updates is not None:
            self.updates.start()
        start_ns = cfg.start_at_ns if cfg.start_at_ns is not None else time.time_ns()
        period_ns = 1e9 / cfg.fps
        hold_ns = int(dev.predicted_latency_ms * 1e6) if cfg.emulate_latency else None
        log.info("agent %s: %s on board %s, fleet %s, %s, broker %s", dev.device, dev.runtime,
                 dev.board, dev.fleet, self.sources[0].describe, self.client.url)
        try:
            self._frame_loop(start_ns, period_ns, hold_ns)
        finally:
            self._produced.set()
            for s in self.sources:
                s.close()
        if not self._stop.is_set():  # done: let the sender empty the outbox
            threads[1].join(timeout=max(5.0, (hold_ns or 0) / 1e9 + 5.0))
            end = time.monotonic() + 5.0
            while self.client.pending and time.monotonic() < end:
                time.sleep(0.01)
        self._stop.set()
        for t in threads:
            t.join(timeout=2.0)
        if self.updates is not None:
            self.updates.stop()
        self.client.stop([Message(self.topic_status, "stopped", 1, True)])
        if self.error is not None:
            raise self.error
        return self.summary()

    def _skip_past(self, iters: list[Any], start_ns: int, period_ns: float) -> int:
        """With a common start time, pass over the frames already past (their images too, so
        frame ids stay the source's); returns the first frame to run."""
        if self.cfg.start_at_ns is None:
            return 0
        late_ns = int(round(self.dev.system_latency_ms * 1e6))
        first = first_due_frame(start_ns, period_ns, time.time_ns(), late_ns)
        if self.cfg.frames is not None:
            first = min(first, self.cfg.frames)
        skipped = 0
        for _ in range(first):
            if any(next(it, None) is None for it in iters):
                break
            skipped += 1
        if skipped:
            log.info("agent %s: started after frame %d was due: %d past frame(s) skipped",
                     self.dev.device, skipped - 1, skipped)
        with self._lock:
            self.counts["skipped_past"] = skipped
        return skipped

    def _frame_loop(self, start_ns: int, period_ns: float, hold_ns: int | None) -> None:
        cfg, dev = self.cfg, self.dev
        iters = [iter(s) for s in self.sources]
        i = self._skip_past(iters, start_ns, period_ns)
        while cfg.frames is None or i < cfg.frames:
            capture_ns = capture_time_ns(start_ns, period_ns, i)
            wait = (capture_ns - time.time_ns()) / 1e9
            if wait > 0 and self._stop.wait(wait):
                return
            if self._stop.is_set():
                return
            if self.updates is not None:  # between two frames: a prepared update goes in
                self.updates.swap_if_ready(i)
            for view, it in zip(dev.views, iters, strict=True):
                got = next(it, None)
                if got is None:
                    return
                frame_id, image = got
                t0 = time.perf_counter()
                out = dev.engine.run(image)
                t1 = time.perf_counter()
                payload = frames.encode(frames.FeatureMessage(
                    view=view, seq=frame_id, timestamp_ns=capture_ns, device=dev.device,
                    features=out.features, scale=out.scale, zero_point=out.zero_point,
                    deployment_id=dev.deployment_id, level=dev.level,
                    model_hash=dev.model_hash))
                self.outbox.put(_Outgoing(frame_id, capture_ns + hold_ns if hold_ns else 0,
                                          payload))
                t2 = time.perf_counter()
                self.inference_s.append(t1 - t0)
                self.overhead_s.append(t2 - t1)
                self.last_frame = frame_id
                with self._lock:
                    self.counts["frames"] += 1
            i += 1

    @property
    def update_sequence(self) -> int:
        """The signed update served (0: the deployment as provisioned)."""
        return self.updates.sequence if self.updates is not None else 0

    def summary(self) -> dict[str, Any]:
        import statistics

        dev = self.dev
        with self._lock:
            counts = dict(self.counts)
        def med(xs: deque[float]) -> float | None:
            return round(statistics.median(xs) * 1e3, 4) if xs else None

        return {
            "device": dev.device, "board": dev.board, "runtime": dev.runtime,
            "update_sequence": self.update_sequence,
            "fleet": dev.fleet, "deployment_id": dev.deployment_id, "views": list(dev.views),
            "model_hash": dev.model_hash, "key": dev.key_fingerprint,
            "arena_bytes": dev.arena_bytes, "arena_budget_bytes": dev.arena_budget_bytes,
            **counts, "dropped": self.dropped,
            "dropped_outbox": self.outbox.dropped + counts["dropped_held"],
            "last_frame": self.last_frame,
            "inference_ms_median": med(self.inference_s),
            "overhead_ms_median": med(self.overhead_s),
            "publish_ms_median": med(self.publish_s),
            "link": self.client.stats(),
        }


def run_agent(cfg: AgentConfig) -> dict[str, Any]:
    """Verify, load and run until the frames are done or SIGTERM/SIGINT; then "stopped"."""
    dev = load_device(cfg.deploy, cfg.device, cfg.public_key)
    receiver = None
    if cfg.updates:
        from slimedge.runtime.device_setup import provisioned_key
        from slimedge.runtime.update_receiver import open_updates, serve_model

        state = cfg.state or cfg.deploy.resolve().parent / "device-state" / cfg.device
        receiver, path, info = open_updates(state, cfg.deploy, cfg.device, dev.board,
                                            provisioned_key(cfg.public_key))
        if info.model_sha256 != dev.model_hash:  # an update applied before this start
            serve_model(dev, path, info)
    agent = Agent(cfg, dev, receiver)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: agent.stop())
    try:
        return agent.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m slimedge.runtime.agent ...`: the agent without the full CLI."""
    import argparse
    import sys

    from slimedge.runtime import commands

    p = argparse.ArgumentParser(prog="python -m slimedge.runtime.agent",
                                description="The SlimEdge device agent.")
    commands.add_agent_run_options(p)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        summary = commands.agent_run(args)
    except SlimEdgeError as e:
        print(f"slimedge agent: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
