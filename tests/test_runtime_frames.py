"""Feature messages and the standalone aggregator's input file: round trips, strict
validation, and the report checked against a NumPy reference of pooling."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from slimedge.errors import SlimEdgeError
from slimedge.runtime import frames
from slimedge.runtime.frames import AggregateInput, FeatureMessage, FrameError


def _int8_message(**overrides) -> FeatureMessage:
    fields = dict(view=3, seq=2**40 + 5, timestamp_ns=1_700_000_000_123_456_789,
                  device="pi-zero-2w/ü", features=np.arange(-5, 11, dtype=np.int8),
                  scale=0.0123, zero_point=-7)
    fields.update(overrides)
    return FeatureMessage(**fields)


# ---------------------------------------------------------------------------------------
# Feature messages


def test_int8_message_round_trip():
    m = _int8_message()
    data = frames.encode(m)
    got = frames.decode(data)
    assert got == m
    assert got.features.dtype == np.int8 and got.scale == float(np.float32(0.0123))
    assert got.device == "pi-zero-2w/ü" and got.seq == 2**40 + 5
    assert np.allclose(got.dequantized(), np.float32(0.0123) * (np.arange(-5, 11) + 7))
    assert data[:4] == b"SEFM" and data[4] == 1
    # The layout is fixed: header 37 bytes + device id + payload + CRC.
    assert len(data) == 37 + len("pi-zero-2w/ü".encode()) + 16 + 4


def test_float32_message_round_trip():
    x = np.linspace(-1, 1, 7, dtype=np.float32)
    m = FeatureMessage(view=0, seq=0, timestamp_ns=-1, device="jetson", features=x)
    got = frames.decode(bytearray(frames.encode(m)))
    assert got == m and got.scale is None and got.zero_point is None
    assert got.features.dtype == np.float32 and np.array_equal(got.features, x)
    assert got != _int8_message()


def test_message_features_are_read_only_copies():
    got = frames.decode(frames.encode(_int8_message()))
    with pytest.raises(ValueError):
        got.features[0] = 1
    mine = np.zeros(3, np.int8)
    m = _int8_message(features=mine, view=np.uint16(2))
    mine[0] = 5  # the caller's array stays theirs and writable
    assert m.features[0] == 0 and type(m.view) is int


def test_every_truncation_is_rejected():
    data = frames.encode(_int8_message())
    for n in range(len(data)):
        with pytest.raises(FrameError, match=r"^topic/a: (truncated|field 'magic')"):
            frames.decode(data[:n], source="topic/a")


@pytest.mark.parametrize(
    "patch, match",
    [
        (lambda d: b"\x89PNG" + d[4:], "field 'magic': not a SlimEdge feature message"),
        (lambda d: b'{"view": 1}', "field 'magic'"),
        (lambda d: d[:4] + b"\x03" + d[5:], "field 'version'.*knows versions 1, 2, got 3"),
        (lambda d: d[:4] + b"\x00" + d[5:], "field 'version'.*got 0"),
        (lambda d: d[:5] + b"\x07" + d[6:], "field 'dtype'"),
        (lambda d: d + b"\x00", "wrong size"),
        (lambda d: d[:-6] + bytes([d[-6] ^ 1]) + d[-5:], "field 'crc32'"),
    ],
)
def test_foreign_or_corrupt_messages_are_rejected(patch, match):
    with pytest.raises(FrameError, match=match):
        frames.decode(patch(frames.encode(_int8_message())))


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_bad_fields_with_a_valid_checksum_are_rejected():
    data = frames.encode(_int8_message())[:-4]
    # scale 0 for an int8 payload
    bad_scale = data[:24] + struct.pack("<f", 0.0) + data[28:]
    with pytest.raises(FrameError, match="scale"):
        frames.decode(_with_crc(bad_scale))
    # zero point outside int8
    with pytest.raises(FrameError, match="zero_point"):
        frames.decode(_with_crc(data[:28] + struct.pack("<i", 300) + data[32:]))
    # a device id that is not UTF-8
    n = data[36]
    with pytest.raises(FrameError, match="field 'device': not UTF-8"):
        frames.decode(_with_crc(data[:37] + b"\xff" * n + data[37 + n :]))
    # float32 payload carrying NaN
    m = FeatureMessage(view=1, seq=1, timestamp_ns=0, device="d", features=np.zeros(2, "f4"))
    f = frames.encode(m)[:-4]
    with pytest.raises(FrameError, match="finite"):
        frames.decode(_with_crc(f[:-4] + struct.pack("<f", float("nan"))))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(view=70000), "view"),
        (dict(view=-1), "view"),
        (dict(seq=-1), "seq"),
        (dict(view=1.0), "view: expected an integer"),
        (dict(device=""), "device"),
        (dict(device="x" * 256), "device"),
        (dict(features=np.zeros(4, np.int16)), "features: expected int8 or float32"),
        (dict(features=np.zeros((2, 2), np.int8)), r"features: expected shape \(D,\)"),
        (dict(features=np.zeros(0, np.int8)), "features"),
        (dict(scale=None), "scale, zero_point"),
        (dict(scale=0.0), "scale"),
        (dict(scale=float("inf")), "scale"),
        (dict(scale=1e39), "scale"),  # finite, but not as float32
        (dict(scale=1e-50), "scale"),  # zero as float32
        (dict(zero_point=128), "zero_point"),
        (dict(features=np.zeros(3, np.float32)), "only int8 features are quantized"),
    ],
)
def test_message_fields_are_validated(overrides, match):
    with pytest.raises(FrameError, match=match):
        _int8_message(**overrides)


# ---------------------------------------------------------------------------------------
# Version 2: the message names its deployment

HASH = "0f" * 32


def _v2_message(**overrides) -> FeatureMessage:
    fields = dict(deployment_id="mixed12-20260101-ab12", level=0.75, model_hash=HASH)
    fields.update(overrides)
    return _int8_message(**fields)


def test_v2_message_round_trip_and_layout():
    m = _v2_message()
    data = frames.encode(m)
    assert data[4] == 2 and m.version == 2
    got = frames.decode(data)
    assert got == m
    assert (got.deployment_id, got.level, got.model_hash) == ("mixed12-20260101-ab12", 0.75,
                                                              HASH)
    dev = "pi-zero-2w/ü".encode()
    assert len(data) == 43 + len(dev) + len("mixed12-20260101-ab12") + 64 + 16 + 4
    # the fixed part of the v2 header, at the offsets the docstring table gives
    assert struct.unpack_from("<fBB", data, 37) == (0.75, 21, 64)
    assert data[43 : 43 + len(dev)] == dev
    assert data[43 + len(dev) : 43 + len(dev) + 21] == b"mixed12-20260101-ab12"
    # float32 features, a 16-digit hash prefix, level stored as float32
    x = np.linspace(-1, 1, 5, dtype=np.float32)
    f = FeatureMessage(view=0, seq=1, timestamp_ns=2, device="j", features=x,
                       deployment_id="d", level=0.1, model_hash="abcdef0123456789")
    got = frames.decode(frames.encode(f))
    assert got == f and got.level == float(np.float32(0.1)) and got.scale is None


def test_v1_bytes_stay_readable_with_deployment_fields_none():
    # a version 1 message built byte by byte, as a device on the old format sends it
    body = struct.pack("<4sBBHQqfiIB", b"SEFM", 1, 1, 4, 9, 123, 0.5, -3, 3, 3) + b"cam"
    body += np.array([1, -2, 3], np.int8).tobytes()
    got = frames.decode(_with_crc(body))
    assert (got.view, got.seq, got.device, got.version) == (4, 9, "cam", 1)
    assert got.deployment_id is None and got.level is None and got.model_hash is None
    assert frames.encode(got) == _with_crc(body)  # written back as version 1
    assert got != _v2_message(view=4)


def test_every_truncation_of_a_v2_message_is_rejected():
    data = frames.encode(_v2_message())
    for n in range(len(data)):
        with pytest.raises(FrameError, match=r"^t: (truncated|field 'magic')"):
            frames.decode(data[:n], source="t")


def test_v2_names_that_are_not_text_are_rejected_with_their_field():
    data = frames.encode(_v2_message(device="d", deployment_id="dep"))[:-4]
    at = 43 + 1  # after the one-byte device id
    with pytest.raises(FrameError, match="field 'deployment_id': not UTF-8"):
        frames.decode(_with_crc(data[:at] + b"\xff" + data[at + 1 :]))
    with pytest.raises(FrameError, match="model_hash: expected 16..64 lowercase hex"):
        frames.decode(_with_crc(data[:at + 3] + b"Z" + data[at + 4 :]))
    with pytest.raises(FrameError, match="level"):
        frames.decode(_with_crc(data[:37] + struct.pack("<f", float("nan")) + data[41:]))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(level=None), "give all three"),
        (dict(model_hash=None), "give all three"),
        (dict(deployment_id=""), "deployment_id: must be 1..255 bytes"),
        (dict(deployment_id="x" * 256), "deployment_id"),
        (dict(deployment_id=7), "deployment_id: expected a string"),
        (dict(level=1.0), "level: expected a pruning fraction"),
        (dict(level=-0.1), "level"),
        (dict(level=float("inf")), "level"),
        (dict(level="0.5"), "level: expected a number"),
        (dict(model_hash="abc"), "model_hash"),
        (dict(model_hash="0F" * 8), "model_hash"),
        (dict(model_hash="0" * 65), "model_hash"),
    ],
)
def test_v2_fields_are_validated(overrides, match):
    with pytest.raises(FrameError, match=match):
        _v2_message(**overrides)


def test_frame_error_is_a_slimedge_error():
    assert issubclass(FrameError, SlimEdgeError)


# ---------------------------------------------------------------------------------------
# Aggregator input file


def _numpy_reference(inp: AggregateInput) -> tuple[np.ndarray, np.ndarray]:
    """Redistributed weights and pooled features, written independently of the C++ core."""
    B, V, D = inp.features.shape
    x = inp.scale[None, :, None] * (inp.features.astype(np.float64)
                                    - inp.zero_point[None, :, None])
    weights = np.zeros((B, V))
    pooled = np.zeros((B, D))
    for b in range(B):
        live = inp.live[b]
        dead = sum(1 << v for v in range(V) if not live[v])
        if not live.any():
            continue
        if inp.policy == "table" and dead in inp.table:
            weights[b] = inp.table[dead]
        else:
            base = inp.base_weights.astype(np.float64)
            if base[live].sum() > 0:
                weights[b] = np.where(live, base * base.sum() / base[live].sum(), 0)
            else:
                weights[b] = np.where(live, (base.sum() or 1.0) / live.sum(), 0)
        if inp.mode == "max":
            pooled[b] = x[b, live].max(0)
        elif inp.mode == "mean":
            pooled[b] = x[b, live].mean(0)
        elif weights[b][live].sum() > 0:
            w = weights[b][live]
            pooled[b] = (w[:, None] * x[b, live]).sum(0) / w.sum()
    return weights, pooled


def _parse_report(text: str, B: int, V: int, D: int):
    lines = text.splitlines()
    weights, pooled, empty = np.zeros((B, V), np.float32), np.zeros((B, D), np.float32), []
    b = -1
    for line in lines[2:]:
        parts = line.split()
        if parts[0] == "frame":
            b = int(parts[1])
            empty.append(parts[-1] == "empty=1")
            continue
        bits = np.array([int(parts[2], 16)], np.uint32).view(np.float32)[0]
        assert float(parts[3]) == pytest.approx(float(bits), rel=1e-5, abs=1e-30)
        (weights if parts[0] == "weight" else pooled)[b, int(parts[1])] = bits
    return weights, pooled, np.array(empty)


def _random_input(seed: int, mode: str, policy: str) -> AggregateInput:
    rng = np.random.default_rng(seed)
    B, V, D = 7, int(rng.integers(1, 7)), int(rng.integers(1, 9))
    live = rng.random((B, V)) < 0.7
    live[0] = True
    live[1] = False
    table = {}
    if policy == "table":
        for _ in range(3):
            dead = int(rng.integers(0, 2**V))
            table[dead] = np.where([(dead >> v) & 1 for v in range(V)], 0,
                                   rng.uniform(0, 2, V)).astype(np.float32)
        table[int(sum(1 << v for v in range(V) if not live[2, v]))] = np.zeros(V, np.float32)
    return AggregateInput(
        features=rng.integers(-128, 128, (B, V, D), dtype=np.int8),
        scale=rng.uniform(0.001, 0.5, V).astype(np.float32),
        zero_point=rng.integers(-128, 128, V),
        live=live,
        base_weights=rng.uniform(0, 3, V).astype(np.float32) * (rng.random(V) < 0.8),
        mode=mode, policy=policy, table=table,
    )


@pytest.mark.parametrize("mode", ["max", "mean", "weighted"])
@pytest.mark.parametrize("policy", ["renormalize", "table"])
def test_report_matches_numpy_reference(mode, policy, tmp_path):
    for seed in range(4):
        inp = _random_input(seed, mode, policy)
        path = tmp_path / f"{seed}.bin"
        frames.write_aggregate_input(path, inp.features, inp.scale, inp.zero_point, inp.live,
                                     inp.base_weights, mode=mode, policy=policy,
                                     table=inp.table)
        back = frames.read_aggregate_input(path)
        for name in ("features", "scale", "zero_point", "live", "base_weights"):
            assert np.array_equal(getattr(back, name), getattr(inp, name)), name
        assert back.table.keys() == inp.table.keys()
        B, V, D = inp.features.shape
        weights, pooled, empty = _parse_report(frames.aggregate_report(back), B, V, D)
        ref_w, ref_p = _numpy_reference(inp)
        np.testing.assert_allclose(weights, ref_w, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(pooled, ref_p, rtol=1e-5, atol=1e-5)
        ref_empty = ~inp.live.any(1)
        if mode == "weighted":
            ref_empty |= (ref_w * inp.live).sum(1) == 0
        assert np.array_equal(empty, ref_empty) and empty[1]


def test_single_frame_and_shared_live_mask_are_accepted():
    inp = AggregateInput(np.ones((3, 4), np.int8), np.ones(3), [0, 0, 0], [1, 0, 1],
                         np.ones(3), mode="mean")
    assert inp.features.shape == (1, 3, 4) and inp.live.shape == (1, 3)
    assert inp.zero_point.dtype == np.int32 and inp.scale.dtype == np.float32


def test_encoded_layout_is_the_documented_one():
    inp = AggregateInput(np.array([[[1, -2]], [[3, 4]]], np.int8), [0.5], [1], [[1], [0]],
                         [2.0], mode="max", policy="table",
                         table={1: np.zeros(1, np.float32)})
    data = frames.encode_aggregate_input(inp)
    assert data[:32] == (b"SEAG" + struct.pack("<HBBIIII", 1, 0, 1, 2, 1, 2, 1) + bytes(8))
    rest = data[32:]
    assert rest == (struct.pack("<f", 0.5) + struct.pack("<i", 1) + b"\x01\x00"
                    + struct.pack("<f", 2.0) + struct.pack("<Qf", 1, 0.0)
                    + bytes([1, 0xFE, 3, 4]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(features=np.zeros((2, 3, 4), np.float32)), "features: expected dtype int8"),
        (dict(features=np.zeros((2, 65, 1), np.int8)), "at most 64 views"),
        (dict(features=np.zeros((2, 0, 4), np.int8)), "features: expected shape"),
        (dict(scale=[1, 0, 1]), "scale"),
        (dict(scale=[1, 1]), r"scale: expected shape \(3,\)"),
        (dict(zero_point=[0, 0, 200]), "zero_point"),
        (dict(zero_point=[0.0, 0.0, 0.0]), "zero_point: expected integers"),
        (dict(live=[1, 2, 1]), "live"),
        (dict(live=np.ones((3, 3), bool)), "live: expected shape"),
        (dict(base_weights=[1, -1, 1]), "base_weights"),
        (dict(base_weights=[1, np.nan, 1]), "base_weights"),
        (dict(mode="median"), "mode"),
        (dict(policy="uniform"), "policy"),
        (dict(table={1: [0, 1, 1]}), "policy is 'renormalize'"),
        (dict(policy="table", table={1: [1, 1, 1]}), "table: .*dead view"),
        (dict(policy="table", table={8: [1, 1, 1]}), "dead mask"),
        (dict(policy="table", table={1: [0, 1]}), r"table\[1\]: expected shape"),
    ],
)
def test_aggregate_input_is_validated(kwargs, match, tmp_path):
    args = dict(features=np.zeros((2, 3, 4), np.int8), scale=[1, 1, 1], zero_point=[0, 0, 0],
                live=[1, 1, 1], base_weights=[1, 1, 1])
    args.update(kwargs)
    target = tmp_path / "in.bin"
    target.write_bytes(b"last good")
    with pytest.raises(FrameError, match=match):
        frames.write_aggregate_input(target, **args)
    assert target.read_bytes() == b"last good"  # nothing partial written
    assert [p.name for p in tmp_path.iterdir()] == ["in.bin"]


def test_decode_aggregate_input_rejects_bad_files(tmp_path):
    inp = _random_input(0, "weighted", "table")
    data = frames.encode_aggregate_input(inp)
    for n in (0, 3, 10, 31, 40, len(data) - 1):
        with pytest.raises(FrameError, match="truncated|field 'magic'"):
            frames.decode_aggregate_input(data[:n])
    with pytest.raises(FrameError, match="wrong size"):
        frames.decode_aggregate_input(data + b"\x00")
    with pytest.raises(FrameError, match="field 'magic'"):
        frames.decode_aggregate_input(frames.MESSAGE_MAGIC + data[4:])
    with pytest.raises(FrameError, match="field 'version'"):
        frames.decode_aggregate_input(data[:4] + b"\x02\x00" + data[6:])
    with pytest.raises(FrameError, match="field 'reserved'"):
        frames.decode_aggregate_input(data[:31] + b"\x01" + data[32:])
    B, V, _ = inp.features.shape
    live_at = 32 + 8 * V
    with pytest.raises(FrameError, match="field 'live'"):
        frames.decode_aggregate_input(data[:live_at] + b"\x02" + data[live_at + 1 :])
    with pytest.raises(FrameError, match="nope.bin: cannot read"):
        frames.read_aggregate_input(tmp_path / "nope.bin")


def test_the_size_the_cost_model_uses_is_the_encoded_size():
    from slimedge.wire import feature_message_bytes

    for m in (_int8_message(), _v2_message(), _v2_message(model_hash="ab" * 8)):
        v2 = dict(deployment_id=m.deployment_id, model_hash=m.model_hash)
        assert feature_message_bytes(m.dim, m.device, "int8", **v2) == len(frames.encode(m))
