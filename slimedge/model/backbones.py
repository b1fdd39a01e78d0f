"""Branch backbones behind a small registry: one view's image -> one feature vector of width D.

Every branch is a Keras 3 functional model built the same way around a registered trunk:

    Input (H, W, C) float32 in [0, 1]  ->  trunk (conv layers)  ->  GlobalAveragePooling2D "pool"
    ->  Dense(feature_dim) "features"  ->  ReLU "features_relu"

Input contract: the caller divides the uint8 pixels by 255 (no Rescaling layer inside, so the
model's input is the value the int8 converter calibrates). With a representative set that spans
[0, 1], full-int8 conversion gives the input scale 1/255 and zero point -128, so a device feeds
``pixel - 128`` as int8 with no arithmetic loss. Features are non-negative (final ReLU): views
are max-pooled later, and a ReLU feature keeps "absent" (0) below any live value.

``model.name`` is the registered backbone name; layers have stable names, which the pruning
code relies on to match channel groups across ladder levels.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from slimedge.errors import SlimEdgeError

# A trunk maps the input tensor to a 4-D (N, h, w, C) tensor; `build_branch` adds the feature
# tail so every backbone shares the same input contract and output layer names.
Trunk = Callable[..., Any]

_REGISTRY: dict[str, Trunk] = {}

FEATURES_LAYER = "features"


class BackboneError(SlimEdgeError, ValueError):
    """An unknown backbone name or an option a backbone cannot build."""


def register_backbone(name: str) -> Callable[[Trunk], Trunk]:
    """Decorator: register ``fn(x, *, width, depth, seeds, **options) -> tensor`` as ``name``."""

    def wrap(fn: Trunk) -> Trunk:
        if name in _REGISTRY:
            raise BackboneError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_REGISTRY)


def build_branch(name: str, *, input_shape: Sequence[int] = (48, 48, 1), feature_dim: int = 128,
                 width: float = 1.0, depth: int | None = None, seed: int = 0,
                 **kw: Any) -> keras.Model:
    """Build the branch ``name``: image (H, W, C) float32 in [0, 1] -> ReLU features (D,).

    ``width`` multiplies every trunk layer's filter count (rounded to a multiple of 4, at least
    4); ``depth`` is the backbone's own depth unit (None: its default). Weights are
    deterministic from ``seed``. Extra keyword options go to the backbone and are checked.
    """
    if name not in _REGISTRY:
        raise BackboneError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise BackboneError("input_shape must be (H, W, C) with positive sizes, "
                            f"got {input_shape!r}")
    if int(feature_dim) != feature_dim or feature_dim < 1:
        raise BackboneError(f"feature_dim must be a positive integer, got {feature_dim!r}")
    if not (np.isfinite(width) and width > 0):
        raise BackboneError(f"width must be a positive number, got {width!r}")
    trunk = _REGISTRY[name]
    params = inspect.signature(trunk).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown:
        options = sorted(set(params) - {"x", "width", "depth", "seeds"})
        raise BackboneError(f"backbone {name!r} has no option(s) {', '.join(unknown)}; "
                            f"its options: {', '.join(options) or 'none'}")

    # One independent seed per layer, all derived from `seed`, so building never touches
    # Keras' global random state.
    seeds = iter(np.random.default_rng(seed).integers(0, 2**31 - 1, size=256).tolist())
    inputs = keras.Input(shape, dtype="float32", name="image")
    x = trunk(inputs, width=float(width), depth=depth, seeds=seeds, **kw)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(int(feature_dim), kernel_initializer=_he(seeds),
                           name=FEATURES_LAYER)(x)
    x = keras.layers.ReLU(name="features_relu")(x)
    return keras.Model(inputs, x, name=name)


def _he(seeds: Any) -> keras.initializers.Initializer:
    return keras.initializers.HeNormal(seed=next(seeds))


def _filters(base: int, width: float) -> int:
    """Scaled filter count, a multiple of 4 (int8 kernels like it), never below 4."""
    return max(4, int(round(base * width / 4.0)) * 4)


def _check_depth(name: str, depth: int | None, default: int, plan: Sequence[Any]) -> int:
    depth = default if depth is None else depth
    if int(depth) != depth or not 1 <= depth <= len(plan):
        raise BackboneError(f"backbone {name!r}: depth must be an integer in 1..{len(plan)}, "
                            f"got {depth!r}")
    return int(depth)


def _conv_bn_relu(x: Any, filters: int, kernel: int, strides: int, name: str, seeds: Any) -> Any:
    # No conv bias: the BatchNormalization right after it has its own shift.
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            kernel_initializer=_he(seeds), name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


# (filters at width 1, max-pool after it). depth = number of convs; default 5 at 48x48:
# 16 | 32 32 | 64 64 with pools 48 -> 24 -> 12 -> 6.
_VGG_PLAN = ((16, True), (32, False), (32, True), (64, False), (64, True),
             (96, False), (96, True), (128, False))


@register_backbone("vgg")
def _vgg(x: Any, *, width: float, depth: int | None, seeds: Any) -> Any:
    """VGG-like stack: [Conv3x3 -> BN -> ReLU] x depth, MaxPool 2x2 after each stage.

    A pool is skipped once the feature map is below 2x2, so tiny test inputs still build.
    """
    depth = _check_depth("vgg", depth, 5, _VGG_PLAN)
    stage = 0
    for i, (base, pool) in enumerate(_VGG_PLAN[:depth]):
        x = _conv_bn_relu(x, _filters(base, width), 3, 1, f"conv{i}", seeds)
        if pool and x.shape[1] >= 2 and x.shape[2] >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
            stage += 1
    return x


# (filters at width 1, stride) per depthwise-separable block; depth = number of blocks,
# default 5: stem 16/2, 32/2, 32 (+res), 64/2, 64 (+res), 64 (+res).
_MOBILENET_PLAN = ((32, 2), (32, 1), (64, 2), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1))


@register_backbone("mobilenet")
def _mobilenet(x: Any, *, width: float, depth: int | None, seeds: Any) -> Any:
    """MobileNet-like: Conv3x3/2 stem, then depthwise-separable blocks
    (DepthwiseConv3x3 -> BN -> ReLU -> Conv1x1 -> BN -> ReLU); a block whose output has its
    input's shape (stride 1, same width) adds its input back (residual Add).
    """
    depth = _check_depth("mobilenet", depth, 5, _MOBILENET_PLAN)
    x = _conv_bn_relu(x, _filters(16, width), 3, 2, "stem", seeds)
    for i, (base, stride) in enumerate(_MOBILENET_PLAN[:depth]):
        filters = _filters(base, width)
        name = f"block{i}"
        y = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                         depthwise_initializer=_he(seeds), name=f"{name}_dw")(x)
        y = keras.layers.BatchNormalization(name=f"{name}_dw_bn")(y)
        y = keras.layers.ReLU(name=f"{name}_dw_relu")(y)
        y = _conv_bn_relu(y, filters, 1, 1, f"{name}_pw", seeds)
        if stride == 1 and x.shape[-1] == filters:
            y = keras.layers.Add(name=f"{name}_add")([x, y])
        x = y
    return x
