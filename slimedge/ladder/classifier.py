"""The head's classifier (pooled feature vector → logits) as plain NumPy, so the evaluator can
score thousands of configurations without calling Keras. Built from the Keras classifier, layer
by layer; a layer it cannot reproduce exactly is an error naming the layer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimedge.errors import SlimEdgeError


class ClassifierError(SlimEdgeError):
    """A classifier that cannot be converted or loaded."""


_ACTIVATIONS = {"linear": None, "relu": "relu"}


@dataclass
class NumpyClassifier:
    """A stack of affine maps with optional ReLU after each: logits = f_k(...f_1(x))."""

    weights: list[np.ndarray] = field(default_factory=list)  # (in, out) float32
    biases: list[np.ndarray] = field(default_factory=list)  # (out,) float32
    relu: list[bool] = field(default_factory=list)

    @property
    def input_dim(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.weights[-1].shape[1])

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, np.float32)
        for w, b, r in zip(self.weights, self.biases, self.relu, strict=True):
            h = h @ w + b
            if r:
                np.maximum(h, 0.0, out=h)
        return h

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)

    def save(self, path: str | os.PathLike) -> None:
        arrays: dict[str, np.ndarray] = {"relu": np.array(self.relu, bool)}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{i}"] = w
            arrays[f"b{i}"] = b
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NumpyClassifier:
        try:
            with np.load(path) as z:
                relu = [bool(r) for r in z["relu"]]
                ws = [z[f"w{i}"].astype(np.float32) for i in range(len(relu))]
                bs = [z[f"b{i}"].astype(np.float32) for i in range(len(relu))]
        except (OSError, KeyError, ValueError) as exc:
            raise ClassifierError(f"{path}: not a classifier file ({exc})") from exc
        return cls(ws, bs, relu)

    @classmethod
    def from_keras(cls, model: Any) -> NumpyClassifier:
        """Dense (linear/relu), ReLU/Activation(relu|linear), Dropout (identity at inference) and
        BatchNormalization (folded into the preceding affine map) are reproduced exactly."""
        ws: list[np.ndarray] = []
        bs: list[np.ndarray] = []
        relu: list[bool] = []
        for layer in model.layers:
            kind = type(layer).__name__
            if kind == "InputLayer" or kind == "Dropout":
                continue
            if kind == "Dense":
                act = layer.get_config().get("activation", "linear")
                if act not in _ACTIVATIONS:
                    raise ClassifierError(
                        f"layer '{layer.name}' (Dense): activation '{act}' is not supported"
                    )
                w = np.asarray(layer.kernel, np.float32)
                b = (np.asarray(layer.bias, np.float32) if layer.use_bias
                     else np.zeros(w.shape[1], np.float32))
                ws.append(w)
                bs.append(b)
                relu.append(act == "relu")
                continue
            if kind in ("ReLU", "Activation"):
                cfg = layer.get_config()
                act = cfg.get("activation", "relu") if kind == "Activation" else "relu"
                if kind == "ReLU" and (cfg.get("max_value") is not None
                                       or cfg.get("negative_slope", 0.0) not in (0, 0.0)
                                       or cfg.get("threshold", 0.0) not in (0, 0.0)):
                    raise ClassifierError(
                        f"layer '{layer.name}' (ReLU): only plain ReLU is supported"
                    )
                if act not in _ACTIVATIONS:
                    raise ClassifierError(
                        f"layer '{layer.name}' (Activation): activation '{act}' is not supported"
                    )
                if not ws:
                    raise ClassifierError(f"layer '{layer.name}': activation before any Dense")
                relu[-1] = relu[-1] or act == "relu"
                continue
            if kind == "BatchNormalization":
                if not ws or relu[-1]:
                    raise ClassifierError(
                        f"layer '{layer.name}' (BatchNormalization): must directly follow a "
                        "linear Dense to be folded"
                    )
                gamma = (np.asarray(layer.gamma, np.float32) if layer.scale
                         else np.ones_like(bs[-1]))
                beta = (np.asarray(layer.beta, np.float32) if layer.center
                        else np.zeros_like(bs[-1]))
                mean = np.asarray(layer.moving_mean, np.float32)
                var = np.asarray(layer.moving_variance, np.float32)
                k = gamma / np.sqrt(var + layer.epsilon)
                ws[-1] = ws[-1] * k[None, :]
                bs[-1] = (bs[-1] - mean) * k + beta
                continue
            raise ClassifierError(
                f"layer '{layer.name}' ({kind}) is not supported in the head classifier"
            )
        if not ws:
            raise ClassifierError(f"model '{model.name}': no Dense layer found")
        return cls(ws, bs, relu)
