"""The aggregator's classifier: the deployment's `aggregator/head.tflite` (pooled features ->
logits, float32) run in LiteRT with the interpreter settings the export checked it with
(`slimedge.profile.litert.interpreter`, XNNPACK as on a Linux board)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimedge.errors import SlimEdgeError

__all__ = ["HeadError", "HeadRunner"]


class HeadError(SlimEdgeError):
    """A head model that cannot be loaded or does not fit the deployment."""


class HeadRunner:
    def __init__(self, path: str | Path, feature_dim: int, n_classes: int) -> None:
        from slimedge.profile.litert import LiteRTError, interpreter

        self.path = Path(path)
        try:
            self._it = interpreter(self.path)
        except LiteRTError as e:
            raise HeadError(str(e)) from None
        inp, out = self._it.get_input_details(), self._it.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise HeadError(f"{self.path}: a head has one input and one output, this one has "
                            f"{len(inp)} and {len(out)}")
        if inp[0]["dtype"] != np.float32 or out[0]["dtype"] != np.float32:
            raise HeadError(f"{self.path}: expected float32 input and output, got "
                            f"{np.dtype(inp[0]['dtype'])} and {np.dtype(out[0]['dtype'])}")
        self._in, self._out = inp[0]["index"], out[0]["index"]
        shape = [int(x) for x in inp[0]["shape"]]
        if len(shape) != 2 or shape[1] != feature_dim:
            raise HeadError(f"{self.path}: input shape {shape}, expected (batch, "
                            f"{feature_dim}) for the deployment's feature width")
        self.feature_dim, self.n_classes = feature_dim, n_classes
        self._batch = shape[0]
        self._resize(1)
        n_out = int(self._it.get_output_details()[0]["shape"][-1])
        if n_out != n_classes:
            raise HeadError(f"{self.path}: {n_out} outputs, the deployment has "
                            f"{n_classes} classes")

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self._it.resize_tensor_input(self._in, [batch, self.feature_dim])
            self._it.allocate_tensors()
            self._batch = batch

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        """(B, C) logits of (B, D) (or one (D,)) pooled feature vectors."""
        x = np.ascontiguousarray(pooled, np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise HeadError(f"pooled features: expected (B, {self.feature_dim}), got {x.shape}")
        self._resize(len(x))
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        return np.array(self._it.get_tensor(self._out))
