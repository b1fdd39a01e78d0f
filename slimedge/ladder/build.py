"""Build the pruning ladder of a trained branch: prune level by level, fine-tune each level
against the frozen head, convert, measure, and cache the int8 features of every view.

For each level, in increasing order, starting from the previous level's fine-tuned branch:

1. prune to the level's channel counts (`slimedge.prune.levels.prune_to_level`, criterion
   ranked on the previous level's model);
2. fine-tune the smaller branch with the trained head FROZEN and every view live, on
   cross-entropy plus feature distillation toward the unpruned branch's features, so a
   level's features stay interchangeable with every other level's at the aggregator;
3. convert to TFLite in every format and measure: params, MACs, weight bytes, file sizes,
   the TFLite Micro arena (in the real interpreter), peak activation bytes, host LiteRT
   latency (int8 also under each kernel set) and the per-operator MACs
   (`slimedge.profile.layers`);
4. run the level's TFLite files — what the devices run — over every view of the val and test
   splits and cache the features of every variant a device may send
   (`slimedge.ladder.store.FEATURE_VARIANTS`): the int8 file in LiteRT (Linux and Edge TPU
   boards) and in TFLite Micro (microcontrollers; image by image, the images spread over
   every usable core by `slimedge.ladder.tflm_pass`), with its scale and zero point, and the
   float16, dynamic-range and float32 files in LiteRT. The float files are converted with a
   static batch of 1, exactly as export converts the artifacts it ships, so a float device's
   features are these bit for bit (export checks it).

The whole ladder directory is written at once at the end (a failed build leaves the previous
ladder as it was). See `slimedge.ladder.store` for the layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimedge import provenance
from slimedge.artifacts import atomic_dir, sha256_file, write_json
from slimedge.convert import FORMATS, to_tflite
from slimedge.data.container import Dataset
from slimedge.errors import DatasetError
from slimedge.ladder.classifier import NumpyClassifier
from slimedge.ladder.evaluator import Evaluator
from slimedge.ladder.store import (
    CACHED_SPLITS,
    FEATURE_VARIANTS,
    INT8,
    LADDER_FORMAT,
    LADDER_VERSION,
    TFLM,
    LadderError,
    features_file,
    level_dir,
    save_level_features,
)

DEFAULT_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class LadderConfig:
    levels: tuple[float, ...] = DEFAULT_LEVELS
    criterion: str = "taylor"  # "l1" | "taylor" | "bn_scale"
    channel_multiple: int = 4
    finetune_epochs: int = 2
    batch_size: int = 32  # objects per step (each with all V views)
    learning_rate: float = 5e-4
    distill_weight: float = 1.0  # weight of the normalized feature-distillation term
    calibration_images: int = 256  # single-view images: int8 calibration and Taylor scores
    latency_repeats: int = 50
    seed: int = 0

    def validate(self) -> None:
        from slimedge.prune.criteria import list_criteria
        from slimedge.prune.levels import check_level

        levels = [check_level(x) for x in self.levels]
        if not levels or levels[0] != 0.0:
            raise LadderError("levels: the ladder must start at level 0 (the unpruned branch)")
        if any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
            raise LadderError(f"levels: must be strictly increasing, got {list(self.levels)}")
        if self.criterion not in list_criteria():
            raise LadderError(f"criterion: unknown '{self.criterion}' "
                              f"(known: {', '.join(list_criteria())})")
        for name in ("channel_multiple", "batch_size", "calibration_images", "latency_repeats"):
            if int(getattr(self, name)) < 1:
                raise LadderError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.finetune_epochs < 0:
            raise LadderError(f"finetune_epochs: must be >= 0, got {self.finetune_epochs}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["levels"] = list(self.levels)
        return d


@dataclass
class _Level:
    """One level while the ladder is being built."""

    index: int
    level: float
    achieved: float
    channels: dict[str, int]
    model: Any  # keras.Model
    history: list[dict[str, float]] = field(default_factory=list)


def model_hash(train_record: dict[str, Any]) -> str:
    """Identity of a trained model: the hashes of its branch and head files."""
    files = train_record.get("files", {})
    blob = json.dumps({k: files[k] for k in sorted(files)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()






def calibration_images(dataset: Dataset, n: int, seed: int) -> np.ndarray:
    """Random single-view train images as float32 in [0, 1], plus one image spanning 0..1 so
    the int8 input quantization is always scale 1/255, zero point -128 (pixel p -> p - 128).
    Deterministic from (dataset, n, seed): export recomputes it from the manifest's `config`
    (`calibration_images`, `seed`) so device artifacts are quantized as the ladder's were."""
    rng = np.random.default_rng([seed, 7])
    idx = dataset.indices("train")
    objs = rng.choice(idx, size=n, replace=len(idx) < n)
    views = rng.integers(0, dataset.n_views, size=n)
    imgs = np.stack([np.asarray(dataset.images[o, v]) for o, v in zip(objs, views, strict=True)])
    # x / 255, as every ladder so far was built. to_branch_input's x * (1/255) is 1 ulp away on
    # half the pixel values: enough to move near-tie frames of the demo's agreement check.
    x = imgs.astype(np.float32) / 255.0
    span = np.linspace(0.0, 1.0, x[0].size, dtype=np.float32).reshape(x[0].shape)
    return np.concatenate([span[None], x])


def _finetune(student: Any, head: Any, dataset: Dataset, teacher_train: np.ndarray,
              cfg: LadderConfig, level_index: int, progress: bool) -> list[dict[str, float]]:
    """Train `student` (the pruned branch) with the head frozen and all views live."""
    import keras
    import tensorflow as tf
    from tqdm.auto import tqdm

    from slimedge.model.mvcnn import build_mvcnn

    if cfg.finetune_epochs == 0:
        return []
    views = dataset.n_views
    fold_out = build_mvcnn(student, head, views, frozen_head=True, with_features=True)
    optimizer = keras.optimizers.Adam(cfg.learning_rate)
    optimizer.build(student.trainable_variables)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    target_power = float(np.mean(teacher_train.astype(np.float64) ** 2)) or 1.0
    image_shape = tuple(int(s) for s in dataset.images.shape[2:])
    sig = [tf.TensorSpec((None, views) + image_shape, tf.float32),
           tf.TensorSpec((None, views), tf.float32),
           tf.TensorSpec((None,), tf.int32),
           tf.TensorSpec((None, views, teacher_train.shape[-1]), tf.float32)]

    @tf.function(input_signature=sig)
    def step(x: Any, mask: Any, y: Any, target: Any) -> Any:
        with tf.GradientTape() as tape:
            logits, feats = fold_out([x, mask], training=True)
            loss_ce = ce(y, logits)
            loss_kd = tf.reduce_mean(tf.square(feats - target)) / target_power
            loss = loss_ce + cfg.distill_weight * loss_kd
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables, strict=True))
        return loss_ce, loss_kd

    train_idx = dataset.indices("train")
    labels = dataset.labels
    history = []
    for epoch in range(cfg.finetune_epochs):
        order = np.random.default_rng([cfg.seed, level_index, epoch]).permutation(train_idx.size)
        sums = np.zeros(2)
        steps = -(-order.size // cfg.batch_size)
        with tqdm(total=steps, desc=f"  fine-tune epoch {epoch + 1}/{cfg.finetune_epochs}",
                  unit="step", disable=not progress, leave=False) as bar:
            for start in range(0, order.size, cfg.batch_size):
                pos = order[start : start + cfg.batch_size]
                objs = train_idx[pos]
                x = np.asarray(dataset.images[objs], np.float32) / 255.0  # as calibration
                mask = np.ones((len(objs), views), np.float32)
                out = step(x, mask, labels[objs].astype(np.int32), teacher_train[pos])
                sums += [float(out[0]) * len(objs), float(out[1]) * len(objs)]
                bar.update(1)
        history.append({"epoch": epoch + 1, "loss_ce": sums[0] / order.size,
                        "loss_distill": sums[1] / order.size})
    return history


def _teacher_features(branch: Any, images: np.ndarray) -> np.ndarray:
    from slimedge.model.mvcnn import branch_features

    return branch_features(branch, images).astype(np.float32)


def _measure(model: Any, calib: np.ndarray, level_path: Path, repeats: int) -> dict[str, Any]:
    """Convert to every format and measure the costs the later stages read."""
    from slimedge.model.costs import count_macs, count_params
    from slimedge.profile import litert, tflm
    from slimedge.profile.layers import layer_costs

    sizes: dict[str, int] = {}
    latency: dict[str, float] = {}
    for fmt in FORMATS:
        # int8 keeps a dynamic batch (the cache runs it batched; export checks its static
        # artifact against it); float files are the static batch-1 files export ships.
        blob = to_tflite(model, fmt, calib if fmt == "int8" else None,
                         static_batch=None if fmt == "int8" else 1)
        path = level_path / f"branch_{fmt}.tflite"
        path.write_bytes(blob)
        sizes[fmt] = len(blob)
        latency[fmt] = litert.measure_latency(path, repeats=repeats).median_ms
    int8_path = level_path / "branch_int8.tflite"
    # The int8 branch under each LiteRT kernel set (xnnpack: what a Linux board runs; reference:
    # TFLite Micro's arithmetic) and its per-operator work: the latency model's calibration.
    kernels = {k: (latency["int8"] if k == "xnnpack" else
                   litert.measure_latency(int8_path, repeats=repeats, kernels=k).median_ms)
               for k in litert.KERNELS}
    return {
        "params": int(count_params(model)),
        "macs": int(count_macs(model)),
        "fp32_weight_bytes": litert.constant_bytes(level_path / "branch_float32.tflite"),
        "int8_weight_bytes": litert.constant_bytes(int8_path),
        "tflite_int8_bytes": sizes["int8"],
        "tflm_arena_bytes": tflm.measure_arena(int8_path),
        "peak_activation_bytes": litert.peak_activation_bytes(int8_path),
        "latency_ms_int8": latency["int8"],
        "tflite_bytes": sizes,
        "latency_ms": latency,
        "latency_ms_kernels": kernels,
        "layers": layer_costs(int8_path),
    }


def variant_file(level_path: Path, variant: str) -> Path:
    """The TFLite file of a level whose outputs are `variant`'s features."""
    return level_path / f"branch_{INT8 if variant == TFLM else variant}.tflite"


def _split_images(dataset: Dataset, split: str) -> np.ndarray:
    images = np.asarray(dataset.images[dataset.indices(split)])  # (N, V, H, W, 1)
    return images.reshape((-1,) + images.shape[2:])


def _cache_features(level_path: Path, dataset: Dataset, arena_bytes: int, variant: str,
                    workers: int | None = None
                    ) -> tuple[dict[str, np.ndarray], float | None, int | None]:
    """Run the level's file of `variant` over every view of the cached splits, as a device
    would: TFLite Micro for "int8-tflm" (image by image, with an arena above the measured
    need: the arena size does not change the arithmetic; over `workers` processes, see
    `slimedge.ladder.tflm_pass`), LiteRT otherwise."""
    from slimedge.ladder.tflm_pass import tflm_features
    from slimedge.runtime.branch import BranchRunner
    from slimedge.runtime.mcu import TflmRunner

    path = variant_file(level_path, variant)
    arena = max(2 * arena_bytes, arena_bytes + (64 << 10))
    if variant == TFLM:
        runner: Any = TflmRunner(path, arena)
    else:
        runner = BranchRunner(path, max_batch=256)
    if (runner.output_quantization is None) != (variant not in (INT8, TFLM)):
        raise LadderError(f"{path}: {variant} branch has "
                          f"{'no' if runner.output_quantization is None else 'an'} output "
                          "quantization")
    out: dict[str, np.ndarray] = {}
    V = dataset.n_views
    split_images = {split: _split_images(dataset, split) for split in CACHED_SPLITS}
    if variant == TFLM:  # one pass over every split: one set of worker processes
        allf = tflm_features(path, arena, np.concatenate(list(split_images.values())),
                             workers=workers, runner=runner)
        ends = np.cumsum([len(im) for im in split_images.values()])
        feats_of = dict(zip(split_images, np.split(allf, ends[:-1]), strict=True))
    for split, images in split_images.items():
        feats = feats_of[split] if variant == TFLM else runner.run(images).features
        out[split] = feats.reshape(-1, V, feats.shape[-1])
    scale, zp = runner.output_quantization or (None, None)
    return out, scale, zp


def _cache_variants(level_path: Path, dataset: Dataset, arena_bytes: int,
                    workers: int | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Cache every feature variant of a level; (int8 quantization, seconds per variant).
    `workers`: processes for the TFLite Micro pass (None: every usable core on a large pass)."""
    quant: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for variant in FEATURE_VARIANTS:
        t0 = time.perf_counter()
        feats, scale, zp = _cache_features(level_path, dataset, arena_bytes, variant, workers)
        save_level_features(level_path / features_file(variant), feats, scale, zp)
        seconds[variant] = round(time.perf_counter() - t0, 3)
        if variant == INT8:
            quant = {"scale": scale, "zero_point": zp}
        elif variant == TFLM and (scale, zp) != (quant["scale"], quant["zero_point"]):
            raise LadderError(f"{level_path}: TFLite Micro reads output quantization "
                              f"{scale}/{zp}, LiteRT {quant['scale']}/{quant['zero_point']}")
    return quant, seconds


def build_ladder(dataset: Dataset, model_dir: str | os.PathLike, out: str | os.PathLike,
                 config: LadderConfig | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Build the ladder of the model in `model_dir` (a `slimedge train` output) on `dataset`
    into directory `out`; returns the manifest."""
    import keras
    from tqdm.auto import tqdm

    from slimedge.model.head import head_classifier, head_info
    from slimedge.model.train import load_trained, set_bn_momentum
    from slimedge.prune.criteria import calibration_batches
    from slimedge.prune.levels import original_channels, prune_to_level

    cfg = config or LadderConfig()
    cfg.validate()
    t_start = time.perf_counter()
    branch, head, record = load_trained(model_dir)
    digest = dataset.content_hash()
    trained_on = record["dataset"]["content_hash"]
    if trained_on != digest:
        raise LadderError(
            f"{model_dir}: the model was trained on dataset {trained_on[:12]}, not on this "
            f"dataset ({digest[:12]}): build the ladder from the same dataset")
    for split in ("train", *CACHED_SPLITS):
        if dataset.indices(split).size == 0:
            raise DatasetError(f"dataset split '{split}' holds no objects; the ladder needs it")
    mhash = model_hash(record)
    keras.utils.set_random_seed(cfg.seed)
    info = head_info(head)
    classifier = NumpyClassifier.from_keras(head_classifier(head))

    calib = calibration_images(dataset, cfg.calibration_images, cfg.seed)
    teacher_calib = _teacher_features(branch, (calib[:, None] * 255).round().astype(np.uint8)
                                      )[:, 0]
    taylor_batches = calibration_batches(calib, teacher_calib, batch_size=32)

    def distill_loss(y_true: Any, y_pred: Any) -> Any:
        return keras.ops.mean(keras.ops.square(y_pred - y_true))

    train_images = dataset.images[dataset.indices("train")]
    teacher_train = _teacher_features(branch, np.asarray(train_images))
    original = original_channels(branch)
    bn_momentum = record["config"].get("bn_momentum")

    entries: list[dict[str, Any]] = []
    with atomic_dir(out) as tmp:
        prev = branch
        for i, level in enumerate(tqdm(cfg.levels, desc="ladder", unit="level",
                                       disable=not progress)):
            t0 = time.perf_counter()
            if level == 0.0:
                current = _Level(i, 0.0, 0.0, dict(original), branch)
            else:
                res = prune_to_level(prev, level, original, cfg.criterion,
                                     multiple=cfg.channel_multiple, calibration=taylor_batches,
                                     loss_fn=distill_loss)
                set_bn_momentum(res.model, bn_momentum)
                current = _Level(i, level, res.achieved, dict(res.channels), res.model)
                current.history = _finetune(res.model, head, dataset, teacher_train, cfg, i,
                                            progress)
            ldir = level_dir(tmp, i)
            ldir.mkdir(parents=True)
            current.model.save(ldir / "branch.keras")
            costs = _measure(current.model, calib, ldir, cfg.latency_repeats)
            quant, feature_seconds = _cache_variants(ldir, dataset, costs["tflm_arena_bytes"])
            entries.append({
                "index": i, "level": float(level), "achieved": float(current.achieved),
                "channels": current.channels, **costs,
                "feature_quant": quant, "feature_seconds": feature_seconds,
                "finetune": current.history,
                "seconds": round(time.perf_counter() - t0, 3),
            })
            prev = current.model

        classifier.save(tmp / "classifier.npz")
        with open(tmp / "labels.npz", "wb") as fh:
            np.savez(fh, **{s: dataset.labels[dataset.indices(s)] for s in CACHED_SPLITS})
        head.save(tmp / "head.keras")
        # Accuracy of each level with every view at that level, from the cache just written.
        manifest = {
            "format": LADDER_FORMAT, "format_version": LADDER_VERSION,
            "dataset_hash": digest, "model_hash": mhash, "model_dir": str(model_dir),
            "views": dataset.n_views, "feature_dim": int(info["feature_dim"]),
            "n_classes": int(info["n_classes"]), "class_names": list(dataset.class_names),
            "pool_mode": info["pooling"], "backbone": record["branch"]["backbone"],
            "criterion": cfg.criterion, "channel_multiple": cfg.channel_multiple,
            "original_channels": original, "config": cfg.to_dict(),
            "head_classifier_macs": int(sum(w.size for w in classifier.weights)),
            "host": {"cpu": provenance.cpu_name(), "machine": platform.machine(),
                     "cores": os.cpu_count(), "threads_used": 1},
            "versions": provenance.versions(), "levels": entries,
            "feature_variants": list(FEATURE_VARIANTS),
        }
        for split in CACHED_SPLITS:
            ev = Evaluator.from_ladder(tmp, split, manifest=manifest)
            for e in entries:
                e[f"{split}_accuracy"] = ev.accuracy([e["index"]] * dataset.n_views)
        manifest["files"] = {str(p.relative_to(tmp)): sha256_file(p)
                             for p in sorted(tmp.rglob("*")) if p.is_file()
                             and p.name != "manifest.json"}
        manifest["seconds"] = round(time.perf_counter() - t_start, 3)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def check_ladder_inputs(manifest: dict[str, Any], *, dataset_hash: str | None = None,
                        model_hash_: str | None = None, where: str = "ladder") -> None:
    """A ladder used with a dataset or model other than the one it was built from is an error."""
    if dataset_hash is not None and manifest["dataset_hash"] != dataset_hash:
        raise LadderError(f"{where}: built from dataset {manifest['dataset_hash'][:12]}, "
                          f"not from this dataset ({dataset_hash[:12]})")
    if model_hash_ is not None and manifest["model_hash"] != model_hash_:
        raise LadderError(f"{where}: built from model {manifest['model_hash'][:12]}, "
                          f"not from this model ({model_hash_[:12]})")
