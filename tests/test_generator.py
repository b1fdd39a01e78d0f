"""The built-in dataset generator: object builders, determinism, splits, config and CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from dataclasses import replace

import numpy as np
import pytest

from slimedge.cli import main
from slimedge.data.cameras import camera_ring
from slimedge.data.container import SPLITS, load_dataset
from slimedge.data.generator import (
    GENERATOR_VERSION,
    GeneratorConfig,
    add_cli_options,
    config_from_args,
    generate,
    render_object,
    split_counts,
)
from slimedge.data.objects import CLASS_NAMES, build_object
from slimedge.errors import DatasetError

# Smaller than tiny() where the test does not need every class.
SMALL = GeneratorConfig.tiny(classes=("chair", "monitor", "cup", "dresser"), objects_per_class=4)


@pytest.fixture(scope="module")
def tiny_ds():
    return generate(GeneratorConfig.tiny(), workers=1, progress=False)


# -- object builders -----------------------------------------------------------------


def test_there_are_at_least_20_modelnet_like_classes():
    assert len(CLASS_NAMES) >= 20
    for name in ("chair", "table", "desk", "dresser", "night_stand", "monitor", "cup", "vase"):
        assert name in CLASS_NAMES
    assert GeneratorConfig().classes == CLASS_NAMES


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_builder_makes_a_finite_standing_mesh_that_varies(name):
    meshes = [build_object(name, np.random.default_rng(seed)) for seed in (1, 2)]
    for m in meshes:
        assert m.n_faces > 0 and np.isfinite(m.vertices).all()
        assert m.faces.min() >= 0 and m.faces.max() < len(m.vertices)
        assert m.albedo.shape == (m.n_faces,) and 0 <= m.albedo.min() <= m.albedo.max() <= 1
        size = np.ptp(m.vertices, axis=0).max()
        assert abs(m.vertices[:, 2].min()) < 0.05 * size  # stands on the floor
    a, b = meshes
    assert a.vertices.shape != b.vertices.shape or not np.allclose(a.vertices, b.vertices)


def test_unknown_class_is_refused_with_the_valid_names():
    with pytest.raises(DatasetError, match="chair"):
        build_object("spaceship", np.random.default_rng(0))


# -- determinism -----------------------------------------------------------------------


def test_same_seed_same_content_whatever_the_number_of_workers(tiny_ds):
    again = generate(GeneratorConfig.tiny(), workers=1, progress=False)
    parallel = generate(GeneratorConfig.tiny(), workers=2, progress=False)
    assert tiny_ds.content_hash() == again.content_hash() == parallel.content_hash()


def test_a_different_seed_gives_different_content():
    a = generate(SMALL, workers=1, progress=False)
    b = generate(replace(SMALL, seed=1), workers=1, progress=False)
    assert a.content_hash() != b.content_hash()


def test_an_object_does_not_depend_on_the_other_classes(tiny_ds):
    alone = generate(GeneratorConfig.tiny(classes=("monitor",)), workers=1, progress=False)
    rows = [i for i, n in enumerate(tiny_ds.object_names) if n.startswith("monitor_")]
    np.testing.assert_array_equal(alone.images, tiny_ds.images[rows])


# -- what the dataset holds --------------------------------------------------------------


def test_tiny_dataset_shape_labels_names_and_params(tiny_ds):
    cfg = GeneratorConfig.tiny()
    n = len(CLASS_NAMES) * cfg.objects_per_class
    assert tiny_ds.images.shape == (n, 12, cfg.image_size, cfg.image_size, 1)
    assert tiny_ds.class_names == list(CLASS_NAMES)
    assert np.bincount(tiny_ds.labels).tolist() == [cfg.objects_per_class] * len(CLASS_NAMES)
    assert tiny_ds.object_names[:2] == [f"{CLASS_NAMES[0]}_0000", f"{CLASS_NAMES[0]}_0001"]
    assert tiny_ds.cameras == camera_ring(12, (30.0,))
    assert tiny_ds.params["generator_version"] == GENERATOR_VERSION
    assert tiny_ds.params["seed"] == cfg.seed
    json.dumps(tiny_ds.params)  # stored in meta.json


def test_splits_are_stratified_and_every_class_is_in_every_split():
    cfg = replace(SMALL, objects_per_class=10)
    ds = generate(cfg, workers=1, progress=False)
    expected = split_counts(10, cfg.split_fractions)
    assert expected == [6, 2, 2]
    for k in range(len(cfg.classes)):
        counts = np.bincount(ds.split[ds.labels == k], minlength=len(SPLITS))
        assert counts.tolist() == expected
    # The split is random within each class, not the first objects to train.
    assert len({tuple(ds.split[ds.labels == k]) for k in range(len(cfg.classes))}) > 1


def test_several_elevations_multiply_the_views():
    cfg = replace(SMALL, classes=("chair",), azimuths=4, elevations=(30.0, 60.0))
    ds = generate(cfg, workers=1, progress=False)
    assert ds.n_views == 8 == cfg.n_views
    assert ds.cameras == camera_ring(4, (30.0, 60.0))
    assert not np.array_equal(ds.images[:, 0], ds.images[:, 4])  # 30 vs 60 degrees up


def test_noise_never_touches_the_background():
    clean = render_object(replace(SMALL, noise_std=0.0), "dresser", 0)
    noisy = render_object(replace(SMALL, noise_std=20.0), "dresser", 0)
    np.testing.assert_array_equal(clean == 0, noisy == 0)
    assert not np.array_equal(clean, noisy)


def test_objects_face_the_azimuth_zero_camera():
    # With no yaw jitter a monitor's dark screen faces view 0 and its casing view 6 (180 deg).
    cfg = replace(SMALL, yaw_jitter_deg=0.0, noise_std=0.0, image_size=32)
    fronts, backs = [], []
    for i in range(4):
        views = render_object(cfg, "monitor", i).astype(float)
        fronts.append(views[0][views[0] > 0].mean())
        backs.append(views[6][views[6] > 0].mean())
    assert np.mean(fronts) < 0.7 * np.mean(backs)


def test_view_positions_are_not_interchangeable(tiny_ds):
    # Front-facing objects: the mean image differs between front and back views.
    mean = tiny_ds.images[..., 0].astype(float).mean(axis=0)  # (V, H, W)
    assert np.abs(mean[0] - mean[6]).mean() > 2.0


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"classes": ("chair", "spaceship")}, "built-in classes are"),
        ({"classes": ("chair", "chair")}, "duplicates"),
        ({"classes": ()}, "empty"),
        ({"objects_per_class": 2}, "objects_per_class"),
        ({"image_size": 4}, "image_size"),
        ({"azimuths": 0}, "azimuths"),
        ({"elevations": (100.0,)}, "elevations"),
        ({"seed": -1}, "seed"),
        ({"split_fractions": (0.5, 0.3, 0.3)}, "split_fractions"),
        ({"split_fractions": (1.0, 0.0, 0.0)}, "split_fractions"),
        ({"scale_jitter": 1.0}, "scale_jitter"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"yaw_jitter_deg": 400.0}, "yaw_jitter_deg"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(DatasetError, match=message):
        GeneratorConfig.tiny(**overrides)


def test_presets_and_to_dict():
    default, quick, tiny = (
        GeneratorConfig.default(),
        GeneratorConfig.quick(),
        GeneratorConfig.tiny(),
    )
    assert 1600 <= len(default.classes) * default.objects_per_class <= 2000
    assert default.image_size == 48 and default.n_views == 12
    assert len(quick.classes) * quick.objects_per_class < 500 and quick.image_size == 32
    assert tiny.objects_per_class * len(tiny.classes) < 100
    d = default.to_dict()
    assert d["elevations"] == [30.0] and d["classes"] == list(CLASS_NAMES)
    assert (
        GeneratorConfig(**{k: tuple(x) if isinstance(x, list) else x for k, x in d.items()})
        == default
    )
    with pytest.raises(DatasetError, match="preset"):
        GeneratorConfig.preset("huge")


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_cli_options(p)
    return p.parse_args(argv)


def test_config_from_args_applies_overrides_to_the_preset():
    args = _parse(["--preset", "quick", "--seed", "7", "--classes", "chair, table",
                   "--elevations", "30,60", "--azimuths", "6", "--yaw-jitter", "5",
                   "--image-size", "24", "--objects-per-class", "5", "--workers", "3"])  # fmt: skip
    cfg = config_from_args(args)
    assert cfg == GeneratorConfig.quick(seed=7, classes=("chair", "table"), elevations=(30.0, 60.0),
                                        azimuths=6, yaw_jitter_deg=5.0, image_size=24,
                                        objects_per_class=5)  # fmt: skip
    assert args.workers == 3
    assert config_from_args(_parse([])) == GeneratorConfig.default()
    with pytest.raises(DatasetError, match="elevations"):
        config_from_args(_parse(["--elevations", "30,up"]))


# -- command line ------------------------------------------------------------------------


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_generate_then_info(tmp_path):
    out = tmp_path / "ds"
    code, stdout, _ = _run(["data", "generate", "--preset", "tiny", "--out", str(out),
                            "--workers", "1", "--json"])  # fmt: skip
    assert code == 0
    made = json.loads(stdout)
    code, stdout, _ = _run(["data", "info", str(out), "--json", "--verify"])
    assert code == 0
    info = json.loads(stdout)
    for key in ("objects", "views", "classes", "splits", "image_size"):
        assert key in info
    assert info["objects"] == len(CLASS_NAMES) * 3 and info["views"] == 12
    assert info["image_size"] == [16, 16] and set(info["splits"]) == set(SPLITS)
    assert info["content_hash"] == made["content_hash"]
    assert load_dataset(out).params["generator_version"] == GENERATOR_VERSION


def test_cli_unknown_class_fails_cleanly_and_writes_nothing(tmp_path):
    out = tmp_path / "ds"
    code, _, stderr = _run(["data", "generate", "--preset", "tiny", "--classes", "chair,ufo",
                            "--out", str(out), "--json"])  # fmt: skip
    assert code == 2
    assert "ufo" in stderr and "night_stand" in stderr  # names the bad and the valid classes
    assert not out.exists()


# -- the view probe (tools/probe_views.py) ---------------------------------------------------


def _probe_module(monkeypatch):
    import importlib.util
    from pathlib import Path

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # what the tool sets on import, undone after the test

    path = Path(__file__).resolve().parents[1] / "tools" / "probe_views.py"
    spec = importlib.util.spec_from_file_location("probe_views", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_reports_every_view_and_all_views_together(tmp_path, monkeypatch):
    cfg = replace(SMALL, objects_per_class=8, azimuths=4)
    generate(cfg, workers=1, progress=False).save(tmp_path / "ds")
    probe = _probe_module(monkeypatch)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert probe.main([str(tmp_path / "ds"), "--json", "--max-iter", "50"]) == 0
    r = json.loads(out.getvalue())
    assert [v["azimuth"] for v in r["per_view"]] == [0.0, 90.0, 180.0, 270.0]
    accs = [v["accuracy"] for v in r["per_view"]]
    assert r["best_single_view"] == max(accs)
    assert r["mean_single_view"] == pytest.approx(np.mean(accs))
    assert 0.0 <= r["all_views"] <= 1.0 and r["test"] == 4 * 1
    assert r["content_hash"] == load_dataset(tmp_path / "ds").content_hash()
    with contextlib.redirect_stderr(io.StringIO()):
        assert probe.main([str(tmp_path / "missing")]) == 2


def test_probe_softmax_fits_a_separable_problem(monkeypatch):
    probe = _probe_module(monkeypatch)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = (rng.normal(size=(60, 5)) + np.eye(3, 5)[y] * 4).astype(np.float32)
    w, b = probe.fit_softmax(x, y, 3, l2=1e-3, max_iter=100)
    assert (probe.log_probs(x, w, b).argmax(axis=1) == y).mean() > 0.95
