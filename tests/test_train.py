"""Training the MVCNN: failout masks, augmentation, learning, reproducibility, atomic output."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from slimedge.artifacts import sha256_file
from slimedge.data.container import Dataset
from slimedge.model import train as train_module
from slimedge.model.augment import AugmentConfig, augment_views
from slimedge.model.backbones import build_branch
from slimedge.model.failout import (
    failout_rate_at,
    full_rate_epoch,
    max_failout_rate,
    sample_live_mask,
)
from slimedge.model.head import build_head, core_logits
from slimedge.model.mvcnn import (
    accuracy_vs_failed_views,
    branch_features,
    build_mvcnn,
    evaluate,
    to_branch_input,
)
from slimedge.model.pooling import ModelConfigError
from slimedge.model.train import TrainConfig, epoch_masks, epoch_order, load_trained, train

V, SIZE, CLASSES = 4, 16, 3


def tiny_dataset(n: int = 96, seed: int = 0) -> Dataset:
    """Three classes of striped patterns (horizontal, vertical, checker) under noise; the last
    view shows only noise, so views are unequally informative."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % CLASSES).astype(np.int32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    patterns = [np.sin(yy * 1.6) > 0, np.sin(xx * 1.6) > 0, ((yy // 4 + xx // 4) % 2) == 0]
    images = rng.normal(60, 25, size=(n, V, SIZE, SIZE))
    for i, c in enumerate(labels):
        images[i, : V - 1] += 120 * patterns[c] * rng.uniform(0.6, 1.0, size=(V - 1, 1, 1))
    split = np.zeros(n, np.uint8)
    split[n * 2 // 3 :] = 1
    split[n * 5 // 6 :] = 2
    perm = rng.permutation(n)
    return Dataset(images=np.clip(images, 0, 255).astype(np.uint8)[perm, ..., None],
                   labels=labels[perm], class_names=["rows", "columns", "checker"], split=split)


def tiny_config(**overrides) -> TrainConfig:
    base = dict(backbone="vgg", width=0.5, depth=3, feature_dim=16, head_hidden=16,
                epochs=6, batch_size=8, learning_rate=3e-3, failout_rate=0.25,
                failout_schedule="warmup", failout_warmup_epochs=1, patience=3)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return tiny_dataset()


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "model"
    return train(dataset, tiny_config(), out_dir=out, progress=False)


# -- failout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["bernoulli", "uniform_k"])
@pytest.mark.parametrize(("views", "frac"), [(2, 0.5), (4, 0.3), (4, 1.0), (12, 0.5), (12, 1.0)])
def test_failout_rate_and_never_all_dead(sampler, views, frac):
    rate = frac * max_failout_rate(views, sampler) * 0.999
    rng = np.random.default_rng(views)
    n = 100_000
    live = sample_live_mask(rng, n, views, rate, sampler)
    assert live.shape == (n, views) and live.dtype == bool
    assert live.any(axis=1).all()
    dropped = 1.0 - live.mean(axis=1)
    # The mean drop fraction is the rate (within 5 standard errors).
    assert abs(dropped.mean() - rate) < 5 * dropped.std() / math.sqrt(n) + 1e-9
    # No view is favoured.
    per_view = 1.0 - live.mean(axis=0)
    assert np.all(np.abs(per_view - rate) < 0.02)


def test_uniform_k_draws_k_uniformly():
    views, rate = 6, 0.3
    live = sample_live_mask(np.random.default_rng(1), 120_000, views, rate, "uniform_k")
    k = views - live.sum(axis=1)
    q = rate * 2 * views / (views - 1)
    freq = np.bincount(k, minlength=views) / k.size
    want = np.full(views, q / views)
    want[0] += 1 - q
    np.testing.assert_allclose(freq, want, atol=0.006)


def test_bernoulli_rarely_loses_many_views():
    live = sample_live_mask(np.random.default_rng(2), 50_000, 12, 0.25, "bernoulli")
    k = 12 - live.sum(axis=1)
    assert (k >= 9).mean() < 0.001  # hence "uniform_k" when heavy failures must be seen


def test_zero_rate_keeps_all_views():
    assert sample_live_mask(np.random.default_rng(0), 10, 5, 0.0).all()


def test_schedules():
    assert [failout_rate_at(e, 0.4, "constant") for e in range(3)] == [0.4] * 3
    assert [failout_rate_at(e, 0.4, "warmup", warmup_epochs=2) for e in range(4)] == [
        0, 0, 0.4, 0.4]
    ramp = [failout_rate_at(e, 0.4, "ramp", warmup_epochs=1, ramp_epochs=4) for e in range(7)]
    np.testing.assert_allclose(ramp, [0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert full_rate_epoch("ramp", warmup_epochs=1, ramp_epochs=4) == 4
    assert full_rate_epoch("warmup", warmup_epochs=2) == 2
    assert full_rate_epoch("constant", warmup_epochs=2) == 0


def test_epoch_masks_follow_schedule_and_seed():
    config = tiny_config(failout_rate=0.5, failout_schedule="ramp", failout_warmup_epochs=1,
                         failout_ramp_epochs=2)
    assert epoch_masks(1000, V, config, 0).all()
    for epoch, rate in ((1, 0.25), (2, 0.5), (5, 0.5)):
        masks = epoch_masks(20_000, V, config, epoch)
        assert masks.any(axis=1).all()
        assert abs((1 - masks.mean()) - rate) < 0.01
    np.testing.assert_array_equal(epoch_masks(50, V, config, 3), epoch_masks(50, V, config, 3))
    assert not np.array_equal(epoch_masks(50, V, config, 3), epoch_masks(50, V, config, 4))
    np.testing.assert_array_equal(epoch_order(30, 1, 2), epoch_order(30, 1, 2))
    assert not np.array_equal(epoch_order(30, 1, 2), epoch_order(30, 1, 3))


# -- configuration errors --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"pooling": "median"}, "pooling: unknown pooling mode 'median'"),
        ({"failout_rate": 1.0}, r"failout_rate: expected a rate in \[0, 1\)"),
        ({"failout_rate": -0.1}, r"failout_rate: expected a rate in \[0, 1\)"),
        ({"failout_rate": 0.8}, "failout_rate: 0.8 cannot be reached with 4 views"),
        ({"failout_rate": 0.4, "failout_sampler": "uniform_k"}, "at most 0.3750"),
        ({"failout_sampler": "poisson"}, "failout_sampler: unknown sampler 'poisson'"),
        ({"failout_schedule": "cosine"}, "failout_schedule: unknown schedule 'cosine'"),
        ({"failout_schedule": "ramp", "failout_warmup_epochs": 2, "failout_ramp_epochs": 3,
          "epochs": 4}, "epochs: 4 epochs end before failout reaches its rate"),
        ({"backbone": "resnet9000"}, "backbone: unknown backbone 'resnet9000'"),
        ({"batch_size": 0}, "batch_size: expected an integer >= 1"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"head_dropout": 1.5}, "head_dropout"),
        ({"bn_momentum": 1.0}, r"bn_momentum: expected None or a value in \[0, 1\)"),
        ({"augment_options": {"shift": 2}}, "augment_options"),
        ({"augment_options": {"noise": 2.0}}, "augment.noise"),
        ({"val_failed_views": 4}, "val_failed_views: expected 0..3"),
        ({"lr_schedule": "step"}, "lr_schedule: expected one of"),
        ({"lr_final_fraction": 0.0}, r"lr_final_fraction: expected a value in \(0, 1\]"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, match, tmp_path):
    with pytest.raises(ModelConfigError, match=match):
        tiny_config(**overrides).validate(V)


def test_bad_config_stops_before_anything_is_written(dataset, tmp_path):
    with pytest.raises(ModelConfigError, match="failout_rate"):
        train(dataset, tiny_config(failout_rate=1.0), out_dir=tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


def test_cosine_learning_rate_decays_from_start_to_final_fraction():
    config = tiny_config(epochs=5, learning_rate=1e-3, lr_final_fraction=0.1)
    lrs = [config.lr_at(e) for e in range(5)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert tiny_config(lr_schedule="constant").lr_at(3) == tiny_config().learning_rate


def test_config_round_trip_and_unknown_field():
    config = tiny_config(view_weights=None, backbone_options={})
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ModelConfigError, match="unknown field.*failout"):
        TrainConfig.from_dict({"failout": 0.2})


# -- augmentation ----------------------------------------------------------------------------

def test_augmentation_keeps_views_and_is_seeded():
    # Smooth blobs at random places: a one-pixel shift moves them little.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    centres = rng.uniform(2, SIZE - 2, size=(6, V, 2, 1, 1))
    blobs = np.exp(-((yy - centres[:, :, 0]) ** 2 + (xx - centres[:, :, 1]) ** 2) / 12.0)
    x = tf.constant(blobs[..., None].astype(np.float32) * 0.8)
    cfg = AugmentConfig()
    a = augment_views(x, tf.constant([1, 2], tf.int64), cfg).numpy()
    b = augment_views(x, tf.constant([1, 2], tf.int64), cfg).numpy()
    c = augment_views(x, tf.constant([1, 3], tf.int64), cfg).numpy()
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Mild: each view stays far closer to itself than to another object's same view.
    own = np.abs(a - x.numpy()).mean()
    other = np.abs(a - np.roll(x.numpy(), 1, axis=0)).mean()
    assert own < 0.5 * other
    off = AugmentConfig(max_shift=0, brightness=0, contrast=0, noise=0)
    np.testing.assert_array_equal(augment_views(x, tf.constant([1, 2], tf.int64), off), x)


def test_shift_is_a_small_integer_translation_without_flip():
    x = np.zeros((1, 2, 16, 16, 1), np.float32)
    x[0, :, 3, 10] = 1.0  # one bright pixel, off-centre (a flip would move it far)
    cfg = AugmentConfig(max_shift=2 / 16, brightness=0, contrast=0, noise=0)
    for s in range(20):
        y = augment_views(tf.constant(x), tf.constant([s, 0], tf.int64), cfg).numpy()
        for v in range(2):
            (r, c), = np.argwhere(y[0, v, ..., 0] == 1.0)
            assert abs(r - 3) <= 2 and abs(c - 10) <= 2


# -- wiring ----------------------------------------------------------------------------------

def test_mvcnn_equals_branch_then_core_pool(dataset):
    branch = build_branch("vgg", input_shape=(SIZE, SIZE, 1), feature_dim=8, width=0.25, depth=2)
    head = build_head(V, 8, CLASSES, mode="mean", seed=1)
    model = build_mvcnn(branch, head, V)
    images = dataset.images[:5]
    mask = np.random.default_rng(0).random((5, V)) < 0.6
    got = np.asarray(model([to_branch_input(images), mask.astype(np.float32)], training=False))
    want = core_logits(head, branch_features(branch, images), mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelConfigError, match="feature_dim: branch 'vgg' outputs 8"):
        build_mvcnn(branch, build_head(V, 16, CLASSES), V)
    with pytest.raises(ModelConfigError, match="views: head 'head' takes 4 views"):
        build_mvcnn(branch, head, 5)


# -- training --------------------------------------------------------------------------------

def test_training_learns_and_saves(trained, dataset):
    assert trained.val_accuracy >= 0.8  # chance is 1/3
    assert trained.test_accuracy is not None and trained.test_accuracy >= 0.7
    out = trained.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["branch.keras", "head.keras", "train.json"]
    record = json.loads((out / "train.json").read_text())
    assert record["dataset"]["content_hash"] == dataset.content_hash()
    assert record["seed"] == 0 and record["config"]["failout_rate"] == 0.25
    assert record["best_epoch"] >= 2  # epoch 1 trains without failout: never kept
    assert [h["failout_rate"] for h in record["history"]][:2] == [0.0, 0.25]
    assert set(record["versions"]) >= {"tensorflow", "keras", "numpy", "slimedge",
                                       "ai-edge-litert"}
    host = record["host"]
    assert host["cpu"] and host["available_cpus"] >= 1
    threads = host["threads"]
    assert threads["op_determinism"] is True and threads["intra_op"] >= 1
    assert threads["inter_op"] >= 1
    assert record["head"]["pooling"] == "max" and record["branch"]["input_range"] == [0.0, 1.0]
    assert record["files"]["head.keras"] == sha256_file(out / "head.keras")
    assert trained.record == record  # what train() returns is what it wrote
    momenta = {layer.momentum for layer in trained.branch.layers if hasattr(layer, "momentum")}
    assert momenta == {0.9}
    # What was saved is what was kept, and evaluates to what the record says.
    branch, head, _ = load_trained(out)
    acc = evaluate(branch, head, dataset, "test")
    assert acc == pytest.approx(record["test"]["accuracy"])
    assert evaluate(branch, head, dataset, "val") == pytest.approx(trained.val_accuracy)
    curve = accuracy_vs_failed_views(branch, head, dataset, "test")
    assert sorted(curve) == list(range(V)) and curve[0] == pytest.approx(acc)
    assert record["test"]["accuracy_vs_failed_views"]["1"] == pytest.approx(curve[1])
    # Dead views given by index or by mask agree; the uninformative view 3 matters least.
    assert evaluate(branch, head, dataset, "test", dead_views=[0, 1]) == pytest.approx(
        evaluate(branch, head, dataset, "test", dead_views=np.array([1, 1, 0, 0], bool)))


def test_same_seed_same_weights(dataset, tmp_path):
    config = tiny_config(epochs=1, failout_schedule="constant")
    a = train(dataset, config, out_dir=tmp_path / "a", progress=False)
    b = train(dataset, config, out_dir=tmp_path / "b", progress=False)
    c = train(dataset, tiny_config(epochs=1, failout_schedule="constant", seed=1),
              out_dir=tmp_path / "c", progress=False)
    wa, wb, wc = (r.branch.get_weights() + r.head.get_weights() for r in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc, strict=True))


def test_same_seed_twice_same_model_hash(dataset, tmp_path):
    """Two `slimedge train` processes, same seed and data: the same model files, byte for byte
    (op determinism, fixed thread pools, .keras files without a save date or memory addresses);
    another seed, other files."""
    import subprocess
    import sys

    from slimedge.ladder.build import model_hash

    data = tmp_path / "data"
    dataset.save(data)
    hashes = []
    options = dict(epochs=2, width=0.5, feature_dim=8, failout_schedule="constant",
                   head_failout_epochs=1, threads=2)
    for run in ("a", "b"):
        out = tmp_path / run
        cmd = [sys.executable, "-m", "slimedge.cli", "train", "--dataset", str(data), "--out",
               str(out), "--seed", "0", "--json"]
        cmd += [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["threads"]["intra_op"] == summary["threads"]["inter_op"] == 2
        assert summary["threads"]["fixed"] is True
        hashes.append(model_hash(json.loads((out / "train.json").read_text())))
        assert (tmp_path / f"{run}.log").is_file()  # TensorFlow's messages, beside the model
    other = train(dataset, TrainConfig(seed=1, **options), out_dir=tmp_path / "c",
                  progress=False)
    assert hashes[0] == hashes[1] != model_hash(other.record)
    branch, head, _ = load_trained(tmp_path / "a")  # the rewritten .keras files still load
    assert branch.output_shape[-1] == 8 and head is not None


def test_keras_files_are_reproducible_and_load(tmp_path):
    """Two models with the same weights, built apart (other memory addresses for the objects
    their layers share) and saved seconds apart: the same bytes, and the file loads."""
    import time

    import keras

    from slimedge.model.keras_files import save_reproducibly

    def build():
        return keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3, name="d1"),
                                 keras.layers.Dense(2, name="d2")], name="m")

    a, b = build(), build()
    b.set_weights(a.get_weights())
    save_reproducibly(a, tmp_path / "a.keras")
    time.sleep(2.1)  # Keras' save date has one-second, a zip entry's time two-second steps
    save_reproducibly(b, tmp_path / "b.keras")
    assert sha256_file(tmp_path / "a.keras") == sha256_file(tmp_path / "b.keras")
    loaded = keras.saving.load_model(tmp_path / "a.keras")
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), a.predict(x, verbose=0))


def test_threads_must_be_a_positive_integer(dataset, tmp_path):
    with pytest.raises(ModelConfigError, match="threads: expected an integer >= 1, got 0"):
        train(dataset, tiny_config(threads=0), out_dir=tmp_path / "m", progress=False)


def _snapshot(path):
    return {p.name: sha256_file(p) for p in sorted(path.iterdir())}


def test_failure_mid_run_keeps_last_good_model(trained, dataset, monkeypatch):
    out = trained.out_dir
    before = _snapshot(out)

    def crash(epoch, metrics):
        if epoch == 2:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(dataset, tiny_config(seed=5), out_dir=out, progress=False, on_epoch=crash)
    assert _snapshot(out) == before

    # A failure while the files are being written leaves no partial model either.
    def broken_write(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(train_module, "write_json", broken_write)
    with pytest.raises(OSError, match="disk full"):
        train(dataset, tiny_config(seed=5, epochs=2), out_dir=out, progress=False)
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporaries left


def test_load_trained_rejects_tampered_files(trained, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained.out_dir, copy)
    (copy / "head.keras").write_bytes(b"not a model")
    with pytest.raises(ModelConfigError, match="head.keras: missing or does not match"):
        load_trained(copy)
    with pytest.raises(ModelConfigError, match="not a trained model directory"):
        load_trained(tmp_path)
    (copy / "train.json").write_text("{ truncated")
    with pytest.raises(ModelConfigError, match=r"train.json: not valid JSON"):
        load_trained(copy)
    (copy / "train.json").write_text(json.dumps({"format": "slimedge-model", "format_version": 9}))
    with pytest.raises(ModelConfigError, match=r"'format_version' is 9; .*\(train again\)"):
        load_trained(copy)
