"""The aggregator's side of a fleet-wide switch: a signed order to serve a new deployment from
frame F on, and its files, received over MQTT. Device-side code (no TensorFlow, no host module).

The host publishes on `slimedge/<fleet>/aggregator/update` (`topics.aggregator_update`) the same
SEUP messages a device's update uses (`update_messages`): chunks of the payload, then the
signed offer (retained). The offer's manifest is the *order*, `aggregator-update.json`::

    {"format": "slimedge-aggregator-update", "format_version": 1, "fleet": "mixed12",
     "deployment_id": "mixed12-20250201000000", "deployment_created": "2025-02-01T00:00:00Z",
     "sequence": 8, "commit_at_frame": 1200, "created": "...Z", "expires": "...Z",
     "signing_key": "ed25519:...", "sha256": "<payload>", "bytes": 190000,
     "files": [{"path": "manifest.json", ...}, {"path": "manifest.sig", ...},
               {"path": "aggregator/head.tflite", ...}, ...]}

The payload is the new deployment's own signed manifest and every aggregator file it lists: the
aggregator checks the order's signature, then (in `aggregator_deployment`) the deployment
manifest's signature with the same provisioned key and each file's SHA-256, exactly as at start.
Acknowledgments go to `slimedge/<fleet>/aggregator/ack` (`AggregatorAck`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimedge.runtime.update import (
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    REPLAY,
    TAMPERED,
    TRUNCATED,
    WRONG_KEY,
    PayloadFile,
    UpdateError,
    UpdateRefusedError,
    _Reader,
    parse_utc,
    utc,
)
from slimedge.runtime.update_messages import MISSING, REFUSED, Chunk, UpdateMessageError, decode

__all__ = ["APPLIED", "FORMAT", "FRAME_PASSED", "MISSING", "NOT_SERVABLE", "ORDER_NAME",
           "PREPARED", "REASONS", "REFUSED", "WRONG_FLEET", "AggregatorAck", "AggregatorOrder",
           "AggregatorUpdates", "ReceivedUpdate", "check_order", "unpack"]

FORMAT = "slimedge-aggregator-update"
FORMAT_VERSION = 1
ORDER_NAME = "aggregator-update.json"
MAX_PAYLOAD_BYTES = 64 << 20  # a head, a manifest and a contingency table: far below this
_KEPT_SEQUENCES = 2  # payloads being assembled at once (bounded memory)

PREPARED, APPLIED = "prepared", "applied"
FRAME_PASSED = "frame-passed"  # frame F is opened or answered already under the old deployment
WRONG_FLEET = "wrong-fleet"  # an order for another fleet's aggregator
NOT_SERVABLE = "self-test"  # verified files that do not load (head, pooling, shapes)
REASONS = (MALFORMED, BAD_SIGNATURE, WRONG_KEY, WRONG_FLEET, REPLAY, EXPIRED, TRUNCATED,
           TAMPERED, FRAME_PASSED, NOT_SERVABLE)
_KEYS = ("format", "format_version", "fleet", "deployment_id", "deployment_created", "sequence",
         "commit_at_frame", "created", "expires", "signing_key", "sha256", "bytes", "files")


@dataclass(frozen=True)
class AggregatorOrder:
    fleet: str
    deployment_id: str
    deployment_created: str
    sequence: int
    commit_at_frame: int
    created: str
    expires: str
    signing_key: str
    sha256: str
    bytes: int
    files: tuple[PayloadFile, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "fleet": self.fleet,
                "deployment_id": self.deployment_id,
                "deployment_created": self.deployment_created, "sequence": self.sequence,
                "commit_at_frame": self.commit_at_frame, "created": self.created,
                "expires": self.expires, "signing_key": self.signing_key,
                "sha256": self.sha256, "bytes": self.bytes,
                "files": [f.to_dict() for f in self.files]}

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = ORDER_NAME) -> AggregatorOrder:
        """Parse and validate; UpdateRefusedError(MALFORMED) names the field at fault."""
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UpdateRefusedError(MALFORMED, f"{source}: not valid JSON: {exc}") from None
        r = _Reader(source)
        body = r.obj(raw, "order", _KEYS)
        if body["format"] != FORMAT:
            raise r.fail("format", f"expected {FORMAT!r}, got {body['format']!r}")
        if body["format_version"] != FORMAT_VERSION:
            raise r.fail("format_version", f"version {body['format_version']!r} is not "
                         f"supported (this slimedge reads {FORMAT_VERSION})")
        size = r.integer(body["bytes"], "bytes", 1)
        if size > MAX_PAYLOAD_BYTES:
            raise r.fail("bytes", f"{size} bytes is more than an aggregator update may carry "
                         f"({MAX_PAYLOAD_BYTES})")
        order = cls(
            fleet=r.text(body["fleet"], "fleet"),
            deployment_id=r.text(body["deployment_id"], "deployment_id"),
            deployment_created=r.text(body["deployment_created"], "deployment_created"),
            sequence=r.integer(body["sequence"], "sequence", 1),
            commit_at_frame=r.integer(body["commit_at_frame"], "commit_at_frame"),
            created=r.text(body["created"], "created"),
            expires=r.text(body["expires"], "expires"),
            signing_key=r.text(body["signing_key"], "signing_key"),
            sha256=r.text(body["sha256"], "sha256"),
            bytes=size, files=r.files(body["files"], size))
        try:
            if parse_utc(order.expires) <= parse_utc(order.created):
                raise r.fail("expires", f"{order.expires} is not after created {order.created}")
        except ValueError:
            raise r.fail("created", "expected UTC times like 2025-01-01T00:00:00Z") from None
        return order


def check_order(order_bytes: bytes, signature: bytes, public_key: Any, *, fleet: str,
                running_sequence: int, now: float) -> AggregatorOrder:
    """Every check that needs no payload: the signature with the provisioned key (nothing
    unsigned is read further), fleet, expiry, sequence. UpdateRefusedError with the reason."""
    from slimedge.export import signing

    ours = signing.fingerprint(public_key)
    if not signing.verify_signature(public_key, signature, order_bytes):
        try:
            named = json.loads(order_bytes).get("signing_key")
        except (ValueError, AttributeError):
            named = None
        if isinstance(named, str) and named != ours:
            raise UpdateRefusedError(WRONG_KEY, f"order signed by {named}, this aggregator "
                                     f"trusts only {ours} (the key it was started with)")
        raise UpdateRefusedError(BAD_SIGNATURE, f"the order's signature does not verify with "
                                 f"{ours}: it was changed after signing or signed by another key")
    order = AggregatorOrder.from_bytes(order_bytes)
    if order.signing_key != ours:
        raise UpdateRefusedError(WRONG_KEY, f"the order names signing key {order.signing_key}, "
                                 f"this aggregator trusts {ours}")
    if order.fleet != fleet:
        raise UpdateRefusedError(WRONG_FLEET, f"order for fleet {order.fleet!r}, this "
                                 f"aggregator serves {fleet!r}")
    if now >= parse_utc(order.expires):
        raise UpdateRefusedError(EXPIRED, f"order sequence {order.sequence} expired at "
                                 f"{order.expires} (aggregator clock {utc(now)})")
    if order.sequence <= running_sequence:
        raise UpdateRefusedError(REPLAY, f"sequence {order.sequence} is not above the "
                                 f"sequence served ({running_sequence}): an old order sent again")
    return order


@dataclass(frozen=True)
class AggregatorAck:
    """The aggregator's answer: prepared (scheduled for frame F), applied (frame F answered
    with it), refused (reason), or missing (byte ranges [offset, length] still needed)."""

    sequence: int
    status: str
    reason: str | None = None
    message: str = ""
    missing: list[list[int]] = field(default_factory=list)
    deployment_id: str | None = None
    commit_at_frame: int | None = None
    first_frame: int | None = None
    seconds: float | None = None

    def to_bytes(self) -> bytes:
        return json.dumps({"role": "aggregator", "sequence": self.sequence,
                           "status": self.status, "reason": self.reason,
                           "message": self.message, "missing": self.missing,
                           "deployment_id": self.deployment_id,
                           "commit_at_frame": self.commit_at_frame,
                           "first_frame": self.first_frame, "seconds": self.seconds}).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> AggregatorAck:
        try:
            raw = json.loads(payload)
            if not isinstance(raw, dict) or raw.get("role") != "aggregator":
                raise ValueError("not an aggregator acknowledgment")
            ack = cls(sequence=int(raw["sequence"]), status=str(raw["status"]),
                      reason=raw.get("reason"), message=str(raw.get("message", "")),
                      missing=[[int(a), int(b)] for a, b in raw.get("missing") or []],
                      deployment_id=raw.get("deployment_id"),
                      commit_at_frame=raw.get("commit_at_frame"),
                      first_frame=raw.get("first_frame"), seconds=raw.get("seconds"))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise UpdateMessageError(f"aggregator ack: {exc}") from None
        if ack.status not in (PREPARED, APPLIED, REFUSED, MISSING):
            raise UpdateMessageError(f"aggregator ack: status {ack.status!r}")
        return ack


@dataclass(frozen=True)
class ReceivedUpdate:
    """A verified order with its whole payload (hash checked): ready to unpack and prepare."""

    order: AggregatorOrder
    payload: bytes
    started: float  # clock of its first message


class _Assembly:
    def __init__(self, total: int) -> None:
        self.data = bytearray(total)
        self.have: list[tuple[int, int]] = []  # merged [start, end) ranges

    def add(self, offset: int, data: bytes) -> None:
        self.data[offset:offset + len(data)] = data
        ranges = sorted([*self.have, (offset, offset + len(data))])
        merged: list[tuple[int, int]] = []
        for a, b in ranges:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        self.have = merged

    def missing(self) -> list[list[int]]:
        out, pos = [], 0
        for a, b in self.have:
            if a > pos:
                out.append([pos, a - pos])
            pos = max(pos, b)
        if pos < len(self.data):
            out.append([pos, len(self.data) - pos])
        return out


class AggregatorUpdates:
    """Messages of the aggregator's update topic -> acknowledgments, and a `ReceivedUpdate`
    once an order verified and its payload is complete. `first_free_frame()` is the lowest
    frame id no frame was opened for yet: an order for an earlier frame is refused at once."""

    def __init__(self, public_key: Any, fleet: str, *,
                 first_free_frame: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.public_key, self.fleet = public_key, fleet
        self.first_free_frame, self.clock, self.wall = first_free_frame, clock, wall
        self.running_sequence = 0  # the highest order prepared (replays are refused)
        self._assembling: dict[int, _Assembly] = {}
        self._orders: dict[int, tuple[AggregatorOrder, bytes]] = {}
        self._started: dict[int, float] = {}
        self._done: set[int] = set()  # sequences answered (refused or received)
        self.counts: dict[str, Any] = {"messages": 0, "malformed": 0, "ignored_chunks": 0,
                                       "received": 0, "refused": {}}

    def seconds(self, sequence: int) -> float | None:
        t = self._started.get(sequence)
        return None if t is None else round(self.clock() - t, 4)

    def refuse(self, sequence: int, reason: str, message: str,
               order: AggregatorOrder | None = None) -> AggregatorAck:
        """Count and acknowledge a refusal (also for a refusal decided by the caller)."""
        self.counts["refused"][reason] = self.counts["refused"].get(reason, 0) + 1
        self._done.add(sequence)
        self._forget(sequence)
        return AggregatorAck(sequence, REFUSED, reason, message,
                             deployment_id=None if order is None else order.deployment_id,
                             commit_at_frame=None if order is None else order.commit_at_frame,
                             seconds=self.seconds(sequence))

    def _forget(self, sequence: int) -> None:
        self._assembling.pop(sequence, None)
        self._orders.pop(sequence, None)

    def handle(self, payload: bytes) -> tuple[list[AggregatorAck], ReceivedUpdate | None]:
        """One message of the update topic; never raises for what a peer sends."""
        self.counts["messages"] += 1
        try:
            msg = decode(payload)
        except UpdateMessageError:
            self.counts["malformed"] += 1
            return [], None
        seq = msg.sequence
        if seq in self._done or seq <= self.running_sequence:
            if isinstance(msg, Chunk):
                self.counts["ignored_chunks"] += 1
                return [], None
        if seq not in self._started:
            self._started[seq] = self.clock()
            while len(self._started) > 16:
                del self._started[min(self._started)]
        try:
            if isinstance(msg, Chunk):
                return self._chunk(msg)
            return self._offer(seq, msg.manifest, msg.signature)
        except UpdateRefusedError as exc:
            return [self.refuse(seq, exc.reason, exc.detail)], None

    def _offer(self, seq: int, data: bytes, signature: bytes
               ) -> tuple[list[AggregatorAck], ReceivedUpdate | None]:
        if seq in self._done and seq <= self.running_sequence:
            return [], None  # the retained offer of an order already prepared, delivered again
        order = check_order(data, signature, self.public_key, fleet=self.fleet,
                            running_sequence=self.running_sequence, now=self.wall())
        self._done.discard(seq)
        free = self.first_free_frame()
        if order.commit_at_frame < free:
            return [self.refuse(seq, FRAME_PASSED, f"commit at frame {order.commit_at_frame}, "
                                f"but frames up to {free - 1} are opened or answered with the "
                                "deployment served now", order)], None
        self._orders[seq] = (order, data)
        asm = self._assembling.get(seq)
        if asm is not None and len(asm.data) != order.bytes:
            asm = None  # chunks of another payload under this sequence: start again
        if asm is None:
            asm = self._new_assembly(seq, order.bytes)
        gaps = asm.missing()
        if gaps:
            return [AggregatorAck(seq, MISSING, missing=gaps, deployment_id=order.deployment_id,
                                  commit_at_frame=order.commit_at_frame,
                                  seconds=self.seconds(seq))], None
        return self._complete(seq)

    def _new_assembly(self, seq: int, total: int) -> _Assembly:
        asm = self._assembling[seq] = _Assembly(total)
        while len(self._assembling) > _KEPT_SEQUENCES:
            del self._assembling[min(self._assembling)]
        return asm

    def _chunk(self, c: Chunk) -> tuple[list[AggregatorAck], ReceivedUpdate | None]:
        known = self._orders.get(c.sequence)
        if known is not None and (c.total != known[0].bytes
                                  or c.payload_id != bytes.fromhex(known[0].sha256)[:8]):
            self.counts["ignored_chunks"] += 1
            return [], None
        if c.total > MAX_PAYLOAD_BYTES:
            self.counts["ignored_chunks"] += 1
            return [], None
        asm = self._assembling.get(c.sequence)
        if asm is None or len(asm.data) != c.total:
            asm = self._new_assembly(c.sequence, c.total)
        asm.add(c.offset, c.data)
        if known is None or asm.missing():
            return [], None
        return self._complete(c.sequence)

    def _complete(self, seq: int) -> tuple[list[AggregatorAck], ReceivedUpdate | None]:
        order, _ = self._orders[seq]
        payload = bytes(self._assembling[seq].data)
        self._forget(seq)
        if hashlib.sha256(payload).hexdigest() != order.sha256:
            raise UpdateRefusedError(TAMPERED, f"payload sha256 differs from the signed order's "
                                     f"{order.sha256[:16]}...: changed in transit")
        self._done.add(seq)
        self.counts["received"] += 1
        return [], ReceivedUpdate(order, payload, self._started.get(seq, self.clock()))


def unpack(update: ReceivedUpdate, folder: str | Path) -> Path:
    """Write the payload's files under `folder` (a deployment folder holding only the
    aggregator's part), each checked against the order's SHA-256; UpdateRefusedError
    (tampered) names a file that differs."""
    from slimedge.artifacts import atomic_file

    root = Path(folder)
    for f in update.order.files:
        data = update.payload[f.offset:f.offset + f.bytes]
        if len(data) != f.bytes:
            raise UpdateRefusedError(TRUNCATED, f"{f.path}: {len(data)} of {f.bytes} bytes")
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise UpdateRefusedError(TAMPERED, f"{f.path}: sha256 differs from the order's")
        target = root / f.path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise UpdateError(f"{target}: cannot write ({exc.strerror})") from None
    return root
