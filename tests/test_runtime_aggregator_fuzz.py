"""Fuzz: malformed messages at the aggregator's handler, valid frames in between (2 x 10^4
in the default run, 10^5 in the slow one).

A seeded generator builds each bad message together with the reason it must be refused for:
truncations, bit flips (in the CRC-covered bytes the decoder reads only after the checksum),
corrupted magic / version / dtype / sizes, trailing bytes, random garbage, huge payloads, and
well-formed messages with one wrong field (device, view, deployment, model hash, level,
shape, dtype, NaN with a valid CRC, timestamps, duplicates), plus broken heartbeats, statuses
and foreign topics. Checked: nothing raises, every refusal is counted under its own reason
(no internal errors), and every valid frame in between is answered with the evaluator's class.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import Counter

import numpy as np
import pytest
from aggregator_support import load_fleet

from slimedge.runtime import frames, topics
from slimedge.runtime.aggregator import Aggregator
from slimedge.wire import MESSAGE_HEADER, MESSAGE_V2_EXTRA

MS = 1_000_000
T0 = 1_800_000_000 * 1_000_000_000
# header bytes the decoder checks before the CRC: magic, version, dtype, D, id lengths
STRUCTURAL = set(range(0, 6)) | set(range(32, 37)) | {41, 42}


@pytest.fixture(scope="module")
def fleet(tiny_deployment):
    return load_fleet(tiny_deployment)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


class Generator:
    """Bad messages with the reason each must be refused for."""

    def __init__(self, fleet, seed: int, pool: int = 32) -> None:
        self.f = fleet
        self.rng = np.random.default_rng(seed)
        self.kinds = [getattr(self, n) for n in dir(self) if n.startswith("k_")]
        # Messages are built once into pools and drawn from them (encoding each anew would
        # make the generator, not the aggregator, the slow part). Valid messages of frames the
        # valid stream never uses: a corrupted one must not be counted as anything else.
        self.valid_pool = [(self.f.topic(v), self.f.payload(10**6 + i, v, T0), v)
                           for v in range(12) for i in range(pool)]
        self.field_pool = [self._field(i) for i in range(12 * pool)]
        self.huge = b"SEFM" + bytes((1 << 20) - 4)

    def valid(self, frame: int, view: int, now: int) -> bytes:
        return self.f.payload(frame, view, now)

    def any_valid(self, now: int) -> tuple[str, bytes, int]:
        return self.valid_pool[int(self.rng.integers(len(self.valid_pool)))]

    # each k_*: (topic, payload, reason)
    def k_truncated(self, now):
        t, p, _ = self.any_valid(now)
        return t, p[: int(self.rng.integers(len(p)))], "truncated"

    def k_bit_flips(self, now):
        t, p, _ = self.any_valid(now)
        b = bytearray(p)
        free = [i for i in range(len(b)) if i not in STRUCTURAL]
        for i in self.rng.choice(free, size=int(self.rng.integers(1, 9)), replace=False):
            b[i] ^= 1 << int(self.rng.integers(8))
        return t, bytes(b), "bad_crc" if bytes(b) != p else "duplicate"

    def k_magic(self, now):
        t, p, _ = self.any_valid(now)
        magic = bytes(self.rng.integers(0, 256, 4, dtype=np.uint8))
        if magic == b"SEFM":
            magic = b"XEFM"
        return t, magic + p[4:], "malformed"

    def k_version(self, now):
        t, p, _ = self.any_valid(now)
        return t, p[:4] + bytes([int(self.rng.choice([0, 3, 7, 255]))]) + p[5:], "malformed"

    def k_dtype(self, now):
        t, p, _ = self.any_valid(now)
        return t, p[:5] + bytes([int(self.rng.choice([0, 3, 9]))]) + p[6:], "malformed"

    def k_sizes(self, now):
        t, p, _ = self.any_valid(now)
        b = bytearray(p)
        at = int(self.rng.choice([32, 36, 41, 42]))  # D, device / deployment / hash length
        if at == 32:
            struct.pack_into("<I", b, 32, int(self.rng.integers(1, 2**32)))
        else:
            b[at] = int(self.rng.integers(0, 256))
        if bytes(b) == p:  # the random value was the right one: make it wrong
            b[at] = (b[at] + 1) % 256
        zero_len = (at == 32 and struct.unpack_from("<I", b, 32)[0] == 0) or (at == 36
                                                                               and b[36] == 0)
        if zero_len:
            return t, bytes(b), "malformed"
        dev, dep, h = b[36], b[41], b[42]
        dim = struct.unpack_from("<I", b, 32)[0]
        want = MESSAGE_HEADER.size + MESSAGE_V2_EXTRA.size + dev + dep + h + dim + 4
        return t, bytes(b), "truncated" if len(b) < want else "malformed"

    def k_trailing(self, now):
        t, p, _ = self.any_valid(now)
        return t, p + bytes(int(self.rng.integers(1, 64))), "malformed"

    def k_garbage(self, now):
        n = int(self.rng.integers(1, 600))
        b = bytes(self.rng.integers(0, 256, n, dtype=np.uint8))
        if b[:1] == b"S":
            b = b"x" + b[1:]
        return self.f.topic(int(self.rng.integers(12))), b, "malformed"

    def k_huge(self, now):
        if self.rng.random() < 0.1:
            return self.f.topic(0), self.huge, "oversize"  # 1 MiB
        n = int(self.rng.integers(self.f.dep.max_message_bytes() + 1, 20_000))
        return self.f.topic(0), b"SEFM" + bytes(n - 4), "oversize"

    def k_field(self, now):
        return self.field_pool[int(self.rng.integers(len(self.field_pool)))]

    def _field(self, n):
        """A well-formed message with one wrong field (its capture time, T0 + 10 s at most
        into the run, is valid whenever the field under test is not the time)."""
        f, now = self.f, T0
        v = int(self.rng.integers(12))
        frame = 10**6 + int(self.rng.integers(10**6))
        i = n % 11
        other = f"cam{(v + 1) % 12:02d}"
        if i == 0:
            return topics.features(f.dep.fleet, "cam99"), f.payload(frame, v, now), \
                "unknown_device"
        if i == 1:
            return f.topic(v), f.payload(frame, v, now, device=other), "device_mismatch"
        if i == 2:
            return f.topic(v), f.payload(frame, (v + 1) % 12, now,
                                         device=f.dep.view_device[v]), "view_not_owned"
        if i == 3:
            return f.topic(v), f.payload(frame, v, now, deployment_id="x-1"), "wrong_deployment"
        if i == 4:
            h = "".join(self.rng.choice(list("0123456789abcdef"), 64))
            return f.topic(v), f.payload(frame, v, now, model_hash=h), "wrong_model"
        if i == 5:
            return f.topic(v), f.payload(frame, v, now, level=0.125), "wrong_model"
        if i == 6:
            d = int(self.rng.choice([1, 15, 17, 300]))
            return f.topic(v), f.payload(frame, v, now, features=np.zeros(d, np.int8)), \
                "wrong_shape"
        if i == 7:
            return f.topic(v), f.payload(frame, v, now, features=np.zeros(16, np.float32),
                                         scale=None, zero_point=None), "wrong_dtype"
        if i == 8:
            m = f.message(frame, v, now, features=np.zeros(16, np.float32), scale=None,
                          zero_point=None)
            body = bytearray(frames.encode(m)[:-4])
            bad = float(self.rng.choice([np.nan, np.inf, -np.inf]))
            struct.pack_into("<f", body, len(body) - 4 * int(self.rng.integers(1, 17)), bad)
            return f.topic(v), _with_crc(bytes(body)), "non_finite"
        if i == 9:  # an hour ahead of any time of the run
            return f.topic(v), f.payload(frame, v, now + 3600 * 10**9), "bad_timestamp"
        return f.topic(v), f.payload(frame, v, now - 3600 * 10**9), "late"  # an hour old

    def k_heartbeat(self, now):
        f = self.f
        v = int(self.rng.integers(12))
        i = int(self.rng.integers(4))
        if i == 0:
            p = bytes(self.rng.integers(0, 256, int(self.rng.integers(0, 200)), dtype=np.uint8))
        elif i == 1:
            p = json.dumps([1, 2]).encode()
        elif i == 2:
            hb = json.loads(f.heartbeat(f.dep.view_device[v], 0))
            # a string where the contract wants a number, a known runtime, or the sender
            hb[str(self.rng.choice([k for k in hb if k not in ("deployment_id",
                                                              "model_hash")]))] = "?"
            p = json.dumps(hb).encode()
        else:
            hb = json.loads(f.heartbeat(f.dep.view_device[v], 0))
            del hb[str(self.rng.choice(list(hb)))]
            p = json.dumps(hb).encode()
        return f.topic(v, "heartbeat"), p, "bad_heartbeat"

    def k_status(self, now):
        text = self.rng.choice(["", "on", "OFFLINE", "dead", "\xff"])
        return self.f.topic(int(self.rng.integers(12)), "status"), \
            text.encode("utf-8", "surrogateescape") if text != "\xff" else b"\xff", \
            "bad_status"

    def k_topic(self, now):
        t = str(self.rng.choice(["", "slimedge", "slimedge/tiny12/cam00", "x/tiny12/cam00/features",
                                 "slimedge/other/cam00/features", "slimedge/tiny12/cam00/ack",
                                 "slimedge/tiny12/results", "slimedge/tiny12/cam00/features/x"]))
        return t, self.valid(1, 0, now), "foreign_topic"

    def next(self, now):
        return self.kinds[int(self.rng.integers(len(self.kinds)))](now)


def run_fuzz(fleet, n_bad: int, every: int, seed: int) -> tuple[Aggregator, Counter, int]:
    agg = Aggregator(fleet.dep, fleet.head, now_ns=T0)
    gen = Generator(fleet, seed)
    want: Counter[str] = Counter()
    now, frame, answered, seq = T0, 0, 0, 0
    for i in range(n_bad):
        now += MS // 10
        if i % every == 0:  # a valid frame (after heartbeats), answered as soon as complete
            for v in range(12):
                agg.handle(fleet.topic(v, "heartbeat"), fleet.heartbeat(f"cam{v:02d}", seq),
                           now)
            seq += 1
            got = []
            for v in range(12):
                got += agg.handle(fleet.topic(v), fleet.payload(frame, v, now), now)
            assert len(got) == 1 and got[0].frame == frame and got[0].views == tuple(range(12))
            assert got[0].cls == fleet.expected(frame, np.ones(12, bool))[0]
            # a replay of one of its views is a duplicate
            agg.handle(fleet.topic(frame % 12), fleet.payload(frame, frame % 12, now), now)
            want["duplicate"] += 1
            frame += 1
            answered += 1
        topic, payload, reason = gen.next(now)
        agg.handle(topic, payload, now)
        want[reason] += 1
        agg.tick(now)
    return agg, want, answered


def check_fuzz(fleet, n: int, seed: int) -> None:
    agg, want, answered = run_fuzz(fleet, n, every=50, seed=seed)
    assert agg.rejected["internal_error"] == 0
    assert agg.answered == answered == n // 50
    assert dict(agg.rejected) == dict(want)
    assert sum(want.values()) == n + n // 50  # every bad message and every replayed view
    assert len(want) == 18  # the generator reached every reason it has
    assert not agg.aligner.pending


def test_fuzz_every_refusal_counted_under_its_reason(fleet):
    check_fuzz(fleet, 20_000, seed=0)


@pytest.mark.slow
def test_fuzz_hundred_thousand_messages(fleet):
    check_fuzz(fleet, 100_000, seed=1)
