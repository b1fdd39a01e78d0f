"""Sending one feature vector to the aggregator: its size on the wire and its time.

    t_tx = 8 x message_bytes / bandwidth_B + wait_B

message_bytes is the real wire form (`slimedge.wire.feature_message_bytes`: header, device
id, D features, CRC). Transport framing below it (MQTT, TCP/IP, BLE L2CAP) is not added: the
catalog's link latency and (for BLE) application-level bandwidth stand for it.

wait_B, by `link_latency`:

- "worst": `link.latency` as the board file states it (for BLE, a full connection interval:
  a message that just missed a connection event waits for the next one);
- "expected": `link.latency - link.interval / 2` where the board states `link.interval` (a
  message produced at a random time waits half an interval on average), else `link.latency`
  (links without a schedule: Ethernet, Wi-Fi, USB).
"""

from __future__ import annotations

import numpy as np

from slimedge.devices.catalog import Board
from slimedge.devices.level_fields import CostModelError
from slimedge.wire import FEATURE_ITEMSIZE, feature_message_bytes

LINK_LATENCIES = ("expected", "worst")


def check_link_latency(link_latency: str) -> str:
    if link_latency not in LINK_LATENCIES:
        raise CostModelError(f"link latency {link_latency!r}: expected one of "
                             f"{', '.join(LINK_LATENCIES)}")
    return link_latency


def message_bytes(feature_dim: int, device_id: str = "cam00", dtype: str = "int8") -> int:
    """Size of one encoded feature message (`slimedge.runtime.frames.encode`)."""
    if isinstance(feature_dim, bool) or not isinstance(feature_dim, int | np.integer) \
            or feature_dim < 1:
        raise CostModelError(f"feature_dim must be a whole number >= 1, got {feature_dim!r}")
    if dtype not in FEATURE_ITEMSIZE:
        raise CostModelError(f"feature dtype {dtype!r}: expected 'int8' or 'float32'")
    if not isinstance(device_id, str) or not 1 <= len(device_id.encode("utf-8")) <= 255:
        raise CostModelError(f"device {device_id!r}: the id must be 1..255 bytes of UTF-8")
    return feature_message_bytes(int(feature_dim), device_id, dtype)


def wait_ms(board: Board, link_latency: str = "expected") -> float:
    """The link's wait for one message (ms): worst case, or expected (module docstring)."""
    wait = board.link.latency_s
    if check_link_latency(link_latency) == "expected" and board.link.interval_s is not None:
        wait -= board.link.interval_s / 2.0
    return wait * 1e3


def transfer_ms(board: Board, feature_dim: int, device_id: str = "cam00",
                dtype: str = "int8", link_latency: str = "expected") -> float:
    """Time to send one D-wide feature message over `board`'s link to the aggregator."""
    nbytes = message_bytes(feature_dim, device_id, dtype)
    return 8e3 * nbytes / board.link.bandwidth_bps + wait_ms(board, link_latency)
