"""Train the MVCNN (branch + head) with failout, and save it atomically.

``train(dataset, config, out_dir=...)`` writes, only when the whole run succeeded:

    out_dir/branch.keras   one view's image (H, W, 1) float32 in [0, 1] -> features (D,)
    out_dir/head.keras     features (V, D) + live mask (V,) -> logits (pooling + classifier)
    out_dir/train.json     config, per-epoch history, chosen epoch, dataset content hash,
                           seed, versions, test accuracy vs failed views, file hashes

A failed or interrupted run leaves the previous ``out_dir`` as it was.

Run order is deterministic from ``config.seed``: weights, per-epoch object order, failout
masks and augmentation draws all derive from it. With op determinism and fixed thread pools
(`determinism.py`) and .keras files written reproducibly (`keras_files.py`), the same seed on
the same machine gives the same file hashes; train.json records the threads, CPU and library
versions that decide them (another CPU runs other kernels and gives other bytes).

The kept model is the epoch with the best validation accuracy (all views live) among the epochs
trained at the full failout rate: an earlier epoch, before failout, would be a model that
never learnt to do without views. Early stopping counts the same epochs.

Then, unless ``head_failout_epochs`` is 0, the head failout stage (`head_failout.py`)
fine-tunes the head alone on the frozen branch's features under heavy failout; train.json
records it under ``head_failout`` and ``val_accuracy`` is the saved model's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from slimedge.artifacts import atomic_dir, read_versioned_json, sha256_file, write_json
from slimedge.data.container import Dataset
from slimedge.errors import DatasetError
from slimedge.model.augment import AugmentConfig, augment_views
from slimedge.model.backbones import build_branch, list_backbones
from slimedge.model.determinism import make_deterministic
from slimedge.model.failout import (
    check_rate,
    check_sampler,
    check_schedule,
    failout_rate_at,
    full_rate_epoch,
    max_failout_rate,
    sample_live_mask,
)
from slimedge.model.head import build_head, head_info, load_head
from slimedge.model.head_failout import finetune_head, train_split_features, val_metrics
from slimedge.model.keras_files import save_reproducibly
from slimedge.model.mvcnn import (
    accuracy_vs_failed_views_from_features,
    branch_features,
    build_mvcnn,
)
from slimedge.model.pooling import ModelConfigError, check_pool_mode
from slimedge.model.schedule import LR_SCHEDULES, scheduled_lr
from slimedge.provenance import host, versions

FORMAT_NAME = "slimedge-model"
FORMAT_VERSION = 1
BRANCH_FILE = "branch.keras"
HEAD_FILE = "head.keras"
RECORD_FILE = "train.json"


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in train.json)."""

    backbone: str = "vgg"  # a name from slimedge.model.backbones.list_backbones()
    width: float = 1.0  # backbone filter multiplier
    depth: int | None = None  # backbone depth (None: the backbone's default)
    backbone_options: dict[str, Any] = field(default_factory=dict)  # backbone-specific options
    feature_dim: int = 128  # D, the width of a view's feature vector
    pooling: str = "max"  # "max" | "mean" | "weighted"
    head_hidden: int | None = 128  # classifier hidden units; None: linear classifier
    head_dropout: float = 0.2
    view_weights: list[float] | None = None  # weighted pooling's fixed weights (None: uniform)
    epochs: int = 30
    batch_size: int = 32  # objects per step (each brings V views)
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # "constant" | "cosine" (per epoch, down to lr_final_fraction)
    lr_final_fraction: float = 0.05
    seed: int = 0
    augment: bool = True
    augment_options: dict[str, float] = field(default_factory=dict)  # AugmentConfig fields
    failout_rate: float = 0.25  # mean fraction of a sample's views dropped, in [0, 1)
    failout_schedule: str = "ramp"  # "constant" | "warmup" | "ramp" (see failout.py)
    failout_sampler: str = "bernoulli"  # "bernoulli" | "uniform_k" (see failout.py)
    failout_warmup_epochs: int = 1  # epochs at rate 0 ("warmup", "ramp")
    failout_ramp_epochs: int = 2  # epochs to reach the rate after the warmup ("ramp")
    bn_momentum: float | None = 0.9  # the branch's BatchNorm momentum (None: the backbone's)
    patience: int = 5  # stop after this many counted epochs without a better val accuracy
    val_failed_views: int | None = None  # k for the val metric under failures (None: V // 2)
    # Head failout stage (head_failout.py): the head alone, on frozen branch features.
    head_failout_epochs: int = 10  # 0: no stage
    head_failout_rate: float | None = None  # None: the sampler's highest reachable rate
    head_failout_sampler: str = "uniform_k"
    head_failout_lr: float = 3e-4
    head_failout_copies: int = 4  # passes over the train split: one clean, the rest augmented
    threads: int | None = None  # TensorFlow's intra/inter-op pool sizes (None: usable CPUs)

    def validate(self, views: int | None = None) -> None:
        """Raise ModelConfigError naming the first bad field (``views``: the dataset's V)."""
        if self.backbone not in list_backbones():
            raise ModelConfigError(f"backbone: unknown backbone {self.backbone!r} (known: "
                                   f"{', '.join(list_backbones())})")
        _positive_int("feature_dim", self.feature_dim)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("patience", self.patience)
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ModelConfigError(f"learning_rate: expected a number in (0, 1), got "
                                   f"{self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ModelConfigError(f"lr_schedule: expected one of {LR_SCHEDULES}, got "
                                   f"{self.lr_schedule!r}")
        if not 0.0 < float(self.lr_final_fraction) <= 1.0:
            raise ModelConfigError(f"lr_final_fraction: expected a value in (0, 1], got "
                                   f"{self.lr_final_fraction!r}")
        check_pool_mode(self.pooling, "pooling")
        if self.bn_momentum is not None and not 0.0 <= float(self.bn_momentum) < 1.0:
            raise ModelConfigError(f"bn_momentum: expected None or a value in [0, 1), got "
                                   f"{self.bn_momentum!r}")
        if not 0.0 <= float(self.head_dropout) < 1.0:
            raise ModelConfigError(f"head_dropout: expected a rate in [0, 1), got "
                                   f"{self.head_dropout!r}")
        check_sampler(self.failout_sampler)
        check_schedule(self.failout_schedule)
        check_rate(self.failout_rate, views, self.failout_sampler)
        for name in ("failout_warmup_epochs", "failout_ramp_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (1 if name == "failout_ramp_epochs" else 0):
                raise ModelConfigError(f"{name}: expected an integer >= "
                                       f"{1 if name == 'failout_ramp_epochs' else 0}, "
                                       f"got {value!r}")
        first = self.first_counted_epoch()
        if first >= self.epochs:
            raise ModelConfigError(
                f"epochs: {self.epochs} epochs end before failout reaches its rate "
                f"(schedule {self.failout_schedule!r} reaches it in epoch {first + 1})"
            )
        try:
            AugmentConfig(**self.augment_options)
        except TypeError as exc:
            raise ModelConfigError(f"augment_options: {exc}") from exc
        if (isinstance(self.head_failout_epochs, bool) or not isinstance(
                self.head_failout_epochs, int) or self.head_failout_epochs < 0):
            raise ModelConfigError(f"head_failout_epochs: expected an integer >= 0, got "
                                   f"{self.head_failout_epochs!r}")
        _positive_int("head_failout_copies", self.head_failout_copies)
        if self.threads is not None:
            _positive_int("threads", self.threads)
        check_sampler(self.head_failout_sampler, "head_failout_sampler")
        if self.head_failout_rate is not None:
            check_rate(self.head_failout_rate, views, self.head_failout_sampler,
                       "head_failout_rate")
        if not (isinstance(self.head_failout_lr, (int, float)) and 0 < self.head_failout_lr < 1):
            raise ModelConfigError(f"head_failout_lr: expected a number in (0, 1), got "
                                   f"{self.head_failout_lr!r}")
        if views is not None and self.val_failed_views is not None and not (
                0 <= self.val_failed_views < views):
            raise ModelConfigError(f"val_failed_views: expected 0..{views - 1}, got "
                                   f"{self.val_failed_views!r}")

    def first_counted_epoch(self) -> int:
        """The first epoch eligible for the kept model and early stopping (0-based)."""
        if self.failout_rate == 0:
            return 0
        return full_rate_epoch(self.failout_schedule, warmup_epochs=self.failout_warmup_epochs,
                               ramp_epochs=self.failout_ramp_epochs)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of the joint stage's ``epoch`` (0-based)."""
        return scheduled_lr(epoch, self.epochs, self.learning_rate, self.lr_schedule,
                            self.lr_final_fraction)

    def head_rate(self, views: int) -> float:
        """The head failout stage's drop rate for ``views`` views."""
        if self.head_failout_rate is not None:
            return float(self.head_failout_rate)
        return max_failout_rate(views, self.head_failout_sampler)

    def rate_at(self, epoch: int) -> float:
        return failout_rate_at(epoch, self.failout_rate, self.failout_schedule,
                               warmup_epochs=self.failout_warmup_epochs,
                               ramp_epochs=self.failout_ramp_epochs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(f"train config: unknown field(s) {', '.join(unknown)} "
                                   f"(known: {', '.join(sorted(known))})")
        return cls(**data)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"{name}: expected an integer >= 1, got {value!r}")


@dataclass
class TrainResult:
    out_dir: Path
    branch: keras.Model
    head: keras.Model
    history: list[dict[str, Any]]  # one dict per epoch run
    best_epoch: int  # 1-based epoch whose weights were kept
    val_accuracy: float  # of the saved model (after the head failout stage)
    test_accuracy: float | None
    record: dict[str, Any]  # the train.json object


def train(dataset: Dataset, config: TrainConfig, *, out_dir: str | os.PathLike,
          progress: bool = True,
          on_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train on ``dataset``'s train split, select on val, report on test; save to ``out_dir``.

    ``on_epoch(epoch, metrics)`` is called after every epoch (1-based), e.g. for a UI.
    """
    views = dataset.n_views
    config.validate(views)
    train_idx, val_idx = dataset.indices("train"), dataset.indices("val")
    for name, idx in (("train", train_idx), ("val", val_idx)):
        if idx.size == 0:
            raise DatasetError(f"dataset split '{name}' holds no objects; training needs "
                               "train and val objects")
    t_start = time.perf_counter()
    threads = make_deterministic(config.threads)  # before the first op starts the pools
    keras.utils.set_random_seed(config.seed)
    image_shape = tuple(int(s) for s in dataset.images.shape[2:])
    branch = build_branch(config.backbone, input_shape=image_shape,
                          feature_dim=config.feature_dim, width=config.width,
                          depth=config.depth, seed=config.seed, **config.backbone_options)
    set_bn_momentum(branch, config.bn_momentum)
    head = build_head(views, config.feature_dim, len(dataset.class_names), mode=config.pooling,
                      hidden=config.head_hidden, dropout=config.head_dropout, seed=config.seed,
                      view_weights=config.view_weights)
    model = build_mvcnn(branch, head, views)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(model.trainable_variables)
    step = _train_step(model, optimizer, views, image_shape)

    epoch_state = {"epoch": 0}
    batches = _train_batches(dataset, train_idx, config, epoch_state)
    val_images, val_labels = dataset.subset("val")
    k_val = views // 2 if config.val_failed_views is None else config.val_failed_views
    val_live_failed = _fixed_failures(len(val_labels), views, k_val, config.seed)
    steps = -(-train_idx.size // config.batch_size)

    history: list[dict[str, Any]] = []
    first_counted = config.first_counted_epoch()
    best: tuple[float, int, list[np.ndarray]] | None = None
    wait = 0
    stopped_early = False
    for epoch in range(config.epochs):
        epoch_state["epoch"] = epoch
        rate = config.rate_at(epoch)
        optimizer.learning_rate.assign(config.lr_at(epoch))
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        with tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                  disable=not progress, leave=False) as bar:
            for images, mask, labels in batches:
                loss, ok = step(images, mask, labels)
                n = int(labels.shape[0])
                loss_sum += float(loss) * n
                correct += int(ok)
                seen += n
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        train_seconds = time.perf_counter() - t0
        val = _validate(branch, head, val_images, val_labels, val_live_failed)
        metrics = {
            "epoch": epoch + 1,
            "failout_rate": round(rate, 6),
            "learning_rate": config.lr_at(epoch),
            "loss": loss_sum / seen,
            "accuracy": correct / seen,
            **val,
            "val_failed_views": k_val,
            "train_seconds": round(train_seconds, 3),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        history.append(metrics)
        if progress:
            tqdm.write(_epoch_line(metrics))
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics)
        if epoch < first_counted:
            continue
        if best is None or val["val_accuracy"] > best[0]:
            best = (val["val_accuracy"], epoch + 1, [w.copy() for w in model.get_weights()])
            wait = 0
        else:
            wait += 1
            if wait >= config.patience:
                stopped_early = True
                break

    assert best is not None  # validate() guarantees one counted epoch
    model.set_weights(best[2])
    head_stage = None
    if config.head_failout_epochs:
        head_stage = _head_failout_stage(dataset, config, branch, head, val_images, val_labels,
                                         val_live_failed, progress)
    record = _record(dataset, config, branch, head, history, best, stopped_early, head_stage)
    record["host"] = {**host(), "threads": threads}
    test_acc = record["test"]["accuracy"] if record["test"] else None
    out_dir = Path(out_dir)
    record["seconds"] = round(time.perf_counter() - t_start, 3)
    record = _save(out_dir, branch, head, record)
    return TrainResult(out_dir, branch, head, history, best[1], record["val_accuracy"],
                       test_acc, record)


def set_bn_momentum(model: keras.Model, momentum: float | None) -> None:
    """Set every BatchNormalization layer's momentum (nested models included).

    Keras' default 0.99 leaves the moving statistics far from the data after the few hundred
    steps a small dataset gives, and inference (val, ladder, devices) uses those statistics.
    """
    if momentum is None:
        return
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def _train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, views: int,
                image_shape: tuple[int, ...]) -> Callable[..., Any]:
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    signature = [tf.TensorSpec((None, views) + image_shape, tf.float32),
                 tf.TensorSpec((None, views), tf.float32),
                 tf.TensorSpec((None,), tf.int32)]

    @tf.function(input_signature=signature)
    def step(images: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            logits = model([images, mask], training=True)
            loss = loss_fn(labels, logits)
            total = loss + tf.add_n(model.losses) if model.losses else loss
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)
        return loss, tf.reduce_sum(tf.cast(hits, tf.int32))

    return step


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the train objects in ``epoch``: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def epoch_masks(n: int, views: int, config: TrainConfig, epoch: int) -> np.ndarray:
    """Failout live masks ``(n, V)`` of ``epoch``, in epoch order, fixed by (seed, epoch)."""
    rng = np.random.default_rng([config.seed, epoch, 1])
    return sample_live_mask(rng, n, views, config.rate_at(epoch), config.failout_sampler)


def _train_batches(dataset: Dataset, train_idx: np.ndarray, config: TrainConfig,
                   state: dict[str, int]) -> tf.data.Dataset:
    """tf.data pipeline over the train split for the epoch in ``state`` (read per iteration).

    The generator gathers uint8 batches (works on a memory-mapped dataset); scaling and
    augmentation run in the graph, in parallel, with stateless per-batch seeds, and batches
    are prefetched while the previous step trains.
    """
    images, labels = dataset.images, dataset.labels
    views = dataset.n_views
    shape = tuple(int(s) for s in images.shape[1:])
    bs = config.batch_size

    def gen() -> Any:
        epoch = state["epoch"]
        order = train_idx[epoch_order(train_idx.size, config.seed, epoch)]
        masks = epoch_masks(train_idx.size, views, config, epoch).astype(np.float32)
        for b, start in enumerate(range(0, order.size, bs)):
            idx = order[start : start + bs]
            yield (np.asarray(images[idx]), masks[start : start + bs],
                   labels[idx].astype(np.int32), np.array([config.seed, epoch * 100003 + b],
                                                          np.int64))

    signature = (tf.TensorSpec((None,) + shape, tf.uint8), tf.TensorSpec((None, views), tf.float32),
                 tf.TensorSpec((None,), tf.int32), tf.TensorSpec((2,), tf.int64))
    aug = AugmentConfig(**config.augment_options)

    def prepare(im: tf.Tensor, mask: tf.Tensor, lab: tf.Tensor, seed: tf.Tensor) -> tuple:
        x = tf.cast(im, tf.float32) * (1.0 / 255.0)  # the branch's input contract
        if config.augment:
            x = augment_views(x, seed, aug)
        return x, mask, lab

    ds = tf.data.Dataset.from_generator(gen, output_signature=signature)
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)


def _fixed_failures(n: int, views: int, k: int, seed: int) -> np.ndarray:
    """Live masks with k dead views per object, the same set every epoch."""
    rng = np.random.default_rng([seed, 2])
    ranks = rng.random((n, views)).argsort(axis=1).argsort(axis=1)
    return ranks >= k


def _validate(branch: keras.Model, head: keras.Model, images: np.ndarray, labels: np.ndarray,
              live_failed: np.ndarray) -> dict[str, float]:
    """Val metrics computed as the fleet computes them: branch, then core pooling."""
    return val_metrics(head, branch_features(branch, images), labels, live_failed)


def _epoch_line(m: dict[str, Any]) -> str:
    return (f"epoch {m['epoch']}: loss {m['loss']:.4f} acc {m['accuracy']:.3f} | val acc "
            f"{m['val_accuracy']:.3f} (with {m['val_failed_views']} views failed "
            f"{m['val_accuracy_failed']:.3f}) | failout {m['failout_rate']:.2f} | "
            f"{m['train_seconds']:.1f} s")


def _head_failout_stage(dataset: Dataset, config: TrainConfig, branch: keras.Model,
                        head: keras.Model, val_images: np.ndarray, val_labels: np.ndarray,
                        val_live_failed: np.ndarray, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    images, labels = dataset.subset("train")
    # Without augmentation every extra pass would repeat the clean one.
    copies = config.head_failout_copies if config.augment else 1
    feats = train_split_features(branch, images, copies=copies,
                                 augment_options=config.augment_options, seed=config.seed)
    stage = finetune_head(head, feats, labels, branch_features(branch, val_images), val_labels,
                          val_live_failed, epochs=config.head_failout_epochs,
                          rate=config.head_rate(dataset.n_views),
                          sampler=config.head_failout_sampler,
                          learning_rate=config.head_failout_lr,
                          lr_schedule=config.lr_schedule,
                          lr_final_fraction=config.lr_final_fraction,
                          batch_size=config.batch_size, seed=config.seed, progress=progress)
    return {**stage, "rate": config.head_rate(dataset.n_views), "copies": copies,
            "seconds": round(time.perf_counter() - t0, 3)}


def _record(dataset: Dataset, config: TrainConfig, branch: keras.Model, head: keras.Model,
            history: list[dict[str, Any]], best: tuple[float, int, list[np.ndarray]],
            stopped_early: bool, head_stage: dict[str, Any] | None = None) -> dict[str, Any]:
    test: dict[str, Any] | None = None
    if dataset.indices("test").size:
        images, labels = dataset.subset("test")
        features = branch_features(branch, images)
        curve = accuracy_vs_failed_views_from_features(head, features, labels, max_subsets=16,
                                                       seed=config.seed)
        test = {"objects": int(len(labels)), "accuracy": curve[0],
                "accuracy_vs_failed_views": {str(k): v for k, v in curve.items()}}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "seed": config.seed,
        "dataset": {"content_hash": dataset.content_hash(), "objects": dataset.n_objects,
                    "views": dataset.n_views, "image_size": list(dataset.image_size),
                    "class_names": list(dataset.class_names), "splits": dataset.split_counts()},
        "branch": {"backbone": config.backbone, "input_shape": list(branch.input_shape[1:]),
                   "input_range": [0.0, 1.0], "feature_dim": int(branch.output_shape[-1]),
                   "params": int(branch.count_params())},
        "head": head_info(head),
        "best_epoch": best[1],
        # The saved model's val accuracy (after the head failout stage, when there is one).
        "val_accuracy": head_stage["val_accuracy"] if head_stage else best[0],
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "history": history,
        "head_failout": head_stage,
        "test": test,
        "versions": versions(),
    }


def _save(out_dir: Path, branch: keras.Model, head: keras.Model, record: dict[str, Any]
          ) -> dict[str, Any]:
    """All files into a temporary sibling, swapped in whole at the end; returns the record as
    written (with the files' hashes, which identify the model)."""
    with atomic_dir(out_dir) as tmp:
        for model, name in ((branch, BRANCH_FILE), (head, HEAD_FILE)):
            save_reproducibly(model, tmp / name)
        record = {**record, "files": {name: sha256_file(tmp / name)
                                      for name in (BRANCH_FILE, HEAD_FILE)}}
        write_json(tmp / RECORD_FILE, record)
    return record


def load_trained(out_dir: str | os.PathLike) -> tuple[keras.Model, keras.Model, dict[str, Any]]:
    """``(branch, head, train.json record)`` of a training output directory."""
    out_dir = Path(out_dir)
    record_path = out_dir / RECORD_FILE
    if not record_path.is_file():
        raise ModelConfigError(f"{out_dir}: not a trained model directory (no {RECORD_FILE})")
    record = read_versioned_json(record_path, fmt=FORMAT_NAME, version=FORMAT_VERSION,
                                 error=ModelConfigError, remedy="train again")
    for name in (BRANCH_FILE, HEAD_FILE):
        path = out_dir / name
        if not path.is_file() or sha256_file(path) != record.get("files", {}).get(name):
            raise ModelConfigError(f"{path}: missing or does not match its hash in "
                                   f"{RECORD_FILE}")
    branch = keras.saving.load_model(out_dir / BRANCH_FILE, compile=False)
    head = load_head(out_dir / HEAD_FILE)
    return branch, head, record


