"""Feature variants: the ladder caches what every kind of device sends (int8 in LiteRT, int8 in
TFLite Micro, float16 / dynamic / float32 in LiteRT), and the evaluator, the planner, the deploy
gate and the fleet reference pool, per view, the variant that view's device sends. Built on the
session's tiny ladder (tests/conftest.py) and a real export with a float16 board and a
microcontroller."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from slimedge.cli import main  # noqa: E402
from slimedge.ladder.evaluator import Evaluator  # noqa: E402
from slimedge.ladder.store import (  # noqa: E402
    FEATURE_VARIANTS,
    TFLM,
    LadderError,
    features_file,
    level_dir,
    load_level_features,
)

# One MCU (TFLite Micro), one float16 board, the rest int8 Linux boards.
MIXED_BOARDS = {0: "esp32s3", 1: "jetson_nano"}


def _runner_features(path, images):
    from slimedge.runtime.branch import BranchRunner

    return BranchRunner(path).run(images).features


def _tflm_features(path, images):
    from slimedge.profile.tflm import measure_arena
    from slimedge.runtime.mcu import TflmRunner

    runner = TflmRunner(path, 2 * measure_arena(path))
    return np.stack([runner.run(im).features for im in images])


def test_the_ladder_caches_every_variant(tiny_ladder):
    from ai_edge_litert.interpreter import Interpreter

    root, ds, manifest = tiny_ladder
    assert manifest["feature_variants"] == list(FEATURE_VARIANTS)
    images = np.asarray(ds.subset("test")[0])
    for e in manifest["levels"]:
        ldir = level_dir(root / "ladder", e["index"])
        assert set(e["feature_seconds"]) == set(FEATURE_VARIANTS)
        for variant in FEATURE_VARIANTS:
            for split in ("val", "test"):
                lf = load_level_features(ldir / features_file(variant), split)
                assert lf.features.shape[:2] == (len(ds.indices(split)), ds.n_views)
                assert lf.features.dtype == (np.int8 if variant in ("int8", TFLM)
                                             else np.float32)
        for fmt in ("float16", "dynamic", "float32"):
            # The file export ships: a static batch of 1.
            inp = Interpreter(model_path=str(ldir / f"branch_{fmt}.tflite")).get_input_details()
            assert list(inp[0]["shape_signature"])[0] == 1, fmt
            cached = load_level_features(ldir / features_file(fmt), "test").features[:, 2]
            np.testing.assert_array_equal(
                cached, _runner_features(ldir / f"branch_{fmt}.tflite", images[:, 2]))
        # TFLite Micro's own arithmetic, not LiteRT's.
        cached = load_level_features(ldir / features_file(TFLM), "test").features[:5, 3]
        np.testing.assert_array_equal(cached, _tflm_features(ldir / "branch_int8.tflite",
                                                             images[:5, 3]))


def test_the_evaluator_equals_the_device_pipeline_of_each_variant(tiny_ladder):
    """Mixed variants, random levels and live sets: the evaluator's predictions are the ones of
    each view's own file run now (TFLite Micro for int8-tflm), pooled as the aggregator pools."""
    from slimedge.ladder.device_pipeline import DevicePipeline

    root, ds, manifest = tiny_ladder
    V, L = ds.n_views, len(manifest["levels"])
    variants = [FEATURE_VARIANTS[v % len(FEATURE_VARIANTS)] for v in range(V)]
    ev = Evaluator.from_ladder(root / "ladder", "test", variants=variants)
    assert ev.variants == tuple(variants) and not ev.fallback
    device = DevicePipeline(root / "ladder", np.asarray(ds.subset("test")[0]), variants)
    rng = np.random.default_rng(1)
    masks = []
    for _ in range(3):
        levels = rng.integers(0, L, V)
        live = rng.random(V) < 0.6
        live[rng.integers(V)] = True
        masks.append(live)
        np.testing.assert_array_equal(ev.predictions(levels, live),
                                      device.predictions(levels, live))
    # Only int8 views live: pooled as int8, as the aggregator does.
    int8_only = np.array([variants[v] in ("int8", TFLM) for v in range(V)])
    np.testing.assert_array_equal(ev.predictions([1] * V, int8_only),
                                  device.predictions([1] * V, int8_only))
    # The planner's batched path gives the same accuracies as one mask at a time.
    masks = np.array(masks + [int8_only])
    np.testing.assert_allclose(ev.accuracy_over_masks([0] * V, masks),
                               [ev.accuracy([0] * V, m) for m in masks])
    # A float view's gathered features are its float file's outputs, bit for bit.
    feats, scale, _ = ev.gather([2] * V)
    assert scale is None and feats.dtype == np.float32
    np.testing.assert_array_equal(feats[:, 2], device.features(2, 2))


@pytest.fixture(scope="module")
def mixed_deployment(tiny_ladder, tmp_path_factory):
    """The tiny ladder exported for a fleet with a float16 board (view 1) and a TFLite Micro
    board (view 0): real artifacts, signed."""
    from slimedge.export.deploy import export_deployment

    work = tmp_path_factory.mktemp("mixed-deployment")
    fleet = work / "mixed.yaml"
    fleet.write_text("name: mixed\nviews: 12\naggregator: {host: gateway}\ndevices:\n" + "".join(
        f"  - {{id: cam{v:02d}, board: {MIXED_BOARDS.get(v, 'rpi4b')}, views: [{v}]}}\n"
        for v in range(12)))
    summary = export_deployment(fleet, tiny_ladder.ladder, [v % 3 for v in range(12)],
                                work / "deploy", dataset=tiny_ladder.root / "dataset",
                                progress=False)
    return work / "deploy", fleet, summary


def test_a_float16_device_is_evaluated_with_its_own_artifacts_features(tiny_ladder,
                                                                       mixed_deployment):
    """The fleet reference (the evaluator, as `fleet up` and the planner use it) equals, frame
    by frame and per live set, the features the deployment's real artifacts compute: the
    Jetson Nano's float16 file in LiteRT, the ESP32-S3's int8 file in TFLite Micro."""
    from slimedge.fleet.reference import artifact_reference, deployment_variants, make_reference
    from slimedge.runtime.aggregator_deployment import load_aggregator_deployment

    deploy, _, summary = mixed_deployment
    dep = load_aggregator_deployment(deploy)
    variants = deployment_variants(dep)
    assert variants[:2] == [TFLM, "float16"] and set(variants[2:]) == {"int8"}
    dataset = tiny_ladder.root / "dataset"
    ref = make_reference(dep, tiny_ladder.ladder, "ladder", dataset)
    by_artifacts = artifact_reference(dep, dataset, "artifacts")
    images = np.asarray(tiny_ladder.dataset.subset("test")[0])
    levels = [v % 3 for v in range(12)]
    feats, _, _ = ref.evaluator.gather(levels)
    np.testing.assert_array_equal(
        feats[:, 1], _runner_features(deploy / "devices" / "cam01.tflite", images[:, 1]))
    q, scale, zp = ref.evaluator.gather(levels, np.zeros(12, bool))
    np.testing.assert_array_equal(q[:, 0], by_artifacts.features[0].features)
    assert (scale[0], zp[0]) == (np.float32(by_artifacts.features[0].scale),
                                 by_artifacts.features[0].zero_point)
    n = len(ref.labels)
    frames = np.arange(n)
    rng = np.random.default_rng(0)
    for live in [np.ones(12, bool), np.arange(12) != 1, np.arange(12) < 2,
                 *(rng.random((3, 12)) < 0.5)]:
        lives = np.repeat(live[None], n, 0)
        np.testing.assert_array_equal(ref.predictions(dep, frames, lives),
                                      by_artifacts.predictions(dep, frames, lives))
    # The deploy gate judged the float16 and TFLite Micro devices bit for bit, end to end
    # against the evaluator.
    exact = summary["gate"]["exactness"]
    assert exact["ok"] and exact["reference"] == "evaluator", exact
    assert exact["devices"]["cam01"]["variant"] == "float16"
    assert exact["devices"]["cam00"]["variant"] == TFLM
    assert summary["static_vs_cached"]["1/float16"]["equal_fraction"] == 1.0


def test_the_gate_refuses_float_features_of_another_level(tiny_ladder, mixed_deployment):
    """A float16 artifact of the wrong level is named by the exactness check."""
    from slimedge.export.gate import gate_deployment

    deploy, _, _ = mixed_deployment
    broken = deploy.parent / "broken"
    if not broken.exists():
        shutil.copytree(deploy, broken)
        shutil.copy(level_dir(tiny_ladder.ladder, 2) / "branch_float16.tflite",
                    broken / "devices" / "cam01.tflite")
    result = gate_deployment(broken, tiny_ladder.ladder, tiny_ladder.root / "dataset")
    assert not result.ok
    assert any("device cam01 (view 1, level 1): float16 features differ" in f
               for f in result.failures), result.failures


def test_the_planner_measures_the_fleets_variants(tiny_ladder, mixed_deployment):
    from slimedge.devices.fleet import load_fleet
    from slimedge.plan.context import Constraints, PlanContext

    _, fleet, _ = mixed_deployment
    ctx = PlanContext.from_ladder(tiny_ladder.ladder, load_fleet(fleet), Constraints())
    assert ctx.evaluator.variants[:2] == (TFLM, "float16")
    assert ctx.ladder["feature_variants"][:3] == [TFLM, "float16", "int8"]
    assert ctx.test_evaluator.variants == ctx.evaluator.variants
    ctx32 = PlanContext.from_ladder(tiny_ladder.ladder, load_fleet(fleet), Constraints(),
                                    formats={"cam01": "float32", "cam05": "float16"})
    assert ctx32.evaluator.variants[1] == "float32" and ctx32.evaluator.variants[5] == "float16"


def ladder_without_variants(ladder: Path, tmp_path: Path) -> tuple[Path, dict]:
    """A copy of `ladder` as written before feature variants: no `feature_variants` in its
    manifest, no `features_<variant>.npz` files (int8 features only); (folder, manifest)."""
    old = tmp_path / "ladder"
    shutil.copytree(ladder, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["feature_variants"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for f in old.glob("levels/*/features_*.npz"):
        f.unlink()
    return old, manifest


def test_an_old_ladder_falls_back_to_int8_and_says_so(tiny_ladder, tmp_path, capsys):
    old, manifest = ladder_without_variants(tiny_ladder.ladder, tmp_path)
    V = int(manifest["views"])
    ev = Evaluator.from_ladder(old, "test", variants=["float16"] + ["int8"] * (V - 1))
    assert list(ev.fallback) == [0] and "int8 (LiteRT) features used instead" in ev.fallback[0]
    plain = Evaluator.from_ladder(old, "test")
    np.testing.assert_array_equal(ev.predictions([1] * V), plain.predictions([1] * V))
    assert main(["evaluate", str(old), "--levels", "1", "--features", "float16", "--split",
                 "test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["fallback"]) == V and out["features"] == ["int8"] * V

    # A ladder that says it caches variants but lost a file is damaged: named.
    manifest["feature_variants"] = list(FEATURE_VARIANTS)
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LadderError, match=r"L00/features_float16.npz: missing cached features"):
        Evaluator.from_ladder(old, "test", variants=["float16"] * V)
    with pytest.raises(LadderError, match="unknown feature variant 'fp16'"):
        from slimedge.ladder.commands import parse_variants

        parse_variants("fp16", V)
    assert main(["evaluate", str(old), "--levels", "0", "--features", "int4", "--json"]) == 2


def test_the_feature_cost_tool_reads_the_ladders_record(tiny_ladder, capsys):
    """tools/ladder_feature_cost.py: the added inference passes per level, from the ladder."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "ladder_feature_cost.py"
    spec = importlib.util.spec_from_file_location("ladder_feature_cost", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(tiny_ladder.ladder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["levels"]) == len(tiny_ladder.manifest["levels"])
    for row, e in zip(out["levels"], tiny_ladder.manifest["levels"], strict=True):
        fs = e["feature_seconds"]
        assert row["added_s"] == pytest.approx(sum(fs.values()) - fs["int8"], abs=1e-3)
        assert set(row["per_variant_s"]) == set(FEATURE_VARIANTS) - {"int8"}
    assert 0 < out["added_share"] < 1
    assert tool.main([str(tiny_ladder.ladder)]) == 0
    assert "| all |" in capsys.readouterr().out


def test_an_old_ladder_still_exports_a_mixed_fleet(tiny_ladder, mixed_deployment, tmp_path):
    """A ladder without feature variants: the MCU's TFLite Micro and the Jetson's float16
    features are not in its cache, so the gate cannot check them bit for bit; it says so and
    judges the system against the ladder's classifier instead of refusing it."""
    from slimedge.export.deploy import export_deployment

    _, fleet, _ = mixed_deployment
    old, _ = ladder_without_variants(tiny_ladder.ladder, tmp_path)
    s = export_deployment(fleet, old, [v % 3 for v in range(12)], tmp_path / "deploy",
                          dataset=tiny_ladder.root / "dataset", progress=False)
    exact = s["gate"]["exactness"]
    assert s["gate"]["ok"] and exact["ok"], s["gate"]["failures"]
    assert exact["reference"].startswith("ladder classifier")
    assert exact["devices"]["cam00"]["exact"] is None
    assert exact["devices"]["cam01"]["exact"] is None
    assert exact["devices"]["cam02"]["exact"] is True
    assert len(exact["fallback"]) == 2 and "view 1: float16 features" in exact["fallback"][1]
