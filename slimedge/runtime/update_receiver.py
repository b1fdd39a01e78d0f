"""The device's side of a push: messages from its update topic in, acknowledgments out.
`UpdateLink` wires it to an agent's MQTT link (subscription, update thread, acks); the parts:

    receiver = UpdateReceiver(slots)          # slots = UpdateSlots(...); slots.recover()
    # update thread (never the MQTT network thread: staging hashes and self-tests the model):
    for ack in receiver.handle(payload):      # each message of slimedge/<fleet>/<dev>/update
        publish(topics.ack(fleet, dev), ack.to_bytes(), qos=1)
    # frame loop, between two frames:
    if receiver.ready():                      # serve(path, info): build the new engine
        ack, model_path = receiver.commit(serve)   # then the swap
        publish(topics.ack(fleet, dev), ack.to_bytes(), qos=1)

The host publishes an update's chunks, then its signed offer (retained). When the offer finds
every byte already received, the update is staged and verified at once; otherwise the device
acknowledges `missing` with the byte ranges it lacks and stages when the last one arrives.
A refusal is acknowledged with its reason; the served model is never touched by one. A
message that cannot be decoded is counted and dropped, never raised.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimedge.runtime.slots import SlotInfo, UpdateSlots
from slimedge.runtime.update import DEVICE_ERROR, UpdateError, UpdateRefusedError
from slimedge.runtime.update_messages import (
    APPLIED,
    MISSING,
    REFUSED,
    Ack,
    Chunk,
    UpdateMessageError,
    decode,
)

_REMEMBERED = 64  # sequences whose first-message time / refusal is kept (bounded memory)


def _remember(table: dict[int, Any], key: int, value: Any) -> None:
    """table[key] = value if absent, keeping only the _REMEMBERED highest keys."""
    table.setdefault(key, value)
    while len(table) > _REMEMBERED:
        del table[min(table)]


class UpdateReceiver:
    """Update-topic messages -> `UpdateSlots` operations -> acknowledgments (module doc)."""

    def __init__(self, slots: UpdateSlots, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.clock = clock
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}  # sequence -> when its first message arrived
        self._ready: int | None = None
        self._answered: dict[int, bool] = {}  # sequences refused: later chunks stay quiet
        self.counts = {"messages": 0, "malformed": 0, "ignored_chunks": 0, "refused": 0,
                       "applied": 0}

    @property
    def device(self) -> str:
        return self.slots.trust.device

    def _ack(self, sequence: int, status: str, reason: str | None = None, message: str = "",
             missing: list[list[int]] | None = None, seconds: float | None = None) -> Ack:
        _, info = self.slots.current()
        return Ack(self.device, sequence, status, reason, message, missing or [], seconds,
                   info.sequence, info.model_sha256)

    def handle(self, payload: bytes) -> list[Ack]:
        """Process one update-topic message; the acknowledgments to publish (often none)."""
        with self._lock:
            self.counts["messages"] += 1
            try:
                msg = decode(payload)
            except UpdateMessageError:
                self.counts["malformed"] += 1
                return []
            _remember(self._started, msg.sequence, self.clock())
            try:
                if isinstance(msg, Chunk):
                    return self._chunk(msg)
                return self._offer(msg.sequence, msg.manifest, msg.signature)
            except UpdateRefusedError as exc:
                return [self._refuse(msg.sequence, exc.reason, exc.detail)]
            except (UpdateError, OSError) as exc:  # a disk problem: refuse, keep serving
                return [self._refuse(msg.sequence, DEVICE_ERROR, str(exc))]

    def _refuse(self, sequence: int, reason: str, detail: str) -> Ack:
        self.counts["refused"] += 1
        _remember(self._answered, sequence, True)
        if sequence > self.slots.current()[1].sequence:
            self.slots.drop(sequence)
        return self._ack(sequence, REFUSED, reason, detail)

    def _offer(self, sequence: int, manifest: bytes, signature: bytes) -> list[Ack]:
        if self.slots.offer(manifest, signature) is None:
            return [self._ack(sequence, APPLIED, message="already running")]
        if self._ready == sequence:
            return []  # staged, waiting for the frame loop to commit
        self._answered.pop(sequence, None)
        gaps = self.slots.missing(sequence)
        if gaps:
            return [self._ack(sequence, MISSING, missing=gaps)]
        return self._stage(sequence)

    def _chunk(self, c: Chunk) -> list[Ack]:
        if c.sequence in self._answered:  # refused already: its chunks are not kept
            self.counts["ignored_chunks"] += 1
            return []
        kept = self.slots.receive_chunk(c.sequence, c.offset, c.data, total=c.total,
                                        payload_id=c.payload_id)
        if not kept:
            self.counts["ignored_chunks"] += 1
            return []
        if (self._ready == c.sequence or self.slots.offered(c.sequence) is None
                or self.slots.missing(c.sequence)):
            return []
        return self._stage(c.sequence)

    def _stage(self, sequence: int) -> list[Ack]:
        self.slots.stage_and_verify(sequence)
        self._ready = sequence
        return []

    def ready(self) -> bool:
        """True when a verified update waits for `commit()` (between two frames). Reads one
        attribute without the lock, so a frame loop never waits on a staging in progress."""
        return self._ready is not None

    @property
    def ready_sequence(self) -> int | None:
        """The sequence of the verified update waiting for `commit()`, or None."""
        return self._ready

    def reject_staged(self, message: str) -> Ack:
        """Refuse the verified update waiting (the device cannot serve it): device-error."""
        with self._lock:
            sequence, self._ready = self._ready, None
            self.slots.discard_staged()
            if sequence is None:
                raise UpdateError("reject_staged: no verified update is waiting")
            return self._refuse(sequence, DEVICE_ERROR, message)

    def commit(self, serve: Callable[[Path, SlotInfo], None] | None = None
               ) -> tuple[Ack, Path | None]:
        """Serve the staged update: `serve(model_path, info)` first (the caller builds its
        engine for the new model; it raises SlimEdgeError when it cannot), then the pointer
        swap. (the acknowledgment, the served model path); a `serve` that failed leaves the
        old model served and is acknowledged as refused (device-error), path None."""
        from slimedge.errors import SlimEdgeError

        with self._lock:
            if self._ready is None or self.slots.staged is None:
                raise UpdateError("commit: no verified update is waiting")
            sequence, self._ready = self._ready, None
            staged = self.slots.staged
            if serve is not None:
                try:
                    serve(staged.model_path, staged.info)
                except SlimEdgeError as exc:
                    self.slots.discard_staged()
                    return self._refuse(sequence, DEVICE_ERROR,
                                        f"the verified model cannot be served: {exc}"), None
            self.slots.commit()
            self.counts["applied"] += 1
            started = self._started.pop(sequence, None)
            seconds = None if started is None else round(self.clock() - started, 4)
            path, _ = self.slots.current()
            return self._ack(sequence, APPLIED, seconds=seconds), path


class UpdateLink:
    """Updates on an agent's MQTT link: subscribes to the device's update topic, handles its
    messages on a thread of its own and publishes the acknowledgments. Everything slow runs on
    that thread: staging (hashes, self-test) and `prepare(model_path, info)`, which builds the
    engine for a verified model and returns a cheap `install()`; the frame loop calls
    `swap_if_ready()` between two frames, which installs and swaps the pointer (milliseconds).

    The link must deliver nothing but this device's update topic to `client.get()` (the agent
    subscribes to nothing else), so this thread is the only reader of the inbound queue.
    """

    def __init__(self, client: Any, fleet: str, receiver: UpdateReceiver,
                 prepare: Callable[[Path, SlotInfo], Callable[[], None]] | None = None
                 ) -> None:
        from slimedge.runtime import topics

        self.client, self.receiver, self.prepare = client, receiver, prepare
        device = receiver.device
        self.topic_update = topics.update(fleet, device)
        self.topic_ack = topics.ack(fleet, device)
        client.subscribe(self.topic_update, 1)
        self._prepared: tuple[int, Callable[[], None]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="updates", daemon=True)

    def start(self) -> UpdateLink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _publish(self, ack: Ack) -> None:
        self.client.publish(self.topic_ack, ack.to_bytes(), qos=1)

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.client.get(timeout=0.1)
            if msg is None or msg.topic != self.topic_update:
                continue
            for ack in self.receiver.handle(msg.payload):
                self._publish(ack)
            self._prepare_staged()

    def _prepare_staged(self) -> None:
        from slimedge.errors import SlimEdgeError

        sequence, staged = self.receiver.ready_sequence, self.receiver.slots.staged
        if self.prepare is None or sequence is None or staged is None:
            return
        if self._prepared is not None and self._prepared[0] == sequence:
            return
        try:
            install = self.prepare(staged.model_path, staged.info)
        except SlimEdgeError as exc:
            self._publish(self.receiver.reject_staged(
                f"the verified model cannot be served: {exc}"))
            return
        self._prepared = (sequence, install)

    def swap_if_ready(self, frame: int | None = None) -> tuple[Path, SlotInfo] | None:
        """Between two frames (`frame`: the id of the next one): if a verified (and, with
        `prepare`, prepared) update waits and its `commit_at_frame` is reached, install it,
        swap, acknowledge; (model path, slot info) now served, else None."""
        staged = self.receiver.slots.staged
        if staged is None or self.receiver.ready_sequence != staged.manifest.sequence:
            return None
        at = staged.manifest.commit_at_frame
        if at is not None and frame is not None and frame < at:
            return None  # prepared; the fleet switches at frame `at`
        if self.prepare is None:
            ack, path = self.receiver.commit()
        else:
            prepared = self._prepared
            if prepared is None or prepared[0] != staged.manifest.sequence:
                return None  # not prepared yet, or a newer update replaced it meanwhile
            self._prepared = None
            ack, path = self.receiver.commit(lambda _path, _info: prepared[1]())
        if ack.status == APPLIED and frame is not None:
            ack = dataclasses.replace(ack, first_frame=int(frame))
        self._publish(ack)
        return None if path is None else (path, self.receiver.slots.current()[1])

    @property
    def prepared(self) -> int | None:
        """The sequence of the update prepared and waiting for its frame, or None."""
        p = self._prepared
        return None if p is None else p[0]

    @property
    def sequence(self) -> int:
        """The update sequence served (heartbeats carry it)."""
        return self.receiver.slots.current()[1].sequence


def open_updates(state_dir: str | Path, deploy_dir: str | Path, device: str, board: str,
                 public_key: str | Path) -> tuple[UpdateReceiver, Path, SlotInfo]:
    """At agent start, after the deployment verified: the device's slots in `state_dir`
    (provisioned from `deploy_dir` on the first start, recovered from a crash after), and the
    model to serve — the deployment's, or a newer one applied by an update since."""
    from slimedge.export.manifest import MANIFEST_NAME, DeploymentManifest
    from slimedge.runtime.selftest import self_test
    from slimedge.runtime.update import load_trust

    root = Path(deploy_dir)
    manifest = DeploymentManifest.from_json((root / MANIFEST_NAME).read_bytes(),
                                            source=str(root / MANIFEST_NAME))
    slots = UpdateSlots(state_dir, load_trust(device, board, public_key), self_test=self_test)
    slots.open(root, manifest, device)
    path, info = slots.current()
    return UpdateReceiver(slots), path, info


def prepare_model(dev: Any, path: Path, info: SlotInfo) -> Callable[[], None]:
    """Build the engine for another model of a loaded `DeviceRuntime`
    (`device_setup.load_device`), in the runtime it already runs ("tflm": TFLite Micro within
    the board's arena budget, probed first; LiteRT with the same delegate otherwise), and
    return `install()`, which points `dev` at it: engine, and the model hash, deployment id
    and level its feature messages and heartbeats carry. Slow work here, none in install."""
    if dev.runtime == "tflm":
        from slimedge.runtime.mcu import TflmRunner, check_arena

        arena = check_arena(path, dev.arena_budget_bytes, device=dev.device, board=dev.board)
        engine = TflmRunner(path, dev.arena_budget_bytes)
    else:
        from slimedge.runtime.branch import BranchRunner
        from slimedge.runtime.device_setup import edgetpu_delegate

        delegate = edgetpu_delegate() if dev.runtime == "litert-edgetpu" else None
        engine = BranchRunner(path, delegates=[delegate] if delegate else ())
        arena = dev.arena_bytes
    if tuple(engine.image_shape) != tuple(dev.image_shape):
        raise UpdateError(f"device {dev.device}: model {path.name} takes images "
                          f"{tuple(engine.image_shape)}, the camera gives {dev.image_shape}")

    def install() -> None:
        dev.engine, dev.arena_bytes = engine, arena
        dev.model_hash, dev.deployment_id, dev.level = (info.model_sha256, info.deployment_id,
                                                        info.level)

    return install


def serve_model(dev: Any, path: Path, info: SlotInfo) -> None:
    """`prepare_model` and install at once (at start, before the first frame)."""
    prepare_model(dev, path, info)()
