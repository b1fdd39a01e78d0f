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

Fleet-wide switch: `schedule(dep, head, from_frame, sequence)` prepares another deployment for
frames >= F (the frames before keep the deployment they had). Each frame is pooled with the
deployment of its frame id (`served_for`): its head, pooling rule, devices and their models; a
feature message is accepted for frame f only if it carries that deployment's id, or the id of
another deployment this aggregator knows together with the very model (sha256) that frame f's
deployment names for its device: a device the switch left unchanged keeps sending under its old
id, and its features are those of the new deployment's model. So a frame is never pooled across
two models (the aligner keeps one deployment per frame, and `_answer` checks again).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimedge.errors import SlimEdgeError
from slimedge.export.agreement import ViewFeatures, pool_views
from slimedge.runtime import frames, topics
from slimedge.runtime.aggregator_deployment import AggregatorDeployment
from slimedge.runtime.alignment import FrameAligner, PendingFrame, RefusedViewError
from slimedge.runtime.detector import (
    DetectorConfig,
    DeviceHealth,
    FailureDetector,
    HeartbeatError,
    StaleHeartbeatError,
    StateChange,
    parse_heartbeat,
)
from slimedge.runtime.head import HeadRunner

__all__ = ["DEFAULT_SLACK_MS", "REASONS", "Aggregator", "FrameResult", "Served",
           "SwitchRefusedError"]

log = logging.getLogger("slimedge.aggregator")

DEFAULT_SLACK_MS = 500.0  # loopback fleets on a busy 2-core host answer every frame within it
DEADLINE_TOLERANCE_NS = 20_000_000  # answered this soon after the deadline still counts on time
MIN_MODEL_HASH_CHARS = 16
RATE_WINDOW_S = 10.0  # frames/s is measured over this much recent time
KEPT_DEPLOYMENTS = 4  # deployments remembered (late frames of older ones are refused)

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
    "wrong_deployment",  # deployment id missing or not the deployment of the message's frame
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
    "cross_deployment",  # a frame holding views of two deployments: not pooled (never expected)
    "internal_error",  # a bug: logged with its traceback, the message dropped
)


class SwitchRefusedError(SlimEdgeError):
    """A deployment that cannot be scheduled; `reason` is an aggregator_update reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.detail = reason, message


@dataclass
class Served:
    """One deployment and the frames it pools: `from_frame` up to the next one's."""

    dep: AggregatorDeployment
    head: HeadRunner
    from_frame: int
    sequence: int  # of the switch order that brought it (0: the deployment started with)
    window_ns: int
    expected: frozenset[int] = field(default_factory=frozenset)  # views of devices not dead
    first_frame: int | None = None  # the first frame answered with it
    prepared_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"deployment_id": self.dep.deployment_id, "from_frame": self.from_frame,
                "sequence": self.sequence, "first_frame": self.first_frame}


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
    deployment_id: str | None = None  # the deployment whose models and head made this answer

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
            "deployment_id": self.deployment_id,
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
        self.slack_ms = float(slack_ms)
        self.window_ns = int((dep.predicted_latency_ms + self.slack_ms) * 1e6)
        # the deployment of the latest frame answered (of frame 0 before any)
        self._current = Served(dep, head, 0, 0, self.window_ns, prepared_ns=now_ns)
        self._served = [self._current]
        self.aligner = FrameAligner(self.window_ns)
        self.detector = FailureDetector(dep.devices, detector, now_ns=now_ns)
        self.switches: list[Served] = []  # applied since the last drain (the service acks them)
        self.switch_counts: Counter[str] = Counter()  # prepared, applied, superseded
        self.refused_across = 0  # messages of a known deployment for another one's frame
        # messages under an older deployment id whose model the frame's deployment names too
        self.accepted_same_model = 0
        self._known_ids = {dep.deployment_id}  # every deployment served or scheduled
        self._latest_answered = -1
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

    # ------------------------------------------------------------------ deployments
    @property
    def dep(self) -> AggregatorDeployment:
        """The deployment of the latest frame answered."""
        return self._current.dep

    @property
    def head(self) -> HeadRunner:
        return self._current.head

    @head.setter
    def head(self, head: HeadRunner) -> None:
        self._current.head = head

    def _window_ns(self, dep: AggregatorDeployment) -> int:
        return int((dep.predicted_latency_ms + self.slack_ms) * 1e6)

    def served_for(self, frame: int) -> Served:
        """The deployment that pools frame `frame`."""
        for s in reversed(self._served):
            if frame >= s.from_frame:
                return s
        return self._served[0]

    @property
    def served(self) -> list[Served]:
        return list(self._served)

    def first_free_frame(self) -> int:
        """The lowest frame id that no frame was opened (or answered) for: the earliest frame
        a switch may start at."""
        return self.aligner.max_opened + 1

    def deployment_ids(self) -> set[str]:
        """Every deployment served or scheduled here (also those no longer remembered: a
        device a switch left unchanged may still announce its first deployment)."""
        return set(self._known_ids)

    @staticmethod
    def same_model(dep: AggregatorDeployment, device: str, model_hash: Any) -> bool:
        """Whether `model_hash` (a message's, a prefix of at least MIN_MODEL_HASH_CHARS)
        names the artifact `dep` gives `device`: the same bytes, so the same features and
        quantization whatever deployment id the message carries."""
        spec = dep.devices.get(device)
        return (spec is not None and isinstance(model_hash, str)
                and len(model_hash) >= MIN_MODEL_HASH_CHARS
                and spec.model_hash.startswith(model_hash.lower()))

    def schedule(self, dep: AggregatorDeployment, head: HeadRunner, from_frame: int,
                 sequence: int, now_ns: int) -> Served:
        """Pool frames >= `from_frame` with `dep` and `head` (prepared: verified and loaded).
        A switch not started yet (no frame of it opened) is superseded. SwitchRefusedError
        (wrong-fleet, frame-passed) leaves everything as it was."""
        from slimedge.runtime.aggregator_update import FRAME_PASSED, WRONG_FLEET

        if dep.fleet != self.dep.fleet:
            raise SwitchRefusedError(WRONG_FLEET, f"deployment {dep.deployment_id} is of fleet "
                                     f"{dep.fleet!r}, this aggregator serves {self.dep.fleet!r}")
        if head.feature_dim != dep.feature_dim or head.n_classes != dep.n_classes:
            raise SwitchRefusedError("self-test", f"head {head.path} does not fit deployment "
                                     f"{dep.deployment_id}")
        opened = self.aligner.max_opened
        if from_frame <= opened:
            raise SwitchRefusedError(FRAME_PASSED, f"commit at frame {from_frame}, but frames "
                                     f"up to {opened} are opened or answered already")
        for old in [s for s in self._served[1:] if s.from_frame > opened]:
            self._served.remove(old)
            self.switch_counts["superseded"] += 1
            self._event(now_ns, "switch_superseded", sequence=old.sequence,
                        deployment_id=old.dep.deployment_id, from_frame=old.from_frame,
                        by=sequence)
        s = Served(dep, head, int(from_frame), int(sequence), self._window_ns(dep),
                   prepared_ns=now_ns)
        self._served.append(s)
        self._known_ids.add(dep.deployment_id)
        while len(self._served) > KEPT_DEPLOYMENTS:
            del self._served[0]
        for d in dep.devices:  # a device new in this deployment is watched from now on
            self.detector.devices.setdefault(d, DeviceHealth(d, since_ns=now_ns,
                                                             last_heard_ns=now_ns))
            self.rejected_by_device.setdefault(d, Counter())
        self.max_bytes = max(self.max_bytes, dep.max_message_bytes())
        self._expected = self._expected_views()
        self.switch_counts["prepared"] += 1
        self._event(now_ns, "switch_prepared", sequence=sequence,
                    deployment_id=dep.deployment_id, commit_at_frame=from_frame,
                    previous=self._served[-2].dep.deployment_id)
        return s

    def drain_switches(self) -> list[Served]:
        """Deployments whose first frame was answered since the last call."""
        out, self.switches = self.switches, []
        return out

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
            if device not in self.detector.devices:
                return self._reject("unknown_device", None, f"device {device!r}", now_ns)
            # parsed once per topic: bounded by the deployment's devices x 3 kinds
            known = self._topics[topic] = (device, kind)
        device, kind = known
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if kind == "heartbeat":
            return self._heartbeat(device, payload, now_ns)
        if kind == "status":
            return self._status(device, payload, now_ns)
        return self._features(device, payload, now_ns)

    def _features(self, device: str, payload: bytes, now_ns: int) -> list[FrameResult]:
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
        served = self.served_for(msg.seq)
        spec = served.dep.devices.get(device)
        if spec is None:
            return self._reject("unknown_device", device, f"not a device of deployment "
                                f"{served.dep.deployment_id}, which pools frame {msg.seq}",
                                now_ns)
        if msg.view not in spec.views:
            return self._reject("view_not_owned", device, f"view {msg.view} (owns "
                                f"{list(spec.views)})", now_ns)
        dep_id = getattr(msg, "deployment_id", None)
        model_hash = getattr(msg, "model_hash", None)
        if dep_id != served.dep.deployment_id:
            known = dep_id in self._known_ids
            if not (known and self.same_model(served.dep, device, model_hash)):
                if known:  # pooling it would mix two models
                    self.refused_across += 1
                return self._reject("wrong_deployment", device, f"deployment {dep_id!r}, "
                                    f"frame {msg.seq} is pooled with "
                                    f"{served.dep.deployment_id}, whose model for {device} "
                                    "is another", now_ns)
            # else: an unchanged device under its old id; the frame's deployment names its model
        level = getattr(msg, "level", None)
        if not self.same_model(served.dep, device, model_hash):
            return self._reject("wrong_model", device, f"model hash {model_hash!r:.24}", now_ns)
        if level is None or np.float32(level) != np.float32(spec.level):
            return self._reject("wrong_model", device, f"level {level} (runs {spec.level})",
                                now_ns)
        if msg.dim != served.dep.feature_dim:
            return self._reject("wrong_shape", device, f"{msg.dim} features, expected "
                                f"{served.dep.feature_dim}", now_ns)
        if msg.features.dtype != spec.dtype:
            return self._reject("wrong_dtype", device, f"{msg.features.dtype} features, "
                                f"expected {spec.dtype}", now_ns)
        try:
            p = self.aligner.add(msg.seq, msg.view, msg.timestamp_ns, msg, now_ns,
                                 window_ns=served.window_ns,
                                 deployment=served.dep.deployment_id)
        except RefusedViewError as r:
            return self._reject(r.reason, device, str(r), now_ns)
        self.accepted_by_device[device] += 1
        if dep_id != served.dep.deployment_id:
            self.accepted_same_model += 1
        if self.aligner.complete(p, self._expected_for):
            return self._answers([p], now_ns)
        return []

    def _heartbeat(self, device: str, payload: bytes, now_ns: int) -> list[FrameResult]:
        try:
            hb = parse_heartbeat(payload)
        except HeartbeatError as e:
            return self._reject("bad_heartbeat", device, str(e), now_ns)
        if hb.device != device:
            return self._reject("bad_heartbeat", device, f"heartbeat names {hb.device!r}",
                                now_ns)
        if hb.deployment_id not in self.deployment_ids():  # a device mid-switch: either
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
        return self._answers(self.aligner.due(now_ns, self._expected_for), now_ns)

    def _answers(self, due: list[PendingFrame], now_ns: int) -> list[FrameResult]:
        out = []
        for p in due:
            try:
                r = self._answer(p, now_ns)
            except Exception as e:  # noqa: BLE001 - as in handle(): counted, logged, not fatal
                log.exception("frame %d dropped: internal error", p.frame)
                self.aligner.close(p)
                self._reject("internal_error", None, f"frame {p.frame}: {type(e).__name__}: "
                             f"{e}", now_ns)
                continue
            if r is not None:
                out.append(r)
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
        return self._answers(self.aligner.due(now_ns, self._expected_for), now_ns)

    def _expected_views(self) -> frozenset[int]:
        """Renew each deployment's expected views; those of the current one."""
        alive = self.detector.expected()
        for s in self._served:
            s.expected = frozenset(v for d in alive if d in s.dep.devices
                                   for v in s.dep.devices[d].views)
        return self.served_for(max(self._latest_answered, 0)).expected

    def _expected_for(self, frame: int) -> frozenset[int]:
        return self.served_for(frame).expected

    def _event(self, t_ns: int, event: str, **fields: Any) -> None:
        self.events.append({"t_ns": t_ns, "event": event, **fields})

    def log_event(self, t_ns: int, event: str, **fields: Any) -> None:
        """An event of the service around the aggregator (events.jsonl), e.g. a refused switch."""
        self._event(t_ns, event, **fields)

    @property
    def latest_frame(self) -> int | None:
        """The highest frame id answered, None before the first."""
        return None if self._latest_answered < 0 else self._latest_answered

    def drain_events(self) -> list[dict[str, Any]]:
        out, self.events = self.events, []
        return out

    # ------------------------------------------------------------------ answer
    def _answer(self, p: PendingFrame, now_ns: int) -> FrameResult | None:
        self.aligner.close(p)
        served = self.served_for(p.frame)
        dep = served.dep
        mixed = sorted({str(m.deployment_id) for m in p.views.values()
                        if m.deployment_id != dep.deployment_id
                        and not self.same_model(dep, m.device, getattr(m, "model_hash", None))})
        if mixed or p.deployment not in (None, dep.deployment_id):
            # Unreachable through handle(): asked to pool across deployments, it says so.
            got = mixed or [p.deployment]
            self._reject("cross_deployment", None, f"frame {p.frame}: views of {got} with "
                         f"deployment {dep.deployment_id}: not pooled (two models never share "
                         "a frame)", now_ns)
            return None
        V = dep.views
        dead = 0
        views: list[ViewFeatures | None] = [None] * V
        for v in range(V):
            msg = p.views.get(v)
            if msg is None:
                dead |= 1 << v
            else:
                views[v] = ViewFeatures(msg.features[None, :], msg.scale, msg.zero_point)
        rule = dep.pooling.for_dead_mask(dead)
        pooled, _ = pool_views(views, rule.mode, rule.weights)
        cls, conf = _softmax_max(served.head.logits(pooled)[0])
        used = tuple(sorted(p.views))
        missing = tuple(sorted(served.expected - p.views.keys()))
        label = None
        if self.labels is not None and 0 <= p.frame < len(self.labels):
            label = int(self.labels[p.frame])
        names = dep.class_names
        r = FrameResult(
            frame=p.frame, capture_ns=p.capture_ns, deadline_ns=p.deadline_ns,
            answered_ns=now_ns, cls=cls, class_name=names[cls] if cls < len(names) else None,
            confidence=conf, views=used, live_set=tuple(sorted(served.expected)),
            missing=missing, dead_mask=dead, weights_from=rule.source, in_table=rule.in_table,
            predicted_accuracy=rule.predicted_accuracy,
            added_ms=(now_ns - p.last_arrival_ns) / 1e6,
            compute_ms=(time.perf_counter_ns() - self._entered) / 1e6, label=label,
            deployment_id=dep.deployment_id)
        self._account(r, served, now_ns)
        if missing and now_ns >= p.deadline_ns and self.detector.deaf_since is None:
            for dev in sorted({dep.view_device[v] for v in missing} - {None}):
                self._record(self.detector.missed_deadline(dev, p.frame, now_ns))
        return r

    def _account(self, r: FrameResult, served: Served, now_ns: int) -> None:
        if served.first_frame is None:
            served.first_frame = r.frame
            if served.sequence > 0:
                i = self._served.index(served)
                self.switch_counts["applied"] += 1
                self.switches.append(served)
                previous = self._served[i - 1].dep.deployment_id if i > 0 else None
                self._event(now_ns, "switch_applied", frame=r.frame, sequence=served.sequence,
                            deployment_id=served.dep.deployment_id,
                            commit_at_frame=served.from_frame, previous=previous)
        if r.frame >= self._latest_answered:
            self._latest_answered = r.frame
            if served is not self._current:
                self._current, self.window_ns = served, served.window_ns
                self._expected = served.expected
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
            spec = self.dep.devices.get(s["device"])  # None: not in the current deployment
            s["views"] = [] if spec is None else list(spec.views)
            s["accepted"] = self.accepted_by_device[s["device"]]
            s["rejected"] = dict(self.rejected_by_device[s["device"]])
        live = sorted(self._expected)
        live_rule = self.dep.pooling.for_dead_mask(
            sum(1 << v for v in range(self.dep.views) if v not in self._expected))
        pending = [x.to_dict() for x in self._served if x.first_frame is None]
        return {
            "deployment_id": self.dep.deployment_id, "fleet": self.dep.fleet,
            "switch": {
                "sequence": max([x.sequence for x in self._served
                                 if x.first_frame is not None] + [0]),
                "pending": pending[-1] if pending else None,
                "history": [x.to_dict() for x in self._served],
                "prepared": self.switch_counts["prepared"],
                "applied": self.switch_counts["applied"],
                "superseded": self.switch_counts["superseded"],
                "refused_cross_deployment": self.refused_across,
                "accepted_same_model": self.accepted_same_model,
            },
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
