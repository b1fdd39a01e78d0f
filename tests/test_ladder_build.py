"""The ladder built for real on a tiny dataset and model: measured costs, cached features, the
evaluator's exactness against the int8 TFLite branches a device runs, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from slimedge.cli import main  # noqa: E402
from slimedge.data.generator import GeneratorConfig, generate  # noqa: E402
from slimedge.ladder.build import LadderConfig, build_ladder  # noqa: E402
from slimedge.ladder.evaluator import Evaluator  # noqa: E402
from slimedge.ladder.store import LEVEL_KEYS, LadderError, level_dir, read_manifest  # noqa: E402
from slimedge.prune import PruneError  # noqa: E402

CLASSES = ("chair", "table", "cup", "monitor")  # as the session's tiny ladder (conftest.py)
LEVELS = (0.0, 0.5, 0.75)


@pytest.fixture(scope="module")
def built(tiny_ladder):
    """The session's tiny ladder (tests/conftest.py): (root, dataset, manifest)."""
    return tuple(tiny_ladder)


def test_manifest_records_measured_costs(built):
    root, ds, manifest = built
    again = read_manifest(root / "ladder")
    assert again["levels"] == manifest["levels"]
    levels = manifest["levels"]
    assert [e["level"] for e in levels] == list(LEVELS)
    for e in levels:
        for key in LEVEL_KEYS:
            assert key in e
        assert set(e["tflite_bytes"]) == {"int8", "float16", "dynamic", "float32"}
        assert e["tflm_arena_bytes"] > 0 and e["latency_ms_int8"] > 0
        assert (level_dir(root / "ladder", e["index"]) / "branch_int8.tflite").is_file()
    # Pruning makes the branch physically smaller: params, MACs, file and TFLM arena shrink.
    for key in ("params", "macs", "tflite_int8_bytes", "tflm_arena_bytes"):
        values = [e[key] for e in levels]
        assert values[-1] < values[0], key
    assert manifest["views"] == ds.n_views and manifest["dataset_hash"] == ds.content_hash()


def test_evaluator_equals_running_the_int8_branches(built):
    """Evaluator predictions == each view's int8 TFLite branch run now (as a device would),
    pooled by the core and classified by the head's Keras classifier."""
    from slimedge.ladder.device_pipeline import DevicePipeline

    root, ds, manifest = built
    ev = Evaluator.from_ladder(root / "ladder", "test")
    images, labels = ds.subset("test")
    np.testing.assert_array_equal(ev.labels, labels)
    device = DevicePipeline(root / "ladder", images)
    rng = np.random.default_rng(0)
    V = ds.n_views
    for _ in range(3):
        levels = rng.integers(0, len(LEVELS), V)
        live = rng.random(V) < 0.7
        live[rng.integers(V)] = True
        np.testing.assert_array_equal(ev.predictions(levels, live),
                                      device.predictions(levels, live))
    # Independently of the pipeline's pooling: one live view at level 0 is that view's own
    # int8 features, dequantized, through the classifier.
    live = np.zeros(V, bool)
    live[1] = True
    scale, zp = device.runners[0].output_quantization
    pooled = (device.features(0, 1).astype(np.float32) - zp) * scale
    want = np.argmax(device.classifier.predict(pooled, verbose=0), axis=1)
    np.testing.assert_array_equal(ev.predictions([0] * V, live), want)


def test_exactness_tool_agrees(built, capsys):
    """tools/check_exactness.py (the figure reported for real ladders) runs the same check."""
    import importlib.util
    from pathlib import Path

    root, _, _ = built
    path = Path(__file__).resolve().parents[1] / "tools" / "check_exactness.py"
    spec = importlib.util.spec_from_file_location("check_exactness", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(root / "ladder"), "--dataset", str(root / "dataset"), "--configs",
                      "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact"] is True and len(out["configs"]) == 3
    assert all(r["equal"] == r["frames"] > 0 for r in out["configs"])
    assert 0 < out["float_keras_accuracy"] <= 1
    with pytest.raises(SystemExit, match="not the dataset the ladder was built from"):
        other = root / "other_dataset"
        if not other.exists():
            generate(GeneratorConfig.tiny(classes=CLASSES[:2]), workers=1,
                     progress=False).save(other)
        tool.main([str(root / "ladder"), "--dataset", str(other)])


def test_cli_info_evaluate_importance(built, capsys):
    root, ds, _ = built
    ladder = str(root / "ladder")
    assert main(["ladder", "info", ladder, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert isinstance(info["levels"], list) and len(info["levels"]) == len(LEVELS)
    for key in LEVEL_KEYS:
        assert key in info["levels"][0]

    levels = ",".join(str(i % len(LEVELS)) for i in range(ds.n_views))
    assert main(["evaluate", ladder, "--levels", levels, "--dead", "2,5", "--split", "test",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    live = np.ones(ds.n_views, bool)
    live[[2, 5]] = False
    want = Evaluator.from_ladder(ladder, "test").accuracy(
        [i % len(LEVELS) for i in range(ds.n_views)], live)
    assert got["accuracy"] == pytest.approx(want) and got["dead"] == [2, 5]

    out = root / "importance.json"
    assert main(["importance", ladder, "--json", "--out", str(out)]) == 0
    imp = json.loads(capsys.readouterr().out)
    for key in ("shapley", "leave_one_out", "ratio"):
        assert len(imp[key]) == ds.n_views
    assert json.loads(out.read_text())["shapley"] == imp["shapley"]
    assert out.with_suffix(".png").is_file()


def test_bad_inputs_are_named_and_nothing_is_overwritten(built, tmp_path, capsys):
    root, ds, _ = built
    ladder = root / "ladder"
    before = (ladder / "manifest.json").read_bytes()
    other = generate(GeneratorConfig.tiny(classes=CLASSES, objects_per_class=12, image_size=16,
                                          seed=99), workers=1, progress=False)
    with pytest.raises(LadderError, match="the model was trained on dataset"):
        build_ladder(other, root / "model", ladder, LadderConfig(levels=(0.0,)), progress=False)
    assert (ladder / "manifest.json").read_bytes() == before
    with pytest.raises(PruneError, match=r"pruning level 1.0 is outside \[0, 1\)"):
        LadderConfig(levels=(0.0, 1.0)).validate()
    assert main(["evaluate", str(ladder), "--levels", "0,9", "--json"]) == 2
    assert "--levels: expected 12 values" in capsys.readouterr().err
    assert main(["evaluate", str(ladder), "--levels", "7", "--json"]) == 2
    assert "has level index 7" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope"), "--levels", "0"]) == 2
    assert "no such ladder" in capsys.readouterr().err
