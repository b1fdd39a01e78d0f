"""Frame formats: the feature message a device sends per frame, and the batch file that the
standalone C++ aggregator (`slimedge_aggregate`) reads.

Both are versioned little-endian binary layouts, validated strictly on read: a truncated,
corrupted or foreign payload raises `FrameError` naming the field at fault, never returns
half a message. Neither needs TensorFlow.

Feature message (one view of one frame). Version 2 is written whenever the message names
its deployment (deployment id, level, model hash); version 1 is still written without them and
read with those fields None. Layout, version 1::

    offset  size  field
    0       4     magic b"SEFM"
    4       1     version (1)
    5       1     dtype: 1 = int8 (scale and zero_point apply), 2 = float32
    6       2     view id, u16
    8       8     frame sequence number, u64
    16      8     timestamp, i64 nanoseconds since the Unix epoch (capture time)
    24      4     scale, f32 (> 0 for int8; 0 for float32)
    28      4     zero_point, i32 (-128..127 for int8; 0 for float32)
    32      4     D, u32: number of features
    36      1     n: length of the device id in bytes (1..255)
    37      n     device id, UTF-8
    37+n    D*k   features (k = 1 for int8, 4 for float32)
    ...     4     CRC-32 (zlib) of every byte before it

Version 2: bytes 0..36 as version 1 (version byte 2), then::

    37      4     level, f32: the branch's pruning fraction (0 <= level < 1)
    41      1     m: length of the deployment id in bytes (1..255)
    42      1     h: length of the model hash (16..64)
    43      n     device id, UTF-8
    43+n    m     deployment id, UTF-8
    43+n+m  h     model hash: the device artifact's SHA-256, lowercase hex (full or a prefix)
    ...     D*k   features
    ...     4     CRC-32 (zlib) of every byte before it

Aggregator input file, version 1: see cpp/tools/README.md (`write_aggregate_input`).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slimedge import _core
from slimedge.artifacts import atomic_file
from slimedge.errors import SlimEdgeError
from slimedge.wire import (
    MESSAGE_CRC,
    MESSAGE_HEADER,
    MESSAGE_MAGIC,
    MESSAGE_V2_EXTRA,
    MESSAGE_VERSION,
    MESSAGE_VERSIONS,
)

__all__ = [
    "AGGREGATE_MAGIC",
    "AGGREGATE_VERSION",
    "MESSAGE_MAGIC",
    "MESSAGE_VERSION",
    "MESSAGE_VERSIONS",
    "AggregateInput",
    "FeatureMessage",
    "FrameError",
    "aggregate_report",
    "decode",
    "decode_aggregate_input",
    "encode",
    "encode_aggregate_input",
    "read_aggregate_input",
    "write_aggregate_input",
]


class FrameError(SlimEdgeError, ValueError):
    """A feature message or aggregator input that cannot be used; names the field at fault."""


_MSG_HEADER, _CRC = MESSAGE_HEADER, MESSAGE_CRC  # the layout lives in slimedge.wire
_HEX = "0123456789abcdef"
_DTYPE_CODES = {np.dtype(np.int8): 1, np.dtype(np.float32): 2}
_CODE_DTYPES = {code: dt for dt, code in _DTYPE_CODES.items()}


@dataclass(frozen=True, eq=False)
class FeatureMessage:
    """One view's branch output for one frame, as a device publishes it.

    `features` is 1-D int8 (with `scale` and `zero_point`: x = scale * (q - zero_point)) or
    float32 (with both left None). `deployment_id`, `level` and `model_hash` name what
    computed it: all three (a version 2 message) or none (version 1). Construction validates
    every field.
    """

    view: int
    seq: int
    timestamp_ns: int
    device: str
    features: np.ndarray = field(repr=False)
    scale: float | None = None
    zero_point: int | None = None
    deployment_id: str | None = None
    level: float | None = None
    model_hash: str | None = None

    def __post_init__(self) -> None:
        self._check_deployment_fields()
        _check_int("view", self.view, 0, 0xFFFF)
        _check_int("seq", self.seq, 0, 2**64 - 1)
        _check_int("timestamp_ns", self.timestamp_ns, -(2**63), 2**63 - 1)
        if not isinstance(self.device, str):
            raise FrameError(f"device: expected a string, got {type(self.device).__name__}")
        n = len(self.device.encode("utf-8"))
        if not 1 <= n <= 255:
            raise FrameError(f"device: the id must be 1..255 bytes of UTF-8, got {n}")
        feats = np.asarray(self.features)
        if feats.dtype not in _DTYPE_CODES:
            raise FrameError(f"features: expected int8 or float32, got dtype {feats.dtype}")
        if feats.ndim != 1 or feats.size == 0:
            raise FrameError(f"features: expected shape (D,) with D >= 1, got {feats.shape}")
        if feats.dtype == np.int8:
            if self.scale is None or self.zero_point is None:
                raise FrameError("scale, zero_point: int8 features need both")
            try:
                scale = float(self.scale)
            except (TypeError, ValueError):
                raise FrameError(f"scale: expected a number, got {self.scale!r}") from None
            with np.errstate(over="ignore"):
                as_f32 = np.float32(scale) if math.isfinite(scale) else np.float32("nan")
            if not (np.isfinite(as_f32) and as_f32 > 0):
                raise FrameError(f"scale: expected a finite float32 > 0, got {self.scale}")
            _check_int("zero_point", self.zero_point, -128, 127)
            object.__setattr__(self, "scale", float(np.float32(scale)))
            object.__setattr__(self, "zero_point", int(self.zero_point))
        else:
            if self.scale is not None or self.zero_point is not None:
                raise FrameError("scale, zero_point: only int8 features are quantized")
            if not np.all(np.isfinite(feats)):
                raise FrameError("features: float32 features must be finite")
        feats = np.array(feats, order="C")  # our own copy: the caller's array stays writable
        feats.flags.writeable = False
        object.__setattr__(self, "features", feats)
        for name in ("view", "seq", "timestamp_ns"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def _check_deployment_fields(self) -> None:
        given = [x is not None for x in (self.deployment_id, self.level, self.model_hash)]
        if not any(given):
            return
        if not all(given):
            raise FrameError("deployment_id, level, model_hash: give all three (version 2) "
                             "or none (version 1)")
        if not isinstance(self.deployment_id, str):
            raise FrameError(f"deployment_id: expected a string, got "
                             f"{type(self.deployment_id).__name__}")
        n = len(self.deployment_id.encode("utf-8"))
        if not 1 <= n <= 255:
            raise FrameError(f"deployment_id: must be 1..255 bytes of UTF-8, got {n}")
        if isinstance(self.level, bool) or not isinstance(self.level, (int, float, np.floating,
                                                                       np.integer)):
            raise FrameError(f"level: expected a number, got {type(self.level).__name__}")
        level = float(np.float32(self.level))
        if not (math.isfinite(level) and 0.0 <= level < 1.0):
            raise FrameError(f"level: expected a pruning fraction 0 <= level < 1, "
                             f"got {self.level}")
        h = self.model_hash
        if not isinstance(h, str) or not 16 <= len(h) <= 64 or h.strip(_HEX) != "":
            raise FrameError(f"model_hash: expected 16..64 lowercase hex digits (SHA-256), "
                             f"got {h!r}")
        object.__setattr__(self, "level", level)

    @property
    def version(self) -> int:
        """The wire version this message encodes to: 2 when it names its deployment."""
        return 1 if self.deployment_id is None else 2

    @property
    def dim(self) -> int:
        return int(self.features.shape[0])

    def dequantized(self) -> np.ndarray:
        """The float32 features the device meant to send."""
        if self.features.dtype == np.float32:
            return self.features.copy()
        q = self.features.astype(np.float32) - np.float32(self.zero_point)
        return np.float32(self.scale) * q

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureMessage):
            return NotImplemented
        return (
            (self.view, self.seq, self.timestamp_ns, self.device, self.scale, self.zero_point,
             self.deployment_id, self.level, self.model_hash)
            == (other.view, other.seq, other.timestamp_ns, other.device, other.scale,
                other.zero_point, other.deployment_id, other.level, other.model_hash)
            and self.features.dtype == other.features.dtype
            and np.array_equal(self.features, other.features)
        )

    __hash__ = None  # type: ignore[assignment]


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FrameError(f"{name}: expected an integer, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise FrameError(f"{name}: expected {lo}..{hi}, got {value}")


def encode(message: FeatureMessage) -> bytes:
    """The wire form of `message` (layout in the module docstring)."""
    device = message.device.encode("utf-8")
    is_int8 = message.features.dtype == np.int8
    head = _MSG_HEADER.pack(
        MESSAGE_MAGIC,
        message.version,
        _DTYPE_CODES[message.features.dtype],
        message.view,
        message.seq,
        message.timestamp_ns,
        message.scale if is_int8 else 0.0,
        message.zero_point if is_int8 else 0,
        message.dim,
        len(device),
    )
    if message.version == 2:
        deployment = message.deployment_id.encode("utf-8")
        model_hash = message.model_hash.encode("ascii")
        head += MESSAGE_V2_EXTRA.pack(message.level, len(deployment), len(model_hash))
        device += deployment + model_hash
    body = head + device + message.features.astype(message.features.dtype.newbyteorder("<"),
                                                   copy=False).tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes | bytearray | memoryview, *, source: str = "message") -> FeatureMessage:
    """Parse one feature message; `source` (a topic, a file) prefixes every error."""
    buf = bytes(data)

    def fail(msg: str) -> FrameError:
        return FrameError(f"{source}: {msg}")

    if not buf.startswith(MESSAGE_MAGIC) and not MESSAGE_MAGIC.startswith(buf):
        raise fail(f"field 'magic': not a SlimEdge feature message (got {buf[:4]!r})")
    if len(buf) < _MSG_HEADER.size:
        raise fail(f"truncated: the header needs {_MSG_HEADER.size} bytes, got {len(buf)}")
    (_, version, code, view, seq, ts, scale, zp, dim, dev_len) = _MSG_HEADER.unpack_from(buf)
    if version not in MESSAGE_VERSIONS:
        raise fail(f"field 'version': this reader knows versions "
                   f"{', '.join(map(str, MESSAGE_VERSIONS))}, got {version}")
    if code not in _CODE_DTYPES:
        raise fail(f"field 'dtype': expected 1 (int8) or 2 (float32), got {code}")
    dtype = _CODE_DTYPES[code]
    if dim == 0:
        raise fail("field 'dim': a message carries at least one feature, got 0")
    if dev_len == 0:
        raise fail("field 'device': empty device id")
    ids_at, dep_len, hash_len, level = _MSG_HEADER.size, 0, 0, None
    if version == 2:
        if len(buf) < ids_at + MESSAGE_V2_EXTRA.size:
            raise fail(f"truncated: the version 2 header needs {ids_at + MESSAGE_V2_EXTRA.size}"
                       f" bytes, got {len(buf)}")
        level, dep_len, hash_len = MESSAGE_V2_EXTRA.unpack_from(buf, ids_at)
        ids_at += MESSAGE_V2_EXTRA.size
    payload_at = ids_at + dev_len + dep_len + hash_len
    expected = payload_at + dim * dtype.itemsize + _CRC.size
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "wrong size"
        ids = f"device id {dev_len} bytes"
        if version == 2:
            ids += f", deployment id {dep_len}, model hash {hash_len}"
        raise fail(f"{what}: the header (dim={dim}, dtype={dtype}, {ids}) "
                   f"describes {expected} bytes, got {len(buf)}")
    (crc,) = _CRC.unpack_from(buf, expected - _CRC.size)
    if crc != zlib.crc32(buf[: expected - _CRC.size]):
        raise fail("field 'crc32': checksum mismatch (corrupted message)")
    names = {}
    at = ids_at
    for name, n in (("device", dev_len), ("deployment_id", dep_len), ("model_hash", hash_len)):
        try:
            names[name] = buf[at : at + n].decode("utf-8")
        except UnicodeDecodeError as e:
            raise fail(f"field '{name}': not UTF-8 ({e.reason})") from None
        at += n
    device = names["device"]
    v2 = {} if version == 1 else dict(deployment_id=names["deployment_id"], level=level,
                                      model_hash=names["model_hash"])
    feats = np.frombuffer(buf, dtype=dtype.newbyteorder("<"), count=dim, offset=payload_at)
    feats = feats.astype(dtype)
    try:
        if dtype == np.int8:
            return FeatureMessage(view, seq, ts, device, feats, scale, zp, **v2)
        if scale != 0.0 or zp != 0:
            raise FrameError("scale, zero_point: must be 0 for float32 features")
        return FeatureMessage(view, seq, ts, device, feats, **v2)
    except FrameError as e:
        raise fail(str(e)) from None


# ---------------------------------------------------------------------------------------
# Aggregator input file (read by the standalone C++ program slimedge_aggregate)

AGGREGATE_MAGIC = b"SEAG"
AGGREGATE_VERSION = 1
_AGG_HEADER = struct.Struct("<4sHBBIIII8s")
_MODES = ("max", "mean", "weighted")
_POLICIES = ("renormalize", "table")


@dataclass(frozen=True, eq=False)
class AggregateInput:
    """A batch of frames to pool: what `slimedge_aggregate` reads.

    features (B, V, D) int8; scale (V,) float32 > 0; zero_point (V,) int32 in -128..127;
    live (B, V) bool; base_weights (V,) float32 >= 0; mode 'max' | 'mean' | 'weighted';
    policy 'renormalize' | 'table'; table: dead-view bitmask -> (V,) weights (policy 'table').
    """

    features: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    live: np.ndarray
    base_weights: np.ndarray
    mode: str = "weighted"
    policy: str = "renormalize"
    table: Mapping[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        feats = np.asarray(self.features)
        if feats.dtype != np.int8:
            raise FrameError(f"features: expected dtype int8, got {feats.dtype}")
        if feats.ndim == 2:
            feats = feats[None]
        if feats.ndim != 3 or 0 in feats.shape:
            raise FrameError(f"features: expected shape (B, V, D) or (V, D), got {feats.shape}")
        B, V, _ = feats.shape
        if V > 64:
            raise FrameError(f"features: at most 64 views (failure sets are 64-bit masks), "
                             f"got {V}")
        scale = _vector("scale", self.scale, V, np.float32)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise FrameError(f"scale: every entry must be finite and > 0, got {scale}")
        zp = np.asarray(self.zero_point)
        if zp.dtype.kind not in "iu":
            raise FrameError(f"zero_point: expected integers, got dtype {zp.dtype}")
        zp = _vector("zero_point", zp, V, np.int64)
        if np.any((zp < -128) | (zp > 127)):
            raise FrameError(f"zero_point: every entry must be in -128..127, got {zp}")
        live = np.asarray(self.live)
        if live.dtype != np.bool_ and (
            live.dtype.kind not in "iu" or np.any((live != 0) & (live != 1))
        ):
            raise FrameError("live: expected a bool mask (or 0/1 integers)")
        if live.shape not in ((V,), (B, V)):
            raise FrameError(f"live: expected shape ({V},) or ({B}, {V}), got {live.shape}")
        live = np.broadcast_to(live.astype(bool), (B, V))
        base = _vector("base_weights", self.base_weights, V, np.float32)
        if not np.all(np.isfinite(base) & (base >= 0)):
            raise FrameError(f"base_weights: every entry must be finite and >= 0, got {base}")
        if self.mode not in _MODES:
            raise FrameError(f"mode: expected one of {_MODES}, got {self.mode!r}")
        if self.policy not in _POLICIES:
            raise FrameError(f"policy: expected one of {_POLICIES}, got {self.policy!r}")
        if self.table and self.policy != "table":
            raise FrameError("table: rows given but policy is 'renormalize' (use 'table')")
        rows = {}
        for dead, weights in dict(self.table).items():
            _check_int("table key (dead mask)", dead, 0, 2**V - 1)
            rows[int(dead)] = _vector(f"table[{dead}]", weights, V, np.float32)
        try:  # the core's own rules for a row (finite, >= 0, no weight on a dead view)
            _core.ContingencyTable(V, rows)
        except ValueError as e:
            raise FrameError(f"table: {e}") from None
        for name, value in (
            ("features", np.ascontiguousarray(feats)),
            ("scale", scale),
            ("zero_point", zp.astype(np.int32)),
            ("live", np.ascontiguousarray(live)),
            ("base_weights", base),
            ("table", dict(sorted(rows.items()))),
        ):
            object.__setattr__(self, name, value)


def _vector(name: str, value: object, n: int, dtype: type) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise FrameError(f"{name}: expected numbers, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise FrameError(f"{name}: expected shape ({n},), got {arr.shape}")
    return np.ascontiguousarray(arr.astype(dtype))


def encode_aggregate_input(inp: AggregateInput) -> bytes:
    """The file form of `inp` (layout in cpp/tools/README.md)."""
    B, V, D = inp.features.shape
    parts = [
        _AGG_HEADER.pack(AGGREGATE_MAGIC, AGGREGATE_VERSION, _MODES.index(inp.mode),
                         _POLICIES.index(inp.policy), B, V, D, len(inp.table), bytes(8)),
        inp.scale.astype("<f4").tobytes(),
        inp.zero_point.astype("<i4").tobytes(),
        inp.live.astype(np.uint8).tobytes(),
        inp.base_weights.astype("<f4").tobytes(),
    ]
    for dead, weights in inp.table.items():
        parts.append(struct.pack("<Q", dead) + weights.astype("<f4").tobytes())
    parts.append(inp.features.tobytes())
    return b"".join(parts)


def decode_aggregate_input(data: bytes | bytearray | memoryview, *,
                           source: str = "input") -> AggregateInput:
    """Parse an aggregator input file held in memory (the checks `slimedge_aggregate` makes)."""
    buf = bytes(data)

    def fail(msg: str) -> FrameError:
        return FrameError(f"{source}: {msg}")

    if len(buf) >= 4 and buf[:4] != AGGREGATE_MAGIC:
        raise fail(f"field 'magic': not a SlimEdge aggregator input (got {buf[:4]!r})")
    if len(buf) < _AGG_HEADER.size:
        raise fail(f"truncated: the header needs {_AGG_HEADER.size} bytes, got {len(buf)}")
    _, version, mode, policy, B, V, D, T, reserved = _AGG_HEADER.unpack_from(buf)
    if version != AGGREGATE_VERSION:
        raise fail(f"field 'version': this reader knows version {AGGREGATE_VERSION}, "
                   f"got {version}")
    if mode >= len(_MODES):
        raise fail(f"field 'mode': expected 0..{len(_MODES) - 1}, got {mode}")
    if policy >= len(_POLICIES):
        raise fail(f"field 'policy': expected 0..{len(_POLICIES) - 1}, got {policy}")
    if reserved != bytes(8):
        raise fail("field 'reserved': must be zero in version 1")
    for name, value in (("B", B), ("V", V), ("D", D)):
        if value == 0:
            raise fail(f"field '{name}': must be >= 1, got 0")
    if V > 64:
        raise fail(f"field 'V': expected 1..64 views, got {V}")
    sizes = [("scale", 4 * V), ("zero_point", 4 * V), ("live", B * V), ("base_weights", 4 * V),
             ("table", T * (8 + 4 * V)), ("features", B * V * D)]
    expected = _AGG_HEADER.size + sum(n for _, n in sizes)
    if len(buf) != expected:
        raise fail(f"{'truncated' if len(buf) < expected else 'wrong size'}: the header "
                   f"(B={B}, V={V}, D={D}, table_rows={T}) describes {expected} bytes, "
                   f"got {len(buf)}")
    at = _AGG_HEADER.size
    arrays = {}
    for name, n in sizes:
        arrays[name] = buf[at : at + n]
        at += n
    table = {}
    for t in range(T):
        row = arrays["table"][t * (8 + 4 * V) : (t + 1) * (8 + 4 * V)]
        (dead,) = struct.unpack_from("<Q", row)
        if dead in table:
            raise fail(f"field 'table[{t}]': dead mask {dead} appears twice")
        table[dead] = np.frombuffer(row, "<f4", V, 8).astype(np.float32)
    live = np.frombuffer(arrays["live"], np.uint8).reshape(B, V)
    if np.any(live > 1):
        raise fail("field 'live': entries must be 0 or 1")
    try:
        return AggregateInput(
            features=np.frombuffer(arrays["features"], np.int8).reshape(B, V, D),
            scale=np.frombuffer(arrays["scale"], "<f4").astype(np.float32),
            zero_point=np.frombuffer(arrays["zero_point"], "<i4").astype(np.int32),
            live=live.astype(bool),
            base_weights=np.frombuffer(arrays["base_weights"], "<f4").astype(np.float32),
            mode=_MODES[mode],
            policy=_POLICIES[policy],
            table=table,
        )
    except FrameError as e:
        raise fail(str(e)) from None


def write_aggregate_input(
    path: str | Path,
    features: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    live: np.ndarray,
    base_weights: np.ndarray,
    *,
    mode: str = "weighted",
    policy: str = "renormalize",
    table: Mapping[int, np.ndarray] | None = None,
) -> AggregateInput:
    """Validate the arrays and write them as an aggregator input file (atomically).

    features (B, V, D) or (V, D) int8; live (V,) shared by every frame or (B, V).
    Returns the validated input (what `aggregate_report` takes).
    """
    inp = AggregateInput(features, scale, zero_point, live, base_weights, mode, policy,
                         table or {})
    data = encode_aggregate_input(inp)
    with atomic_file(path, "wb") as fh:
        fh.write(data)
    return inp


def read_aggregate_input(path: str | Path) -> AggregateInput:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FrameError(f"{path}: cannot read ({e.strerror})") from None
    return decode_aggregate_input(data, source=str(path))


def _value_line(kind: str, i: int, x: np.float32) -> str:
    bits = int(np.float32(x).view(np.uint32))
    return f"{kind} {i} 0x{bits:08x} {float(x):.6g}\n"


def aggregate_report(inp: AggregateInput) -> str:
    """What `slimedge_aggregate` prints for `inp`, computed with `slimedge._core`.

    Per frame: the live set, where its weights came from (the contingency table, renormalize,
    or none when no view is live), whether the frame had no usable view, then the weights
    redistributed over the live views and the pooled features, each float32 as its bit
    pattern in hex and rounded to 6 significant digits.
    """
    B, V, D = inp.features.shape
    table = _core.ContingencyTable(V, dict(inp.table)) if inp.policy == "table" else None
    weights = _core.redistribute(inp.base_weights, inp.live, inp.policy, table)
    pooled, empty = _core.pool(inp.features, inp.live, weights, mode=inp.mode, scale=inp.scale,
                               zero_point=inp.zero_point)
    lines = [f"slimedge-aggregate {AGGREGATE_VERSION}\n",
             f"B={B} V={V} D={D} mode={inp.mode} policy={inp.policy}\n"]
    for b in range(B):
        dead = _core.dead_mask(inp.live[b])
        if table is not None and dead in table:
            source = "table"
        else:
            source = "renormalize" if inp.live[b].any() else "none"
        live = "".join("1" if x else "0" for x in inp.live[b])
        lines.append(f"frame {b} live={live} dead_mask=0x{dead:x} weights_from={source} "
                     f"empty={int(empty[b])}\n")
        lines += [_value_line("weight", v, weights[b, v]) for v in range(V)]
        lines += [_value_line("pooled", d, pooled[b, d]) for d in range(D)]
    return "".join(lines)
