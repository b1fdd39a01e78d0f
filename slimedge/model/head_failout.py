"""Head failout stage: after the joint training, the head alone learns to classify from few views.

Joint failout (branch and head together) has to stay mild, or the branch learns worse
features and full-view accuracy drops; so the head rarely sees heavy failures. This stage
freezes the branch, computes its features for the train split once (a clean pass plus
augmented passes, each view's image augmented as in training), and fine-tunes only the head on
those features with heavy failout, e.g. ``uniform_k``: every failure count 0 … V−1 as likely.
The branch and its features do not change, so everything built on them (the pruning ladder's
feature targets, cached features) stays valid.

The kept head is the epoch with the best validation score, the mean of val accuracy with all
views and with ``k_val`` views failed; the joint stage's head competes as epoch 0, so the stage
never lowers that score.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from slimedge.model.augment import AugmentConfig, augment_views
from slimedge.model.failout import sample_live_mask
from slimedge.model.head import core_logits
from slimedge.model.mvcnn import accuracy_from_features, branch_features, to_branch_input
from slimedge.model.schedule import scheduled_lr

_BATCH_OBJECTS = 64  # objects per augmentation call (part of the seeds: keep it fixed)


def train_split_features(branch: keras.Model, images: np.ndarray, *, copies: int,
                         augment_options: dict[str, float], seed: int) -> np.ndarray:
    """Branch features ``(copies, N, V, D)`` of uint8 images ``(N, V, H, W, C)``: copy 0 clean,
    the others augmented (stateless seeds from ``seed``, copy and batch)."""
    aug = AugmentConfig(**augment_options)
    n = len(images)
    out = np.empty((copies, n, images.shape[1], int(branch.output_shape[-1])), np.float32)
    for c in range(copies):
        for start in range(0, n, _BATCH_OBJECTS):
            chunk = np.asarray(images[start : start + _BATCH_OBJECTS])
            if c == 0:
                out[c, start : start + len(chunk)] = branch_features(branch, chunk)
                continue
            x = augment_views(tf.convert_to_tensor(to_branch_input(chunk)),
                              tf.constant([seed, 7919 * c + start], tf.int64), aug)
            out[c, start : start + len(chunk)] = branch_features(branch, x.numpy(), scaled=True)
    return out


def _head_step(head: keras.Model, optimizer: keras.optimizers.Optimizer
               ) -> Callable[..., Any]:
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def step(features: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, head([features, mask], training=True))
            total = loss + tf.add_n(head.losses) if head.losses else loss
        grads = tape.gradient(total, head.trainable_variables)
        optimizer.apply_gradients(zip(grads, head.trainable_variables, strict=True))
        return loss

    return step


def val_metrics(head: keras.Model, features: np.ndarray, labels: np.ndarray,
                live_failed: np.ndarray) -> dict[str, float]:
    """Val loss and accuracy with all views (pooled by the core, as the fleet pools) and the
    accuracy with the fixed failure masks ``live_failed``."""
    logits = core_logits(head, features, np.ones(live_failed.shape, bool))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {
        "val_loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "val_accuracy": float(np.mean(logits.argmax(axis=1) == labels)),
        "val_accuracy_failed": accuracy_from_features(head, features, labels, live_failed),
    }


def val_scores(head: keras.Model, features: np.ndarray, labels: np.ndarray,
               live_failed: np.ndarray) -> dict[str, float]:
    """``val_metrics`` plus the stage's score: the mean of the two accuracies."""
    m = val_metrics(head, features, labels, live_failed)
    return {**m, "score": (m["val_accuracy"] + m["val_accuracy_failed"]) / 2}


def finetune_head(head: keras.Model, train_features: np.ndarray, train_labels: np.ndarray,
                  val_features: np.ndarray, val_labels: np.ndarray, val_live_failed: np.ndarray,
                  *, epochs: int, rate: float, sampler: str, learning_rate: float,
                  lr_final_fraction: float, batch_size: int, seed: int,
                  lr_schedule: str = "cosine", progress: bool = False) -> dict[str, Any]:
    """Fine-tune ``head`` in place on ``train_features (C, N, V, D)``; keep the best epoch.

    Returns the stage's record: per-epoch history, the kept epoch (0: the joint stage's head)
    and its val scores. ``lr_schedule``/``lr_final_fraction`` as in the joint stage
    (`slimedge.model.schedule`).
    """
    copies, n, views, _ = train_features.shape
    feats = train_features.reshape((copies * n,) + train_features.shape[2:])
    labels = np.tile(np.asarray(train_labels, np.int32), copies)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(head.trainable_variables)
    step = _head_step(head, optimizer)

    start = val_scores(head, val_features, val_labels, val_live_failed)
    best = (start["score"], 0, [w.copy() for w in head.get_weights()], start)
    history: list[dict[str, Any]] = [{"epoch": 0, **start}]
    for epoch in range(epochs):
        t0 = time.perf_counter()
        lr = scheduled_lr(epoch, epochs, learning_rate, lr_schedule, lr_final_fraction)
        optimizer.learning_rate.assign(lr)
        rng = np.random.default_rng([seed, epoch, 5])
        order = rng.permutation(len(labels))
        masks = sample_live_mask(rng, len(labels), views, rate, sampler).astype(np.float32)
        loss_sum = 0.0
        for b in tqdm(range(0, len(order), batch_size), desc=f"head failout {epoch + 1}/{epochs}",
                      disable=not progress, leave=False):
            idx = order[b : b + batch_size]
            loss = step(feats[idx], masks[idx], labels[idx])
            loss_sum += float(loss) * len(idx)
        scores = val_scores(head, val_features, val_labels, val_live_failed)
        history.append({"epoch": epoch + 1, "learning_rate": float(lr),
                        "loss": loss_sum / len(order), **scores,
                        "seconds": round(time.perf_counter() - t0, 3)})
        if progress:
            tqdm.write(f"head failout epoch {epoch + 1}: loss {loss_sum / len(order):.4f} | val "
                       f"acc {scores['val_accuracy']:.3f} (with failures "
                       f"{scores['val_accuracy_failed']:.3f})")
        if scores["score"] > best[0]:
            best = (scores["score"], epoch + 1, [w.copy() for w in head.get_weights()], scores)
    head.set_weights(best[2])
    return {"best_epoch": best[1], **best[3], "history": history}
