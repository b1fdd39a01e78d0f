"""The aggregator: feature messages in, one classified result per frame out.

`Aggregator` is the whole service logic without a network: feed it every received message as
`handle(topic, payload, now_ns)` and call `tick(now_ns)` every few milliseconds; both
return the frames answered. The MQTT service (`slimedge.runtime.aggregator_service`) only
moves bytes in and results out.

Per frame: views are aligned by frame id (`alignment.FrameAligner`) until the frame's deadline,
capture time + the plan's predicted latency + slack, or until every view of every device not
dead has arrived. Then the views that arrived are pooled by the C++ core exactly as the export's
system check and the planner's evaluator pool them (`slimedge.export.agreement.pool_views`,
over `slimedge._core.pool`), with the mode and weights the contingency table gives that live
set (`live_weights.LiveSetPooling`), and classified by the deployment's head in LiteRT.

Every message that cannot be used is refused and counted by reason (`REASONS`); nothing a peer
sends raises out of `handle`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimedge.export.agreement import ViewFeatures, pool_views
from slimedge.runtime import frames, topics
from slimedge.runtime.aggregator_deployment import AggregatorDeployment
from slimedge.runtime.alignment import FrameAligner, PendingFrame, RefusedViewError
from slimedge.runtime.detector import (
    DetectorConfig,
    FailureDetector,
    HeartbeatError,
    StaleHeartbeatError,
    StateChange,
    parse_heartbeat,
)
from slimedge.runtime.head import HeadRunner

__all__ = ["DEFAULT_SLACK_MS", "REASONS", "Aggregator", "FrameResult"]

log = logging.getLogger("slimedge.aggregator")

DEFAULT_SLACK_MS = 500.0  # loopback fleets on a busy 2-core host answer every frame within it
DEADLINE_TOLERANCE_NS = 20_000_000  # answered this soon after the deadline still counts on time
MIN_MODEL_HASH_CHARS = 16
RATE_WINDOW_S = 10.0  # frames/s is measured over this much recent time

# Why a message was refused (the keys of `rejected`).
REASONS = (
    "foreign_topic",  # not slimedge/<this fleet>/<device>/{features,heartbeat,status}
    "unknown_device",  # a device the deployment does not list
    "oversize",  # larger than any feature message of this deployment
    "truncated",  # shorter than its header says
    "bad_crc",  # CRC-32 mismatch
    "non_finite",  # NaN/Inf features or scale
    "malformed",  # any other decoding failure (magic, version, field values, UTF-8)
    "device_mismatch",  # the message's device id is not its sender's (topic)
    "view_not_owned",  # the sender does not own that view in the deployment
    "wrong_deployment",  # deployment id missing or not this deployment's
    "wrong_model",  # model hash or level not the sender's artifact
    "wrong_shape",  # feature count differs from the deployment's D
    "wrong_dtype",  # int8 vs float32 not what the sender's artifact outputs
    "bad_timestamp",  # capture time far in the future
    "duplicate",  # a view already received (or used) for that frame
    "late",  # a view after its frame's deadline or answer
    "overload",  # too many frames open at once
    "bad_heartbeat",  # heartbeat not JSON / wrong fields / not its sender's
    "stale_heartbeat",  # heartbeat not newer than the last accepted one
    "bad_status",  # status text not online/offline/stopped
    "internal_error",  # a bug: logged with its traceback, the message dropped
)


def classify_frame_error(message: str) -> str:
    """The rejection reason of a `frames.decode` error (its message names the field)."""
    if "field 'crc32'" in message:
        return "bad_crc"
    if "truncated" in message:
        return "truncated"
    if "finite" in message:
        return "non_finite"
    return "malformed"


@dataclass(frozen=True)
class FrameResult:
    frame: int
    capture_ns: int
    deadline_ns: int
    answered_ns: int
    cls: int
    class_name: str | None
    confidence: float
    views: tuple[int, ...]  # views pooled (arrived in time)
    live_set: tuple[int, ...]  # views of the devices not dead when answered
    missing: tuple[int, ...]  # live views that did not arrive
    dead_mask: int  # of the views pooled
    weights_from: str  # head | table | renormalize
    in_table: bool
    predicted_accuracy: float | None
    added_ms: float  # last view's arrival -> answer (> 0 when answered at the deadline)
    compute_ms: float  # the handle()/tick() call that answered it: decode, align, pool, head
    label: int | None

    @property
    def latency_ms(self) -> float:
        return (self.answered_ns - self.capture_ns) / 1e6

    @property
    def deadline_missed(self) -> bool:
        return self.answered_ns > self.deadline_ns + DEADLINE_TOLERANCE_NS

    @property
    def correct(self) -> bool | None:
        return None if self.label is None else self.cls == self.label

    def to_message(self) -> dict[str, Any]:
        """The JSON object published on slimedge/<fleet>/results."""
        return {
            "frame": self.frame, "class": self.cls, "class_name": self.class_name,
            "confidence": round(self.confidence, 6), "views": list(self.views),
            "live_set": list(self.live_set), "missing": list(self.missing),
            "predicted_accuracy": self.predicted_accuracy,
            "weights_from": self.weights_from, "in_table": self.in_table,
            "latency_ms": round(self.latency_ms, 3), "added_ms": round(self.added_ms, 3),
            "compute_ms": round(self.compute_ms, 4),
            "deadline_missed": self.deadline_missed, "capture_ns": self.capture_ns,
            "deadline_ns": self.deadline_ns, "answered_ns": self.answered_ns,
        }


def _softmax_max(logits: np.ndarray) -> tuple[int, float]:
    z = logits.astype(np.float64)
    z = z - z.max()
    p = np.exp(z)
    i = int(np.argmax(logits))
    return i, float(p[i] / p.sum())


class Aggregator:
    def __init__(self, dep: AggregatorDeployment, head: HeadRunner, *, now_ns: int,
                 slack_ms: float = DEFAULT_SLACK_MS,
                 detector: DetectorConfig | None = None,
                 labels: Sequence[int] | np.ndarray | None = None,
                 window: int = 2048) -> None:
        self.dep = dep
        self.head = head
        self.slack_ms = float(slack_ms)
        self.window_ns = int((dep.predicted_latency_ms + self.slack_ms) * 1e6)
        self.aligner = FrameAligner(self.window_ns)
        self.detector = FailureDetector(dep.devices, detector, now_ns=now_ns)
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        self.max_bytes = dep.max_message_bytes()
        self.started_ns = now_ns
        self.rejected: Counter[str] = Counter()
        self.rejected_by_device: dict[str, Counter[str]] = {d: Counter() for d in dep.devices}
        self.accepted_by_device: Counter[str] = Counter()
        self.recent_rejections: deque[dict[str, Any]] = deque(maxlen=20)
        self.events: list[dict[str, Any]] = []  # drained by the service (events.jsonl)
        self.answered = 0
        self.incomplete = 0
        self.deadline_missed = 0
        self.correct = 0
        self.labelled = 0
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self.added_ms: deque[float] = deque(maxlen=window)
        self.compute_ms: deque[float] = deque(maxlen=window)
        self._entered = 0  # perf_counter_ns when the current handle()/tick() began
        self._per_second: deque[list[int]] = deque(maxlen=int(RATE_WINDOW_S) + 1)  # [s, n]
        self.last: FrameResult | None = None
        self._expected = self._expected_views()
        self._topics: dict[str, tuple[str, str]] = {}  # topic -> (device, kind), known only

    # ------------------------------------------------------------------ input
    def handle(self, topic: str, payload: bytes | bytearray | memoryview | str,
               now_ns: int) -> list[FrameResult]:
        """One received message; returns the frames it completed (none or one)."""
        self._entered = time.perf_counter_ns()
        try:
            return self._handle(topic, payload, now_ns)
        except Exception as e:  # noqa: BLE001 - a daemon must survive its own bugs too
            log.exception("message on %r dropped: internal error", topic)
            self._reject("internal_error", None, f"{type(e).__name__}: {e}", now_ns)
            return []

    def _handle(self, topic: str, payload: Any, now_ns: int) -> list[FrameResult]:
        known = self._topics.get(topic)
        if known is None:
            try:
                fleet, device, kind = topics.device_of(topic)
            except topics.TopicError as e:
                return self._reject("foreign_topic", None, str(e), now_ns)
            if fleet != self.dep.fleet or kind not in ("features", "heartbeat", "status"):
                return self._reject("foreign_topic", None, f"topic {topic!r}", now_ns)
            if device not in self.dep.devices:
                return self._reject("unknown_device", None, f"device {device!r}", now_ns)
            # parsed once per topic: bounded by the deployment's devices x 3 kinds
            known = self._topics[topic] = (device, kind)
        device, kind = known
        spec = self.dep.devices[device]
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if kind == "heartbeat":
            return self._heartbeat(device, payload, now_ns)
        if kind == "status":
            return self._status(device, payload, now_ns)
        return self._features(spec, payload, now_ns)

    def _features(self, spec: Any, payload: bytes, now_ns: int) -> list[FrameResult]:
        device = spec.device
        if len(payload) > self.max_bytes:
            return self._reject("oversize", device, f"{len(payload)} bytes > {self.max_bytes}",
                                now_ns)
        try:
            msg = frames.decode(payload, source=device)
        except frames.FrameError as e:
            return self._reject(classify_frame_error(str(e)), device, str(e), now_ns)
        if msg.device != device:
            return self._reject("device_mismatch", device,
                                f"message names device {msg.device!r}", now_ns)
        if msg.view not in spec.views:
            return self._reject("view_not_owned", device, f"view {msg.view} (owns "
                                f"{list(spec.views)})", now_ns)
        dep_id = getattr(msg, "deployment_id", None)
        if dep_id != self.dep.deployment_id:
            return self._reject("wrong_deployment", device, f"deployment {dep_id!r}", now_ns)
        model_hash = getattr(msg, "model_hash", None)
        level = getattr(msg, "level", None)
        if (not isinstance(model_hash, str) or len(model_hash) < MIN_MODEL_HASH_CHARS
                or not spec.model_hash.startswith(model_hash.lower())):
            return self._reject("wrong_model", device, f"model hash {model_hash!r:.24}", now_ns)
        if level is None or np.float32(level) != np.float32(spec.level):
            return self._reject("wrong_model", device, f"level {level} (runs {spec.level})",
                                now_ns)
        if msg.dim != self.dep.feature_dim:
            return self._reject("wrong_shape", device, f"{msg.dim} features, expected "
                                f"{self.dep.feature_dim}", now_ns)
        if msg.features.dtype != spec.dtype:
            return self._reject("wrong_dtype", device, f"{msg.features.dtype} features, "
                                f"expected {spec.dtype}", now_ns)
        try:
            p = self.aligner.add(msg.seq, msg.view, msg.timestamp_ns, msg, now_ns)
        except RefusedViewError as r:
            return self._reject(r.reason, device, str(r), now_ns)
        self.accepted_by_device[device] += 1
        if self.aligner.complete(p, self._expected):
            return [self._answer(p, now_ns)]
        return []

    def _heartbeat(self, device: str, payload: bytes, now_ns: int) -> list[FrameResult]:
        try:
            hb = parse_heartbeat(payload)
        except HeartbeatError as e:
            return self._reject("bad_heartbeat", device, str(e), now_ns)
        if hb.device != device:
            return self._reject("bad_heartbeat", device, f"heartbeat names {hb.device!r}",
                                now_ns)
        if hb.deployment_id != self.dep.deployment_id:
            return self._reject("wrong_deployment", device,
                                f"heartbeat deployment {hb.deployment_id!r}", now_ns)
        try:
            changes = self.detector.heartbeat(hb, now_ns)
        except StaleHeartbeatError as e:
            return self._reject("stale_heartbeat", device, str(e), now_ns)
        return self._now_complete(now_ns) if self._record(changes) else []

    def _status(self, device: str, payload: bytes, now_ns: int) -> list[FrameResult]:
        try:
            text = payload.decode("utf-8")
            changes = self.detector.status(device, text, now_ns)
        except (UnicodeDecodeError, HeartbeatError) as e:
            return self._reject("bad_status", device, str(e), now_ns)
        return self._now_complete(now_ns) if self._record(changes) else []

    def _reject(self, reason: str, device: str | None, detail: str,
                now_ns: int) -> list[FrameResult]:
        self.rejected[reason] += 1
        if device is not None:
            self.rejected_by_device[device][reason] += 1
        self.recent_rejections.append({"t_ns": now_ns, "reason": reason, "device": device,
                                       "detail": detail[:200]})
        return []

    # ------------------------------------------------------------------ time
    def tick(self, now_ns: int) -> list[FrameResult]:
        """Silence timeouts, then every frame due by now (deadline or complete)."""
        self._entered = time.perf_counter_ns()
        self._record(self.detector.tick(now_ns))
        out = []
        for p in self.aligner.due(now_ns, self._expected):
            try:
                out.append(self._answer(p, now_ns))
            except Exception as e:  # noqa: BLE001 - as in handle(): counted, logged, not fatal
                log.exception("frame %d dropped: internal error", p.frame)
                self._reject("internal_error", None, f"frame {p.frame}: {type(e).__name__}: "
                             f"{e}", now_ns)
        return out

    def link(self, up: bool, now_ns: int) -> None:
        """Our own broker link went down or came back (the detector stops blaming devices
        for silence meanwhile); logged as a "link" event."""
        if up == (self.detector.deaf_since is None):
            return
        self.detector.listening(up, now_ns)
        self._event(now_ns, "link", up=up)

    def _record(self, changes: list[StateChange]) -> bool:
        """Log state changes and renew the set of views frames wait for."""
        for c in changes:
            self._event(c.t_ns, "state", device=c.device, state=c.state, previous=c.previous,
                         reason=c.reason)
        if changes:
            self._expected = self._expected_views()
        return bool(changes)

    def _now_complete(self, now_ns: int) -> list[FrameResult]:
        """Frames a device's death completed (they were waiting only for it)."""
        return [self._answer(p, now_ns) for p in self.aligner.due(now_ns, self._expected)]

    def _expected_views(self) -> frozenset[int]:
        alive = self.detector.expected()
        return frozenset(v for d in alive for v in self.dep.devices[d].views)

    def _event(self, t_ns: int, event: str, **fields: Any) -> None:
        self.events.append({"t_ns": t_ns, "event": event, **fields})

    def drain_events(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out

    # ------------------------------------------------------------------ answer
    def _answer(self, p: PendingFrame, now_ns: int) -> FrameResult:
        self.aligner.close(p)
        V = self.dep.views
        dead = 0
        views: list[ViewFeatures | None] = [None] * V
        for v in range(V):
            msg = p.views.get(v)
            if msg is None:
                dead |= 1 << v
            else:
                views[v] = ViewFeatures(msg.features[None, :], msg.scale, msg.zero_point)
        rule = self.dep.pooling.for_dead_mask(dead)
        pooled, _ = pool_views(views, rule.mode, rule.weights)
        cls, conf = _softmax_max(self.head.logits(pooled)[0])
        used = tuple(sorted(p.views))
        missing = tuple(sorted(self._expected - p.views.keys()))
        label = None
        if self.labels is not None and 0 <= p.frame < len(self.labels):
            label = int(self.labels[p.frame])
        names = self.dep.class_names
        r = FrameResult(
            frame=p.frame, capture_ns=p.capture_ns, deadline_ns=p.deadline_ns,
            answered_ns=now_ns, cls=cls, class_name=names[cls] if cls < len(names) else None,
            confidence=conf, views=used, live_set=tuple(sorted(self._expected)),
            missing=missing, dead_mask=dead, weights_from=rule.source, in_table=rule.in_table,
            predicted_accuracy=rule.predicted_accuracy,
            added_ms=(now_ns - p.last_arrival_ns) / 1e6,
            compute_ms=(time.perf_counter_ns() - self._entered) / 1e6, label=label)
        self._account(r, now_ns)
        if missing and now_ns >= p.deadline_ns and self.detector.deaf_since is None:
            for dev in sorted({self.dep.view_device[v] for v in missing} - {None}):
                self._record(self.detector.missed_deadline(dev, p.frame, now_ns))
        return r

    def _account(self, r: FrameResult, now_ns: int) -> None:
        self.answered += 1
        self.incomplete += bool(r.missing)
        self.deadline_missed += r.deadline_missed
        if r.correct is not None:
            self.labelled += 1
            self.correct += r.correct
        self.latencies_ms.append(r.latency_ms)
        self.added_ms.append(r.added_ms)
        self.compute_ms.append(r.compute_ms)
        sec = now_ns // 1_000_000_000
        if self._per_second and self._per_second[-1][0] == sec:
            self._per_second[-1][1] += 1
        else:
            self._per_second.append([sec, 1])
        prev = self.last
        if prev is None or prev.dead_mask != r.dead_mask:
            self._event(now_ns, "contingency_switch", frame=r.frame,
                        previous_views=None if prev is None else list(prev.views),
                        views=list(r.views), dead_mask=r.dead_mask,
                        weights_from=r.weights_from, in_table=r.in_table,
                        predicted_accuracy=r.predicted_accuracy)
            if not r.in_table:
                self._event(now_ns, "replan_needed", frame=r.frame, views=list(r.views),
                            dead_mask=r.dead_mask,
                            reason="live set outside the contingency table: pooled by "
                                   "renormalization")
        self.last = r

    # ------------------------------------------------------------------ status
    def status(self, now_ns: int) -> dict[str, Any]:
        """Everything /status, /metrics, the HTML page and metrics.json show."""
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        added = np.array(self.added_ms) if self.added_ms else None
        compute = np.array(self.compute_ms) if self.compute_ms else None
        # answers in the last 10 whole seconds and this one, over that time (or since start)
        now_s = now_ns // 1_000_000_000
        recent = sum(n for sec, n in self._per_second if sec >= now_s - RATE_WINDOW_S)
        span = min(RATE_WINDOW_S + (now_ns % 1_000_000_000) / 1e9,
                   (now_ns - self.started_ns) / 1e9)
        last = self.last
        states = self.detector.snapshot(now_ns)
        for s in states:
            s["views"] = list(self.dep.devices[s["device"]].views)
            s["accepted"] = self.accepted_by_device[s["device"]]
            s["rejected"] = dict(self.rejected_by_device[s["device"]])
        live = sorted(self._expected)
        live_rule = self.dep.pooling.for_dead_mask(
            sum(1 << v for v in range(self.dep.views) if v not in self._expected))
        return {
            "deployment_id": self.dep.deployment_id, "fleet": self.dep.fleet,
            "uptime_s": round((now_ns - self.started_ns) / 1e9, 3),
            "window_ms": self.window_ns / 1e6, "slack_ms": self.slack_ms,
            "predicted_latency_ms": self.dep.predicted_latency_ms,
            "frames_answered": self.answered, "frames_incomplete": self.incomplete,
            "deadline_missed": self.deadline_missed, "frames_pending": len(self.aligner.pending),
            "frames_per_s": round(recent / span, 3) if span > 0 else 0.0,
            "latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99)},
            "added_ms": {"p50": _pct(added, 50), "p99": _pct(added, 99)},
            "compute_ms": {"p50": _pct(compute, 50, 4), "p99": _pct(compute, 99, 4)},
            "accuracy": (self.correct / self.labelled) if self.labelled else None,
            "labelled": self.labelled, "correct": self.correct,
            "live_set": live,
            "live_set_predicted_accuracy": live_rule.predicted_accuracy,
            "live_set_in_table": live_rule.in_table,
            "last_frame": None if last is None else last.to_message(),
            "devices": states,
            "rejected": {r: self.rejected[r] for r in REASONS if self.rejected[r]},
            "rejected_total": sum(self.rejected.values()),
            "recent_rejections": list(self.recent_rejections),
        }


def _pct(x: np.ndarray | None, q: float, digits: int = 3) -> float | None:
    return None if x is None else round(float(np.percentile(x, q)), digits)
