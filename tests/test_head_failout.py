"""The head failout stage: head-only fine-tuning with heavy failout on frozen branch features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slimedge.model.failout import max_failout_rate
from slimedge.model.head import build_head
from slimedge.model.head_failout import finetune_head, train_split_features, val_scores
from slimedge.model.mvcnn import branch_features
from slimedge.model.pooling import ModelConfigError
from slimedge.model.train import _fixed_failures, train
from tests.test_train import V, tiny_config, tiny_dataset

D, CLASSES = 8, 3


def feature_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each view's feature is a noisy class code: any one view tells the class most times."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    codes = (np.eye(CLASSES, D) * 2).astype(np.float32)
    feats = codes[labels][:, None, :] + rng.normal(0, 0.8, (n, V, D))
    return feats.astype(np.float32), labels


def stage(head, seed=0, epochs=6, **kw):
    tr, ytr = feature_problem(240, 1)
    va, yva = feature_problem(90, 2)
    live = _fixed_failures(len(yva), V, 2, 0)
    args = dict(epochs=epochs, rate=max_failout_rate(V, "uniform_k"), sampler="uniform_k",
                learning_rate=1e-2, lr_final_fraction=0.1, batch_size=16, seed=seed)
    args.update(kw)
    return finetune_head(head, tr[None], ytr, va, yva, live, **args), (va, yva, live)


def test_stage_learns_and_keeps_the_best_epoch():
    head = build_head(V, D, CLASSES, hidden=8, seed=0)
    result, (va, yva, live) = stage(head)
    hist = result["history"]
    assert [h["epoch"] for h in hist] == list(range(7))
    assert hist[0]["score"] < 0.6  # an untrained head: near chance (1/3)
    assert result["score"] == max(h["score"] for h in hist) > 0.85
    assert hist[result["best_epoch"]]["score"] == result["score"]
    # The head left in place is the kept epoch's: its scores are the reported ones.
    assert val_scores(head, va, yva, live) == pytest.approx(
        {k: result[k] for k in ("val_loss", "val_accuracy", "val_accuracy_failed", "score")})


def test_stage_keeps_the_start_head_when_no_epoch_beats_it():
    head = build_head(V, D, CLASSES, hidden=8, seed=0)
    stage(head)  # a good head
    before = [w.copy() for w in head.get_weights()]
    # A learning rate this high wrecks the head in the first step: every epoch scores lower.
    result, _ = stage(head, epochs=2, learning_rate=0.9, lr_final_fraction=1.0)
    assert result["best_epoch"] == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, head.get_weights(), strict=True))


def test_stage_follows_the_learning_rate_schedule():
    head = build_head(V, D, CLASSES, hidden=8, seed=0)
    flat, _ = stage(head, epochs=3, lr_schedule="constant")
    assert [h["learning_rate"] for h in flat["history"][1:]] == [1e-2] * 3
    cosine, _ = stage(head, epochs=3, lr_final_fraction=0.1)
    assert [h["learning_rate"] for h in cosine["history"][1:]] == pytest.approx(
        [1e-2, 5.5e-3, 1e-3])


def test_stage_is_seeded():
    a, b, c = (build_head(V, D, CLASSES, hidden=8, seed=0) for _ in range(3))
    stage(a, seed=3, epochs=2)
    stage(b, seed=3, epochs=2)
    stage(c, seed=4, epochs=2)
    wa, wb, wc = (h.get_weights() for h in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc, strict=True))


@pytest.fixture(scope="module")
def dataset():
    return tiny_dataset()


def test_train_split_features_clean_then_augmented(dataset):
    from slimedge.model.backbones import build_branch

    branch = build_branch("vgg", input_shape=dataset.images.shape[2:], feature_dim=D,
                          width=0.5, depth=3, seed=0)
    images = dataset.images[:10]
    a = train_split_features(branch, images, copies=3, augment_options={}, seed=0)
    assert a.shape == (3, 10, V, D)
    np.testing.assert_allclose(a[0], branch_features(branch, images), rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[1], a[0]) and not np.allclose(a[2], a[1])
    b = train_split_features(branch, images, copies=3, augment_options={}, seed=0)
    assert np.array_equal(a, b)
    c = train_split_features(branch, images, copies=2, augment_options={}, seed=1)
    assert np.array_equal(c[0], a[0]) and not np.allclose(c[1], a[1])


def test_training_runs_the_stage_on_a_frozen_branch(dataset, tmp_path):
    from slimedge.model.mvcnn import evaluate
    from slimedge.model.train import load_trained

    # One joint epoch leaves a head the stage can improve on (at this learning rate it does).
    base = dict(epochs=1, failout_schedule="constant", head_failout_lr=1e-2)
    joint = train(dataset, tiny_config(**base, head_failout_epochs=0), out_dir=tmp_path / "a",
                  progress=False)
    staged = train(dataset, tiny_config(**base, head_failout_epochs=4), out_dir=tmp_path / "b",
                   progress=False)
    # Same joint run, then only the head moves: the branch is bit-identical.
    for x, y in zip(joint.branch.get_weights(), staged.branch.get_weights(), strict=True):
        assert np.array_equal(x, y)
    rec = json.loads((tmp_path / "b" / "train.json").read_text())
    st = rec["head_failout"]
    assert [h["epoch"] for h in st["history"]] == [0, 1, 2, 3, 4]
    assert st["rate"] == pytest.approx(max_failout_rate(V, "uniform_k")) and st["copies"] == 4
    assert st["history"][0]["val_accuracy"] == pytest.approx(joint.val_accuracy)
    assert st["best_epoch"] > 0
    assert not all(np.array_equal(x, y) for x, y in
                   zip(joint.head.get_weights(), staged.head.get_weights(), strict=True))
    # What was saved is the stage's head, and the record's figures are that model's.
    branch, head, _ = load_trained(tmp_path / "b")
    for x, y in zip(head.get_weights(), staged.head.get_weights(), strict=True):
        assert np.array_equal(x, y)
    assert rec["val_accuracy"] == staged.val_accuracy == st["val_accuracy"] == pytest.approx(
        evaluate(branch, head, dataset, "val"))
    assert rec["test"]["accuracy"] == pytest.approx(evaluate(branch, head, dataset, "test"))
    assert json.loads((tmp_path / "a" / "train.json").read_text())["head_failout"] is None


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"head_failout_epochs": -1}, "head_failout_epochs: expected an integer >= 0"),
        ({"head_failout_copies": 0}, "head_failout_copies: expected an integer >= 1"),
        ({"head_failout_lr": 0}, r"head_failout_lr: expected a number in \(0, 1\)"),
        ({"head_failout_sampler": "poisson"}, "head_failout_sampler: unknown sampler"),
        ({"head_failout_rate": 0.5}, "head_failout_rate: 0.5 cannot be reached with 4 views"),
    ],
)
def test_bad_stage_config_is_a_clear_error(overrides, match):
    with pytest.raises(ModelConfigError, match=match):
        tiny_config(**overrides).validate(V)


def test_cli_train_with_stage_options(dataset, tmp_path, capsys):
    from dataclasses import asdict

    from slimedge.cli import main

    dataset.save(tmp_path / "ds")
    cfg = asdict(tiny_config(epochs=2))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    args = ["train", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "m"),
            "--config", str(tmp_path / "cfg.json"), "--head-failout-epochs", "2",
            "--head-failout-sampler", "bernoulli", "--head-failout-rate", "0.5", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    rec = json.loads((tmp_path / "m" / "train.json").read_text())
    assert rec["config"]["head_failout_epochs"] == 2 and rec["head_failout"]["rate"] == 0.5
    assert out["head_failout_kept_epoch"] == rec["head_failout"]["best_epoch"]
    assert out["val_accuracy"] == rec["val_accuracy"]
    # A rate the sampler cannot reach is refused before any training, naming the field.
    bad = args[:-1] + ["--head-failout-sampler", "uniform_k", "--out", str(tmp_path / "m2"),
                       "--json"]
    assert main(bad) == 2
    assert "head_failout_rate: 0.5 cannot be reached" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()
