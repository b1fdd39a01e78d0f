"""The deploy gate (slimedge.export.gate) on real exports of tiny models: a correct export
passes for every training seed; broken exports (a wrong output scale or zero point on one
device, two devices' artifacts swapped, a head from another model) are refused, each with a
message naming the device or file and the check at fault. Plus the gate's parts: the paired
accuracy interval, the classifier Jacobian, the one-step logit quantization error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from slimedge.export import ExportError  # noqa: E402
from slimedge.export.deploy import export_deployment, markdown_table  # noqa: E402
from slimedge.export.gate import (  # noqa: E402
    CONFIDENCE,
    DELTA_STEPS,
    TOLERANCE,
    classifier_jacobian,
    gate_deployment,
)
from slimedge.export.paired import (  # noqa: E402
    PairedCounts,
    paired_difference_interval,
    wilson,
)
from slimedge.ladder.classifier import NumpyClassifier  # noqa: E402

# Three boards, three levels: every device's artifact is a different level (so swapping two
# changes what each computes), all int8 (exactness applies to each).
TRIO = ["{id: pi_a, board: rpi4b, views: [0, 1, 2, 3]}",
        "{id: pi_b, board: rpi5, views: [4, 5, 6, 7]}",
        "{id: pi_c, board: rpi3bplus, views: [8, 9, 10, 11]}"]
TRIO_LEVELS = [0] * 4 + [2] * 4 + [1] * 4
FAST_SEEDS = (1,)  # besides the session ladder's seed 0
SLOW_SEEDS = (2, 3, 4)


def _fleet(path: Path, devices: list[str]) -> Path:
    path.write_text("name: " + path.stem + "\nviews: 12\naggregator: {host: gateway}\n"
                    "devices:\n" + "".join(f"  - {d}\n" for d in devices))
    return path


def _rewrite_output_quantization(path: Path, scale_factor: float = 1.0,
                                 zero_point_shift: int = 0) -> None:
    """What a broken export would ship: the artifact's output scale / zero point changed in
    its FlatBuffer (the weights and the int8 computation stay as they were)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    sub = model.subgraphs[0]
    q = sub.tensors[sub.outputs[0]].quantization
    q.scale = [float(x) * scale_factor for x in q.scale]
    q.zeroPoint = [int(z) + zero_point_shift for z in q.zeroPoint]
    builder = flatbuffers.Builder(len(buf) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def _seed_ladder(tiny_ladder, root: Path, seed: int) -> Path:
    """Another model on the session's dataset: trained with `seed`, a one-level ladder."""
    from slimedge.ladder.build import LadderConfig, build_ladder
    from slimedge.model.train import TrainConfig, train

    cfg = TrainConfig(epochs=3, feature_dim=16, width=0.5, head_hidden=16, batch_size=8,
                      failout_warmup_epochs=1, failout_ramp_epochs=1, patience=10,
                      head_failout_epochs=2, seed=seed)
    train(tiny_ladder.dataset, cfg, out_dir=root / "model", progress=False)
    build_ladder(tiny_ladder.dataset, root / "model", root / "ladder",
                 LadderConfig(levels=(0.0,), finetune_epochs=1, latency_repeats=1,
                              calibration_images=16, seed=seed), progress=False)
    return root / "ladder"


def _export_and_gate(tiny_ladder, ladder: Path, out: Path) -> dict:
    fleet = _fleet(out.parent / "solo.yaml", ["{id: pi, board: rpi4b, views: "
                                              "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}"])
    return export_deployment(fleet, ladder, [0] * 12, out,
                             dataset=tiny_ladder.root / "dataset", progress=False)


@pytest.fixture(scope="module")
def good(tiny_ladder, tmp_path_factory):
    work = tmp_path_factory.mktemp("gate")
    summary = export_deployment(_fleet(work / "trio.yaml", TRIO), tiny_ladder.ladder,
                                TRIO_LEVELS, work / "deploy",
                                dataset=tiny_ladder.root / "dataset", progress=False)
    return work / "deploy", summary


@pytest.fixture(scope="module")
def other_model(tiny_ladder, tmp_path_factory) -> Path:
    """The ladder of a second training seed (its head is "a head from another model")."""
    return _seed_ladder(tiny_ladder, tmp_path_factory.mktemp("seed1"), FAST_SEEDS[0])


def _broken_copy(good, tmp_path: Path) -> Path:
    copy = tmp_path / "deploy"
    shutil.copytree(good[0], copy)
    return copy


def _refused(copy: Path, tiny_ladder) -> list[str]:
    result = gate_deployment(copy, tiny_ladder.ladder, tiny_ladder.root / "dataset")
    assert not result.ok
    with pytest.raises(ExportError, match="deploy gate refused the deployment"):
        result.raise_if_failed()
    return result.failures


# --------------------------------------------------------------------------- correct exports


def test_correct_export_passes_and_reports_the_gate(good, tiny_ladder):
    deploy, s = good
    g = s["gate"]
    assert g["ok"] and not g["failures"] and s["verified"]
    assert g["exactness"]["ok"] and g["exactness"]["reference"] == "evaluator"
    assert g["exactness"]["equal_frames"] == g["frames"] == len(tiny_ladder.dataset.indices(
        "test"))
    assert set(g["exactness"]["devices"]) == {"pi_a", "pi_b", "pi_c"}
    assert all(e["int8"] and e["exact"] for e in g["exactness"]["devices"].values())
    assert g["tolerance"] == TOLERANCE and g["confidence"] == CONFIDENCE
    assert g["delta"]["steps"] == DELTA_STEPS
    lo, hi = g["accuracy_interval"]
    assert lo <= g["accuracy_loss"] <= hi and lo <= TOLERANCE
    assert g["accuracy_loss"] == pytest.approx(g["float_accuracy"] - g["int8_accuracy"])
    assert 0 <= g["near_ties"] <= g["frames"] and not g["disagreeing_above_delta"]
    assert g["agreement"] == s["agreement"]
    assert list(g["margin_quantiles"]) == ["min", "q10", "q25", "q50", "q75", "q90", "max"]
    assert "Newcombe" in g["method"]
    # The same gate over the deployment directory as it stands (artifacts re-run).
    again = gate_deployment(deploy, tiny_ladder.ladder, tiny_ladder.root / "dataset")
    assert again.ok and again.to_dict() == g
    table = markdown_table(s)
    assert "Deploy gate: passed." in table and "near ties" in table and "Newcombe" in table


def _check_seed(tiny_ladder, tmp_path, seed: int) -> None:
    ladder = _seed_ladder(tiny_ladder, tmp_path / f"seed{seed}", seed)
    s = _export_and_gate(tiny_ladder, ladder, tmp_path / f"seed{seed}" / "deploy")
    assert s["gate"]["ok"], s["gate"]["failures"]
    assert s["gate"]["exactness"]["ok"]


def test_correct_export_passes_for_another_seed(good, other_model, tiny_ladder, tmp_path):
    """Seed 0 (the session ladder, `good`) and seed 1 pass; the slow test adds seeds 2..4."""
    assert good[1]["gate"]["ok"]
    s = _export_and_gate(tiny_ladder, other_model, tmp_path / "deploy")
    assert s["gate"]["ok"], s["gate"]["failures"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_correct_export_passes_for_more_seeds(tiny_ladder, tmp_path, seed):
    _check_seed(tiny_ladder, tmp_path, seed)


# --------------------------------------------------------------------------- broken exports


def test_wrong_output_scale_on_one_device_is_refused(good, tiny_ladder, tmp_path):
    copy = _broken_copy(good, tmp_path)
    _rewrite_output_quantization(copy / "devices" / "pi_b.tflite", scale_factor=1.25)
    failures = _refused(copy, tiny_ladder)
    named = [f for f in failures if f.startswith("exactness: device")]
    assert named and all("device pi_b (view" in f and "output scale" in f for f in named)
    assert not any("pi_a" in f or "pi_c" in f for f in named)


def test_wrong_zero_point_on_one_device_is_refused(good, tiny_ladder, tmp_path):
    copy = _broken_copy(good, tmp_path)
    _rewrite_output_quantization(copy / "devices" / "pi_a.tflite", zero_point_shift=7)
    failures = _refused(copy, tiny_ladder)
    named = [f for f in failures if f.startswith("exactness: device")]
    assert named and all("device pi_a (view" in f and "zero point" in f for f in named)
    assert not any("pi_b" in f or "pi_c" in f for f in named)


def test_swapped_artifacts_are_refused(good, tiny_ladder, tmp_path):
    copy = _broken_copy(good, tmp_path)
    a, b = copy / "devices" / "pi_a.tflite", copy / "devices" / "pi_c.tflite"
    tmp = copy / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    failures = _refused(copy, tiny_ladder)
    text = "; ".join(failures)
    assert "exactness: device pi_a (view 0, level 0)" in text
    assert "exactness: device pi_c (view 8, level 1)" in text
    assert not any(f.startswith("exactness: device pi_b") for f in failures)


def _other_head(other_ladder: Path, agg: Path, *, with_classifier: bool) -> None:
    from slimedge.convert import to_tflite
    from slimedge.model.head import head_classifier, load_head

    head = load_head(other_ladder / "head.keras")
    (agg / "head.tflite").write_bytes(to_tflite(head_classifier(head), "float32"))
    if with_classifier:
        shutil.copyfile(other_ladder / "classifier.npz", agg / "classifier.npz")


def test_head_from_another_model_is_refused(good, tiny_ladder, other_model, tmp_path):
    copy = _broken_copy(good, tmp_path)
    _other_head(other_model, copy / "aggregator", with_classifier=True)
    failures = _refused(copy, tiny_ladder)
    assert any(f.startswith("exactness: aggregator head.tflite: logits differ from the "
                            "ladder's classifier") for f in failures)
    assert "exactness: aggregator classifier.npz is not the ladder's classifier" in failures
    assert not any(f.startswith("exactness: device") for f in failures)
    # Only head.tflite replaced: still refused, naming that file.
    copy2 = tmp_path / "deploy2"
    shutil.copytree(good[0], copy2)
    _other_head(other_model, copy2 / "aggregator", with_classifier=False)
    failures = _refused(copy2, tiny_ladder)
    assert any("aggregator head.tflite" in f for f in failures)
    assert not any("classifier.npz" in f for f in failures)


def test_export_with_another_models_head_fails_and_writes_nothing(tiny_ladder, other_model,
                                                                   tmp_path):
    """The export itself runs the gate: a ladder whose head.keras came from another model (so
    the shipped head is not the classifier the planner measured) is refused, nothing
    written."""
    ladder = tmp_path / "ladder"
    shutil.copytree(tiny_ladder.ladder, ladder)
    shutil.copyfile(other_model / "head.keras", ladder / "head.keras")
    with pytest.raises(ExportError, match=r"deploy gate refused the deployment: exactness: "
                       r"aggregator head.tflite: logits differ"):
        export_deployment(_fleet(tmp_path / "trio.yaml", TRIO), ladder, TRIO_LEVELS,
                          tmp_path / "deploy", dataset=tiny_ladder.root / "dataset",
                          progress=False)
    assert not (tmp_path / "deploy").exists()


def test_min_agreement_is_informational(good, tiny_ladder, tmp_path):
    """--min-agreement no longer fails an export; it is range-checked and, when the raw
    agreement is below it, reported as a warning."""
    with pytest.raises(ExportError, match="min_agreement: expected a fraction"):
        export_deployment(_fleet(tmp_path / "trio.yaml", TRIO), tiny_ladder.ladder,
                          TRIO_LEVELS, tmp_path / "deploy", min_agreement=1.5, progress=False)
    assert not any("min-agreement" in w for w in good[1]["warnings"])


# --------------------------------------------------------------------------- the gate's parts


def test_paired_interval_brackets_the_loss():
    # No discordant frame: the loss is 0 and the interval holds it, not a point.
    est, lo, hi = paired_difference_interval(PairedCounts(90, 0, 0, 10), 0.99)
    assert est == 0 and lo < 0 < hi
    # Symmetric flips: symmetric interval around 0.
    est, lo, hi = paired_difference_interval(PairedCounts(80, 5, 5, 10), 0.99)
    assert est == 0 and lo == pytest.approx(-hi)
    # A one-sided loss of 20 of 200 frames: its lower bound is clearly above 1%.
    est, lo, hi = paired_difference_interval(PairedCounts(150, 20, 0, 30), 0.99)
    assert est == pytest.approx(0.1) and 0.01 < lo < est < hi
    # Three near-tie flips in 275 frames, all against int8 (the case that failed a 99%
    # agreement floor): within the tolerance, so not refused.
    est, lo, _ = paired_difference_interval(PairedCounts(230, 3, 0, 42), CONFIDENCE)
    assert est == pytest.approx(3 / 275) and lo < TOLERANCE
    assert wilson(0, 10, 1.96)[0] == 0.0 and wilson(10, 10, 1.96)[1] == 1.0
    with pytest.raises(ValueError, match="confidence"):
        paired_difference_interval(PairedCounts(1, 0, 0, 0), 1.0)
    assert PairedCounts.of(np.array([1, 1, 0, 0], bool),
                           np.array([1, 0, 1, 0], bool)) == PairedCounts(1, 1, 1, 1)


def test_paired_interval_lower_bound_rarely_exceeds_the_true_loss():
    """What makes the gate safe: P(lower bound > true loss) <= 1 - confidence (simulated
    paired outcomes, several sizes and loss patterns)."""
    rng = np.random.default_rng(0)
    for n, pb, pc in ((40, 0.05, 0.05), (275, 0.02, 0.005), (100, 0.1, 0.0)):
        draws = rng.multinomial(n, [0.6, pb, pc, 0.4 - pb - pc], size=1500)
        above = sum(paired_difference_interval(PairedCounts(*map(int, k)), 0.95)[1] > pb - pc
                    for k in draws)
        assert above / len(draws) <= 0.05 + 0.015, (n, pb, pc, above)


def test_classifier_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    clf = NumpyClassifier([rng.normal(size=(6, 5)).astype(np.float32),
                           rng.normal(size=(5, 3)).astype(np.float32)],
                          [rng.normal(size=5).astype(np.float32),
                           rng.normal(size=3).astype(np.float32)], [True, False])
    x = rng.normal(size=(4, 6))
    jac = classifier_jacobian(clf, x)
    assert jac.shape == (4, 3, 6)
    h = 1e-3
    for d in range(6):
        step = np.zeros(6)
        step[d] = h
        fd = (clf.logits((x + step).astype(np.float32)).astype(np.float64)
              - clf.logits((x - step).astype(np.float32))) / (2 * h)
        np.testing.assert_allclose(jac[:, :, d], fd, atol=2e-2)


def _synthetic_system(tmp_path: Path, n: int = 300):
    """A two-view, three-class system with an identity classifier, where every number is
    known: view features put the frame's class ahead by a margin, int8 at scale 0.01."""
    from slimedge.convert import to_tflite
    from slimedge.export.aggregator_files import head_logits
    from slimedge.export.agreement import ViewFeatures
    from slimedge.export.gate import DeployedView, GateReference, run_gate
    from slimedge.ladder.evaluator import Evaluator
    from slimedge.model.head import build_head, head_classifier

    head = build_head(2, 3, 3, hidden=None)
    logits_layer = head_classifier(head).get_layer("logits")
    logits_layer.set_weights([np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    path = tmp_path / "head.tflite"
    path.write_bytes(to_tflite(head_classifier(head), "float32"))
    labels = np.arange(n) % 3
    rng = np.random.default_rng(0)
    margin = np.where(np.arange(n) % 10 == 0, 0.05, 0.8)  # every tenth frame a near-tie
    floats = np.full((n, 2, 3), 0.2, np.float32)
    floats[np.arange(n), :, labels] += margin[:, None].astype(np.float32)
    floats += rng.uniform(-0.002, 0.002, floats.shape).astype(np.float32)
    scale = 0.01
    cached = np.clip(np.round(floats / scale), -128, 127).astype(np.int8)

    def gate(cached_int8: np.ndarray):
        ev = Evaluator(cached_int8[None], np.array([scale], np.float32),
                       np.zeros(1, np.int32), labels,
                       NumpyClassifier.from_keras(head_classifier(head)), "max")
        ref = GateReference(ev, {0: floats}, head)
        views = [DeployedView(v, f"dev{v}", 0, ViewFeatures(cached_int8[:, v], scale, 0))
                 for v in range(2)]
        return run_gate(views, ref, lambda pooled: head_logits(path, pooled))

    return gate, cached, labels


def test_int8_vs_float_rules_on_a_known_system(tmp_path):
    gate, cached, labels = _synthetic_system(tmp_path)
    ok = gate(cached)
    assert ok.ok, ok.failures
    assert ok.exactness["ok"] and ok.agreement == 1.0
    # eps_i: identity classifier, one step 0.01 on each of 3 features, two classes involved.
    assert ok.delta["quantiles"]["max"] == pytest.approx(DELTA_STEPS * 2 * 0.01, rel=1e-4)
    assert ok.near_ties == 30  # the margin-0.05 frames; the others (0.8) are decided

    # A frame the float model decides (margin 0.8) that the int8 system classifies otherwise
    # (the int8 reference itself broken there, so exactness holds): refused, frame named.
    broken = cached.copy()
    broken[7] = np.roll(broken[7], 1, axis=-1)
    r = gate(broken)
    assert r.exactness["ok"]
    assert [f.split(":")[0] for f in r.failures] == ["int8 vs float"]
    assert "1 test frame(s) with a float top-2 margin above delta disagree: 7 (margin" \
        in r.failures[0] and "dev0" in r.failures[0]

    # Every near-tie flipped to a wrong class: allowed frame by frame, but the accuracy loss
    # (10 points, all 30 against int8) is beyond the tolerance: refused by the paired interval.
    flipped = cached.copy()
    ties = np.flatnonzero(np.arange(len(labels)) % 10 == 0)
    wrong = (labels[ties] + 1) % 3
    flipped[ties, :, wrong] = flipped[ties, :, labels[ties]] + 2
    r = gate(flipped)
    assert r.exactness["ok"] and not r.disagreeing_above_delta
    assert len(r.failures) == 1 and r.failures[0].startswith("int8 vs float: test accuracy")
    assert "above the tolerance 1.00%" in r.failures[0]
    assert r.accuracy_loss == pytest.approx(0.1) and r.accuracy_interval[0] > TOLERANCE
