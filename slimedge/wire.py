"""Byte layout of the feature message, below both its users.

`slimedge.runtime.frames` encodes and decodes the message (layout table in its docstring); the
cost model (`slimedge.devices.link`) needs only its size per frame, to time and to cost the
radio. Both take the layout from here, so host-side cost code does not import device code.
"""

from __future__ import annotations

import struct

MESSAGE_MAGIC = b"SEFM"
MESSAGE_VERSION = 2  # the version written; MESSAGE_VERSIONS are read
MESSAGE_VERSIONS = (1, 2)
MESSAGE_HEADER = struct.Struct("<4sBBHQqfiIB")  # up to and including the device id length
# version 2 only, right after MESSAGE_HEADER: level f32, deployment id length, model hash length
MESSAGE_V2_EXTRA = struct.Struct("<fBB")
MESSAGE_CRC = struct.Struct("<I")
FEATURE_ITEMSIZE = {"int8": 1, "float32": 4}


def feature_message_bytes(feature_dim: int, device_id: str, dtype: str = "int8", *,
                          deployment_id: str | None = None,
                          model_hash: str | None = None) -> int:
    """Encoded size of one feature message: header, device id (UTF-8), D features, CRC;
    with `deployment_id` and `model_hash` given, the version 2 message that carries them."""
    size = (MESSAGE_HEADER.size + len(device_id.encode("utf-8"))
            + int(feature_dim) * FEATURE_ITEMSIZE[dtype] + MESSAGE_CRC.size)
    if deployment_id is not None or model_hash is not None:
        size += (MESSAGE_V2_EXTRA.size + len((deployment_id or "").encode("utf-8"))
                 + len((model_hash or "").encode("ascii")))
    return size
