"""Export: per-device TFLite artifacts, MCU firmware bundles, Edge TPU readiness, and the signed
deployment manifest that device agents verify (`slimedge.export.verify`, no TensorFlow needed).

Submodules are imported on demand: this package itself holds only the error classes, so a
device agent importing `slimedge.export.verify` pulls in nothing it does not use.
"""

from slimedge.errors import SlimEdgeError


class ExportError(SlimEdgeError):
    """A model, bundle or manifest that cannot be exported as asked (names the file or field)."""


class VerifyError(ExportError):
    """A deployment that fails verification (names the file, device and check at fault)."""


__all__ = ["ExportError", "VerifyError"]
