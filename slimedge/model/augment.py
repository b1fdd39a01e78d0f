"""Training augmentation for multi-view images that keeps each view's identity.

A view is one fixed camera: flipping or rotating it would show another side of the object
(and so look like another view), so only camera-jitter-like changes are used, drawn
independently per view: small integer translations (edges replicated), brightness and contrast
jitter, and Gaussian noise. Every draw is stateless, from an explicit seed, so a training run
is reproducible whatever the data pipeline's parallelism.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import tensorflow as tf

from slimedge.model.pooling import ModelConfigError


@dataclass(frozen=True)
class AugmentConfig:
    max_shift: float = 0.0625  # fraction of the image side (2 px at 32 px)
    brightness: float = 0.08  # additive, in [0, 1] intensity units
    contrast: float = 0.15  # multiplicative around the image mean: 1 +- contrast
    noise: float = 0.02  # Gaussian noise std, in [0, 1] intensity units

    def __post_init__(self) -> None:
        for name, value, top in (("max_shift", self.max_shift, 0.5),
                                 ("brightness", self.brightness, 1.0),
                                 ("contrast", self.contrast, 1.0), ("noise", self.noise, 1.0)):
            if not 0.0 <= float(value) <= top:
                raise ModelConfigError(f"augment.{name}: expected a value in [0, {top}], "
                                       f"got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def augment_views(images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Augment float images ``(B, V, H, W, C)`` in [0, 1]; ``seed`` is an int32/int64 pair."""
    shape = tf.shape(images)
    b, v, h, w, c = shape[0], shape[1], shape[2], shape[3], shape[4]
    n = b * v
    flat = tf.reshape(images, tf.stack([n, h, w, c]))
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)

    max_px = tf.cast(tf.round(config.max_shift * tf.cast(tf.minimum(h, w), tf.float32)),
                     tf.int32)
    if config.max_shift > 0:
        shifts = tf.random.stateless_uniform([n, 2], seeds[0], minval=-max_px,
                                             maxval=max_px + 1, dtype=tf.int32)
        shifts = tf.cast(shifts, tf.float32)
        # Output (x, y) reads input (x - dx, y - dy): a pure integer translation.
        one, zero = tf.ones([n]), tf.zeros([n])
        transforms = tf.stack([one, zero, -shifts[:, 0], zero, one, -shifts[:, 1], zero, zero],
                              axis=1)
        flat = tf.raw_ops.ImageProjectiveTransformV3(
            images=flat, transforms=transforms, output_shape=tf.stack([h, w]),
            fill_value=0.0, interpolation="NEAREST", fill_mode="NEAREST")

    per_image = [n, 1, 1, 1]
    if config.contrast > 0:
        factor = tf.random.stateless_uniform(per_image, seeds[1], 1 - config.contrast,
                                             1 + config.contrast)
        mean = tf.reduce_mean(flat, axis=[1, 2, 3], keepdims=True)
        flat = (flat - mean) * factor + mean
    if config.brightness > 0:
        flat = flat + tf.random.stateless_uniform(per_image, seeds[2], -config.brightness,
                                                  config.brightness)
    if config.noise > 0:
        flat = flat + config.noise * tf.random.stateless_normal(tf.shape(flat), seeds[3])
    flat = tf.clip_by_value(flat, 0.0, 1.0)
    return tf.reshape(flat, shape)
