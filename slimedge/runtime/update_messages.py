"""What travels on a device's update and ack topics.

Update topic (host -> device), binary, little-endian, CRC-32 (zlib) of all bytes before it
at the end. An *offer* carries the signed manifest; *chunks* carry the payload by offset, so
a transfer can arrive in any order, cross a slow link in small pieces and resume: the device
says which byte ranges it still misses and only those are sent again::

    offset  size  field (both kinds)
    0       4     magic b"SEUP"
    4       1     version (1)
    5       1     kind: 1 = offer, 2 = chunk
    6       2     reserved (0)
    8       8     sequence, u64
    offer:  16  4  chunk size the host uses, u32 | 20  4  m = manifest bytes, u32
            24  m  update.json | 24+m  64  Ed25519 signature
    chunk:  16  8  first 8 bytes of the payload's sha256 (binds the chunk to its update)
            24  8  payload size, u64 | 32  8  offset, u64 | 40  4  n, u32 | 44  n  data

Ack topic (device -> host): one JSON object, see `Ack`.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from slimedge.runtime.update import UpdateError

MAGIC = b"SEUP"
VERSION = 1
OFFER, CHUNK = 1, 2
SIGNATURE_BYTES = 64
MAX_MANIFEST_BYTES = 1 << 16
MAX_CHUNK_BYTES = 1 << 24
_HEAD = struct.Struct("<4sBBHQ")
_OFFER = struct.Struct("<II")
_CHUNK = struct.Struct("<8sQQI")

# Ack statuses: the device applied it, refused it, or still misses byte ranges.
APPLIED, REFUSED, MISSING = "applied", "refused", "missing"


class UpdateMessageError(UpdateError):
    """A message on an update or ack topic that cannot be decoded (names the field)."""


@dataclass(frozen=True)
class Offer:
    sequence: int
    chunk_bytes: int
    manifest: bytes
    signature: bytes


@dataclass(frozen=True)
class Chunk:
    sequence: int
    payload_id: bytes  # sha256(payload)[:8]
    total: int
    offset: int
    data: bytes


def encode_offer(offer: Offer) -> bytes:
    if len(offer.signature) != SIGNATURE_BYTES:
        raise UpdateMessageError(f"offer: signature must be {SIGNATURE_BYTES} bytes, got "
                                 f"{len(offer.signature)}")
    body = (_HEAD.pack(MAGIC, VERSION, OFFER, 0, offer.sequence)
            + _OFFER.pack(offer.chunk_bytes, len(offer.manifest))
            + offer.manifest + offer.signature)
    return body + struct.pack("<I", zlib.crc32(body))


def encode_chunk(chunk: Chunk) -> bytes:
    body = (_HEAD.pack(MAGIC, VERSION, CHUNK, 0, chunk.sequence)
            + _CHUNK.pack(chunk.payload_id, chunk.total, chunk.offset, len(chunk.data))
            + chunk.data)
    return body + struct.pack("<I", zlib.crc32(body))


def decode(payload: bytes) -> Offer | Chunk:
    """An Offer or a Chunk; UpdateMessageError names what is wrong with anything else."""
    data = bytes(payload)
    if len(data) < _HEAD.size + 4:
        raise UpdateMessageError(f"update message: {len(data)} bytes, shorter than a header")
    magic, version, kind, _, sequence = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise UpdateMessageError(f"update message: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise UpdateMessageError(f"update message: version {version} is not supported "
                                 f"(this slimedge reads {VERSION})")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise UpdateMessageError("update message: CRC-32 mismatch (corrupted in transit)")
    body = data[_HEAD.size:-4]
    if kind == OFFER:
        if len(body) < _OFFER.size:
            raise UpdateMessageError("update offer: truncated before the manifest length")
        chunk_bytes, m = _OFFER.unpack_from(body)
        if not 0 < m <= MAX_MANIFEST_BYTES or len(body) != _OFFER.size + m + SIGNATURE_BYTES:
            raise UpdateMessageError(f"update offer: manifest length {m} does not match the "
                                     f"message ({len(body)} bytes after the header)")
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise UpdateMessageError(f"update offer: chunk size {chunk_bytes} out of range")
        start = _OFFER.size
        return Offer(sequence, chunk_bytes, body[start:start + m], body[start + m:])
    if kind == CHUNK:
        if len(body) < _CHUNK.size:
            raise UpdateMessageError("update chunk: truncated header")
        pid, total, offset, n = _CHUNK.unpack_from(body)
        if len(body) != _CHUNK.size + n or n == 0 or n > MAX_CHUNK_BYTES:
            raise UpdateMessageError(f"update chunk: length field {n} does not match the "
                                     f"{len(body) - _CHUNK.size} data bytes")
        if offset + n > total:
            raise UpdateMessageError(f"update chunk: bytes [{offset}, {offset + n}) run past "
                                     f"the payload size {total}")
        return Chunk(sequence, pid, total, offset, body[_CHUNK.size:])
    raise UpdateMessageError(f"update message: unknown kind {kind}")


def split_payload(sequence: int, payload_id: bytes, payload: bytes,
                  chunk_bytes: int) -> list[Chunk]:
    """The payload as chunks of `chunk_bytes` (the last one shorter)."""
    if chunk_bytes < 1:
        raise UpdateMessageError(f"chunk size must be >= 1, got {chunk_bytes}")
    return [Chunk(sequence, payload_id, len(payload), off, payload[off:off + chunk_bytes])
            for off in range(0, len(payload), chunk_bytes)]


@dataclass(frozen=True)
class Ack:
    """A device's answer to an update: applied, refused (with the reason code and why), or
    missing (the byte ranges [offset, length] it still needs)."""

    device: str
    sequence: int
    status: str
    reason: str | None = None
    message: str = ""
    missing: list[list[int]] = field(default_factory=list)
    seconds: float | None = None  # offer received -> committed, measured on the device
    running_sequence: int | None = None
    model_hash: str | None = None  # sha256 of the model the device serves after this ack
    # applied between two frames of the frame loop: the first frame served with it (later
    # than the update's commit_at_frame when the update arrived after that frame had passed)
    first_frame: int | None = None

    def to_bytes(self) -> bytes:
        return json.dumps({
            "device": self.device, "sequence": self.sequence, "status": self.status,
            "reason": self.reason, "message": self.message, "missing": self.missing,
            "seconds": self.seconds, "running_sequence": self.running_sequence,
            "model_hash": self.model_hash, "first_frame": self.first_frame,
        }).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> Ack:
        try:
            raw: Any = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UpdateMessageError(f"update ack: not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise UpdateMessageError("update ack: expected a JSON object")
        try:
            ack = cls(device=str(raw["device"]), sequence=int(raw["sequence"]),
                      status=str(raw["status"]), reason=raw.get("reason"),
                      message=str(raw.get("message", "")),
                      missing=[[int(a), int(b)] for a, b in raw.get("missing") or []],
                      seconds=raw.get("seconds"), running_sequence=raw.get("running_sequence"),
                      model_hash=raw.get("model_hash"),
                      first_frame=(None if raw.get("first_frame") is None
                                   else int(raw["first_frame"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise UpdateMessageError(f"update ack: bad field: {exc!r}") from None
        if ack.status not in (APPLIED, REFUSED, MISSING):
            raise UpdateMessageError(f"update ack: status {ack.status!r} is not one of "
                                     f"{APPLIED}, {REFUSED}, {MISSING}")
        return ack
