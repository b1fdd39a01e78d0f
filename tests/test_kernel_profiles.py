"""Kernel profiles (instructions per invoke counted on emulated cores) and the "per-layer" cost
model built on them: the fit reproduces the counts, boards name a profile that exists, the
shape follows the counted ratios, and nothing timed on the planning host reaches a plan."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from slimedge.devices import load_catalog
from slimedge.devices.catalog import kernels_dir, load_board
from slimedge.devices.cost import make_cost_model
from slimedge.devices.kernel_profiles import fit_counted, load_profile, load_profiles
from slimedge.devices.units import DeviceConfigError
from slimedge.plan.synthetic import synthetic_level_entries

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "firmware_configs" / "devices"
COUNTED = ROOT / "firmware_configs" / "kernels" / "counted"
CATALOG = load_catalog()


def counted_rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader((COUNTED / name).open(newline="")))


def demo_levels(indices: tuple[int, ...] | None = None, *, host_noise: float = 0.0,
                seed: int = 0) -> list[dict]:
    """Level entries of the counted demo ladder (its per-operator work from the repository),
    with the other cost fields synthetic and host latencies per kernel set perturbed by
    `host_noise` (relative, seeded): what a ladder build on a noisy host records."""
    work = json.loads((COUNTED / "demo_ladder_layers.json").read_text())["levels"]
    indices = tuple(range(len(work))) if indices is None else indices
    base = synthetic_level_entries([work[i]["level"] for i in indices])
    rng = np.random.default_rng(seed)
    out = []
    for entry, i in zip(base, indices, strict=True):
        w = work[i]
        lat = {k: (0.45 + 4.2 * w["macs"] / work[0]["macs"]) * (1 + host_noise * rng.uniform(-1, 1))
               for k in ("xnnpack", "builtin", "reference")}
        out.append({**entry, "macs": w["macs"], "layers": copy.deepcopy(w["layers"]),
                    "latency_ms_kernels": lat})
    return out


FOUR_BOARDS = ("esp32s3", "nrf52840", "rpi4b", "rpi5")  # two MCUs, two Linux boards


def four_board_fleet():
    """One device per board of FOUR_BOARDS (their own failure probabilities), a Jetson
    aggregator."""
    from slimedge.plan.synthetic import make_fleet

    return make_fleet([CATALOG[b] for b in FOUR_BOARDS],
                      [CATALOG[b].failure.probability for b in FOUR_BOARDS],
                      aggregator=CATALOG["jetson_orin_nano"])


# --------------------------------------------------------------------------- the profiles


def test_profiles_reproduce_the_counts_within_their_stated_error():
    profiles = load_profiles()
    columns = fit_counted()
    assert {c.key for c in columns} == set(profiles) == {
        "cortex-m4-reference", "cortex-m4-cmsis-nn", "cortex-a72-xnnpack",
        "cortex-a72-builtin", "cortex-a76-xnnpack", "cortex-a76-builtin"}
    for col in columns:
        profile = profiles[col.key]
        assert profile.source["column"] == col.column
        assert profile.source["model_hash"] == "c6acc27e6f16"
        # The file holds the fit of the counts in the repository (regenerated, not edited).
        assert profile.form == col.fit.form
        for name, form in profile.forms.items():
            fitted = dict(zip(col.fit.fits[name].columns, col.fit.fits[name].coef, strict=True))
            assert dict(form.coefficients) == pytest.approx(fitted, rel=1e-6)
        # Applied to the counted levels, the profile predicts every count within its error.
        predicted = profile.instructions(list(col.levels))
        rel = np.abs(predicted - np.array(col.counts)) / np.array(col.counts)
        assert rel.max() <= profile.forms[profile.form].max_rel_error + 1e-9
        assert profile.forms[profile.form].max_rel_error < 0.15


def test_the_chosen_form_has_the_lower_out_of_sample_error():
    for profile in load_profiles().values():
        loo = {k: f.loo_rel_rms for k, f in profile.forms.items()}
        other = "mac" if profile.form == "per-layer" else "per-layer"
        assert loo[profile.form] < loo[other] or profile.form == "mac", profile.key
    # The Cortex-M4 sets are per-layer: CMSIS-NN's fixed cost is not MAC-linear.
    m4 = load_profiles()["cortex-m4-cmsis-nn"]
    assert m4.form == "per-layer"
    assert m4.forms["per-layer"].max_rel_error < 0.01 < m4.forms["mac"].max_rel_error


def test_write_profile_regenerates_the_files(tmp_path, capsys):
    from test_latency_model import _tool

    assert _tool().main(["--write-profile", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert written == sorted(p.name for p in kernels_dir().glob("*.yaml"))
    for name in written:
        fresh, kept = load_profile(tmp_path / name), load_profile(kernels_dir() / name)
        assert fresh.form == kept.form and dict(fresh.source) == dict(kept.source)
        for form in kept.forms:
            assert dict(fresh.forms[form].coefficients) == pytest.approx(
                dict(kept.forms[form].coefficients), rel=1e-6)
    assert "wrote" in capsys.readouterr().out


def test_a_profile_applies_to_another_ladder():
    profile = load_profiles()["cortex-m4-cmsis-nn"]
    levels = demo_levels((0, 5, 9))
    assert profile.form_for(levels) == "per-layer"
    # Without per-operator work the MAC-linear form applies.
    bare = [{k: v for k, v in e.items() if k != "layers"} for e in levels]
    assert profile.form_for(bare) == "mac"
    coef = profile.forms["mac"].coefficients
    assert profile.instructions(bare) == pytest.approx(
        [coef["t0"] + coef["macs"] * e["macs"] for e in bare])
    # A depthwise layer (none in the counted ladder) is charged at the conv rate.
    assert "depthwise" in profile.unfitted_kinds
    dw = copy.deepcopy(levels)
    for e in dw:
        e["layers"][2]["kind"] = "depthwise"
    assert profile.instructions(dw) == pytest.approx(profile.instructions(levels))


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["forms"]["mac"]["coefficients"].pop("macs"), "forms.mac.coefficients.macs"),
    (lambda d: d["forms"]["mac"]["coefficients"].update(macs=-1.0),
     "forms.mac.coefficients.macs"),
    (lambda d: d.update(form="roofline"), "form"),
    (lambda d: d["forms"]["per-layer"]["coefficients"].update(macs_attention=1.0),
     "forms.per-layer.coefficients.macs_attention"),
    (lambda d: d.update(set="cmsis"), "set"),
])
def test_a_bad_profile_names_file_and_field(tmp_path, edit, field):
    import yaml

    doc = yaml.safe_load((kernels_dir() / "cortex-m4-cmsis-nn.yaml").read_text())
    edit(doc)
    path = tmp_path / "cortex-m4-cmsis-nn.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(DeviceConfigError, match=rf"cortex-m4-cmsis-nn\.yaml: {field}"):
        load_profile(path)


# --------------------------------------------------------------------------- board files


def test_boards_name_their_kernel_profile():
    refs = {b.id: b.kernels.key if b.kernels else None for b in CATALOG.values()}
    assert refs["nrf52840"] == "cortex-m4-cmsis-nn" and refs["rpi4b"] == "cortex-a72-xnnpack"
    assert refs["rpi5"] == "cortex-a76-xnnpack"
    assert refs["coral_devboard"] is None and refs["jetson_nano"] is None
    for board_id in ("stm32h743", "rp2350", "esp32s3", "rpi3bplus", "rpi_zero2w"):
        assert CATALOG[board_id].kernels.source.startswith("assumption:"), board_id
    assert CATALOG["rpi4b"].describe()["kernels"]["set"] == "xnnpack"


@pytest.mark.parametrize(("old", "new", "field", "hint"), [
    ("  set: cmsis-nn\n", "  set: cmsis-nm\n", "kernels.set", "did you mean 'cmsis-nn'"),
    ("  core: cortex-m4\n", "  core: cortex-m55\n", "kernels.core", "no kernel profile for core"),
    ("  set: cmsis-nn\n", "", "kernels.set", "missing"),
])
def test_a_board_naming_an_unknown_kernel_profile_is_refused(tmp_path, old, new, field, hint):
    text = (DEVICES / "nrf52840.yaml").read_text()
    assert old in text
    path = tmp_path / "nrf52840.yaml"
    path.write_text(text.replace(old, new))
    with pytest.raises(DeviceConfigError, match=rf"nrf52840\.yaml: {field}: .*{hint}"):
        load_board(path)


# --------------------------------------------------------------------------- the cost model


def test_per_layer_speedups_follow_the_counted_cmsis_nn_ratios():
    levels = demo_levels()
    counts = np.array([float(r["instructions_cmsis_nn"])
                       for r in counted_rows("cortex-m4_demo_ladder_instructions.csv")])
    model = make_cost_model("per-layer", levels, CATALOG.values())
    for board_id in ("nrf52840", "stm32h743", "portenta_h7", "rp2350", "esp32s3"):
        board = CATALOG[board_id]
        t = model.inference_ms(board)
        assert model.form(board) == "per-layer"
        assert t[0] == pytest.approx(make_cost_model("mac", levels, [board])
                                     .inference_ms(board)[0])
        assert t[0] / t == pytest.approx(counts[0] / counts, rel=0.01)
    # The headline of the counts: level 0.9 is about 9.4x faster than level 0, not 43.5x.
    nrf = model.inference_ms(CATALOG["nrf52840"])
    assert nrf[0] / nrf[-1] == pytest.approx(9.4, rel=0.01)


def test_linux_boards_follow_their_cores_counts_and_others_their_figures():
    levels = demo_levels()
    model = make_cost_model("per-layer", levels, CATALOG.values())
    mac = make_cost_model("mac", levels, CATALOG.values())
    a76 = np.array([float(r["instructions_cortex-a76_xnnpack"])
                    for r in counted_rows("aarch64_demo_ladder_instructions.csv")])
    t = model.inference_ms(CATALOG["rpi5"])
    assert model.form(CATALOG["rpi5"]) == "mac"  # the rule's choice for A76 XNNPACK
    # A ratio of two predictions each within the profile's error e is within 2e / (1 - e).
    e = load_profiles()["cortex-a76-xnnpack"].forms["mac"].max_rel_error
    assert t[0] / t == pytest.approx(a76[0] / a76, rel=2 * e / (1 - e))
    for board_id in ("coral_devboard", "jetson_orin_nano"):
        board = CATALOG[board_id]
        assert model.form(board) == "board"
        assert model.inference_ms(board) == pytest.approx(mac.inference_ms(board))


def test_host_timing_never_reaches_the_cost_table_or_the_plan():
    """The same ladder planned with two different sets of recorded host latencies (timing
    noise) gives identical cost tables and the identical plan."""
    from slimedge.plan.context import Constraints, PlanContext
    from slimedge.plan.search import SearchSettings, search
    from slimedge.plan.synthetic import SyntheticSpec, synthetic_evaluators

    fleet = four_board_fleet()
    spec = SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=120, n_test=120, n_train=600,
                         views=4, dim=16, classes=4, hidden=16, difficulty=0.5)
    evs = synthetic_evaluators(spec)
    plans, tables = [], []
    for seed in (1, 2):
        levels = demo_levels((0, 3, 6, 9), host_noise=0.4, seed=seed)
        ctx = PlanContext.build(evs["val"], fleet, levels,
                                Constraints(min_accuracy=0.5, k_failures=1, min_accuracy_k=0.4),
                                ladder={"path": "synthetic", "model_hash": "synthetic",
                                        "dataset_hash": "synthetic"})
        assert ctx.cost.cost_model == "per-layer"
        tables.append(ctx.cost)
        result = search(ctx, SearchSettings(pop=16, generations=4, seed=3))
        plans.append((list(result.best.levels), result.best.latency_ms))
    first, second = tables
    assert np.array_equal(first.inference_ms, second.inference_ms)
    assert np.array_equal(first.total_ms, second.total_ms)
    assert first.forms == second.forms
    assert plans[0] == plans[1]
    # The recorded host latencies did differ.
    a = demo_levels((0, 3, 6, 9), host_noise=0.4, seed=1)
    b = demo_levels((0, 3, 6, 9), host_noise=0.4, seed=2)
    assert a[1]["latency_ms_kernels"] != b[1]["latency_ms_kernels"]


def test_catalog_copied_without_kernels_uses_the_repositorys(tmp_path, monkeypatch):
    shutil.copytree(DEVICES, tmp_path / "devices")
    monkeypatch.setenv("SLIMEDGE_FIRMWARE_CONFIGS", str(tmp_path))
    assert kernels_dir() == ROOT / "firmware_configs" / "kernels"
    assert load_catalog()["nrf52840"].kernels.key == "cortex-m4-cmsis-nn"


@pytest.mark.parametrize("cost_model", ["per-layer", "authors"])
def test_the_plan_names_the_files_its_latencies_came_from(cost_model):
    """plan.json's `cost_inputs`: every board file (devices and aggregator) and, under the
    per-layer model, every kernel profile they name, each with its sha256."""
    from slimedge.artifacts import sha256_file
    from slimedge.plan.context import Constraints, PlanContext
    from slimedge.plan.planner import make_plan
    from slimedge.plan.search import SearchSettings
    from slimedge.plan.synthetic import SyntheticSpec, synthetic_evaluators

    fleet = four_board_fleet()
    spec = SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=60, n_test=60, n_train=300,
                         views=4, dim=8, classes=3, hidden=8, difficulty=0.5)
    evs = synthetic_evaluators(spec)
    ctx = PlanContext.build(evs["val"], fleet, demo_levels((0, 3, 6, 9)),
                            Constraints(min_accuracy=0.3),
                            ladder={"path": "synthetic", "model_hash": "synthetic",
                                    "dataset_hash": "synthetic"}, cost_model=cost_model)
    plan = make_plan(ctx, SearchSettings(pop=8, generations=2, seed=0), plot=False,
                     baselines=False, fit_contingency=False).plan
    inputs = plan["cost_inputs"]
    assert set(inputs["boards"]) == {*FOUR_BOARDS, "jetson_orin_nano"}
    for b, e in inputs["boards"].items():
        assert e["sha256"] == sha256_file(CATALOG[b].path)
        assert e["kernels"] == (CATALOG[b].kernels.key if CATALOG[b].kernels else None)
    named = {e["kernels"] for e in inputs["boards"].values()} - {None}
    if cost_model == "per-layer":
        assert set(inputs["kernel_profiles"]) == named and named
        for key, e in inputs["kernel_profiles"].items():
            assert e["sha256"] == sha256_file(kernels_dir() / Path(e["path"]).name)
            assert load_profile(e["path"]).key == key
    else:
        assert inputs["kernel_profiles"] == {}  # the authors' formula reads no profile
