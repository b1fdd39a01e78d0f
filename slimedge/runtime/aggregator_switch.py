"""A fleet-wide switch on the running aggregator: orders in, PREPARE off the frame loop, COMMIT
by frame id, acknowledgments and the aggregator's retained state out.

    link = SwitchLink(agg, trusted_key, run_dir / "deployments")
    # frame loop, for each message of link.topic (slimedge/<fleet>/aggregator/update):
    for ack in link.handle(payload, now_ns): publish(link.ack_topic, ack.to_bytes(), qos=1)
    # every turn of the loop:
    for ack in link.poll(now_ns): publish(...)      # prepared (scheduled at F) or refused
    # retained, every status period:
    publish(link.state_topic, json.dumps(link.state(now_ns, fps)), qos=1, retain=True)

Preparing a deployment (writing its files, verifying its signature with the key the aggregator
started with and every file's hash, loading its head in LiteRT) runs on a thread of its own, so
frames keep being answered meanwhile; scheduling it (`Aggregator.schedule`) happens on the frame
loop, where the frame ids already opened are known. Frames >= F are pooled with it from then on
and an `applied` acknowledgment follows the first of them.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError
from slimedge.runtime import topics
from slimedge.runtime.aggregator import Aggregator, Served, SwitchRefusedError
from slimedge.runtime.aggregator_update import (
    APPLIED,
    NOT_SERVABLE,
    PREPARED,
    REFUSED,
    AggregatorAck,
    AggregatorUpdates,
    ReceivedUpdate,
    unpack,
)
from slimedge.runtime.update import BAD_SIGNATURE, TAMPERED, UpdateRefusedError

__all__ = ["SwitchLink"]

log = logging.getLogger("slimedge.aggregator")


class SwitchLink:
    def __init__(self, agg: Aggregator, trusted_key: Any, folder: str | Path) -> None:
        fleet = agg.dep.fleet
        self.agg, self.key, self.folder = agg, trusted_key, Path(folder)
        self.topic = topics.aggregator_update(fleet)
        self.ack_topic = topics.aggregator_ack(fleet)
        self.state_topic = topics.aggregator_state(fleet)
        self.updates = AggregatorUpdates(trusted_key, fleet,
                                         first_free_frame=agg.first_free_frame)
        self._todo: queue.Queue[ReceivedUpdate | None] = queue.Queue()
        self._done: queue.Queue[tuple[ReceivedUpdate, Any, Any, UpdateRefusedError | None]] = \
            queue.Queue()
        self._thread = threading.Thread(target=self._prepare_loop, name="switch-prepare",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._todo.put(None)
        self._thread.join(timeout=10.0)

    # ------------------------------------------------------------------ frame loop side
    def handle(self, payload: bytes, now_ns: int) -> list[AggregatorAck]:
        """One message of the update topic; acknowledgments to publish now."""
        try:
            acks, ready = self.updates.handle(payload)
        except Exception as e:  # noqa: BLE001 - a bad order never stops the aggregator
            log.exception("aggregator update message dropped: internal error")
            self.agg.log_event(now_ns, "switch_refused", sequence=None, reason="internal_error",
                               message=f"{type(e).__name__}: {e}")
            return []
        for a in acks:
            if a.status == REFUSED:
                self._refused_event(a, now_ns)
        if ready is not None:
            self._todo.put(ready)
        return acks

    def poll(self, now_ns: int) -> list[AggregatorAck]:
        """Deployments prepared since the last call, scheduled now (or refused), and the
        switches applied since: their acknowledgments."""
        out = []
        while True:
            try:
                ready, dep, head, error = self._done.get_nowait()
            except queue.Empty:
                break
            out.append(self._schedule(ready, dep, head, error, now_ns))
        for s in self.agg.drain_switches():
            out.append(self._applied(s))
        return out

    def _schedule(self, ready: ReceivedUpdate, dep: Any, head: Any,
                  error: UpdateRefusedError | None, now_ns: int) -> AggregatorAck:
        order = ready.order
        if error is None:
            try:
                self.agg.schedule(dep, head, order.commit_at_frame, order.sequence, now_ns)
            except SwitchRefusedError as e:
                error = UpdateRefusedError(e.reason, e.detail)
        if error is not None:
            ack = self.updates.refuse(order.sequence, error.reason, error.detail, order)
            self._refused_event(ack, now_ns)
            return ack
        self.updates.running_sequence = max(self.updates.running_sequence, order.sequence)
        return AggregatorAck(order.sequence, PREPARED, deployment_id=order.deployment_id,
                             commit_at_frame=order.commit_at_frame,
                             seconds=self.updates.seconds(order.sequence))

    def _applied(self, s: Served) -> AggregatorAck:
        return AggregatorAck(s.sequence, APPLIED, deployment_id=s.dep.deployment_id,
                             commit_at_frame=s.from_frame, first_frame=s.first_frame,
                             seconds=self.updates.seconds(s.sequence))

    def _refused_event(self, ack: AggregatorAck, now_ns: int) -> None:
        log.warning("aggregator update %s refused: %s: %s", ack.sequence, ack.reason,
                    ack.message)
        self.agg.log_event(now_ns, "switch_refused", sequence=ack.sequence, reason=ack.reason,
                           message=ack.message, deployment_id=ack.deployment_id,
                           commit_at_frame=ack.commit_at_frame)

    def counts(self) -> dict[str, Any]:
        c = self.updates.counts
        return {"received": c["received"], "refused": dict(c["refused"]),
                "malformed": c["malformed"], "messages": c["messages"]}

    def state(self, now_ns: int, fps: float | None) -> dict[str, Any]:
        """The retained state: what push reads to choose a frame to switch at."""
        s = self.agg.status(now_ns)
        return {"running": True, "deployment_id": self.agg.dep.deployment_id,
                "last_frame": self.agg.latest_frame, "fps": fps,
                "frames_per_s": s["frames_per_s"], "sequence": s["switch"]["sequence"],
                "pending": s["switch"]["pending"], "sent_ns": now_ns}

    # ------------------------------------------------------------------ prepare thread
    def _prepare_loop(self) -> None:
        while (ready := self._todo.get()) is not None:
            try:
                dep, head = self._prepare(ready)
                self._done.put((ready, dep, head, None))
            except UpdateRefusedError as e:
                self._done.put((ready, None, None, e))
            except Exception as e:  # noqa: BLE001 - a bug refuses the order, never the service
                log.exception("preparing aggregator update %s failed", ready.order.sequence)
                self._done.put((ready, None, None, UpdateRefusedError(
                    NOT_SERVABLE, f"{type(e).__name__}: {e}")))

    def _prepare(self, ready: ReceivedUpdate) -> tuple[Any, Any]:
        """Files on disk, verified as at start, head loaded: everything frames >= F need."""
        from slimedge.runtime.aggregator_deployment import (
            DeploymentSignatureError,
            load_aggregator_deployment,
        )
        from slimedge.runtime.head import HeadRunner

        order = ready.order
        root = unpack(ready, self.folder / f"{order.sequence}-{order.deployment_id}")
        try:
            dep = load_aggregator_deployment(root, trusted_key=self.key)
        except DeploymentSignatureError as e:
            raise UpdateRefusedError(BAD_SIGNATURE, str(e)) from None
        except SlimEdgeError as e:
            raise UpdateRefusedError(NOT_SERVABLE, str(e)) from None
        if dep.deployment_id != order.deployment_id:
            raise UpdateRefusedError(TAMPERED, f"the order names deployment "
                                     f"{order.deployment_id}, its manifest is "
                                     f"{dep.deployment_id}")
        try:
            head = HeadRunner(dep.head_path, dep.feature_dim, dep.n_classes)
        except SlimEdgeError as e:
            raise UpdateRefusedError(NOT_SERVABLE, str(e)) from None
        return dep, head
