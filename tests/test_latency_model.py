"""Latency model forms: the fits and their fit-quality rule (used for the kernel profiles and
the host-timing check), the three cost models ("mac", "per-layer", "authors"), the link's
expected and worst wait, on every catalog board. The profiles themselves:
tests/test_kernel_profiles.py."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from slimedge.devices import load_catalog, load_fleet, resolve_fleet_path
from slimedge.devices.calibration import (
    FORM_GAIN,
    choose_form,
    fit_kernel_set,
    fit_kernel_sets,
)
from slimedge.devices.cost import (
    COST_MODELS,
    CostModelError,
    CostTable,
    default_cost_model,
    make_cost_model,
)
from slimedge.devices.kernel_profiles import load_profiles
from slimedge.devices.latency_model import AuthorsModel, CostModel, mac_ms
from slimedge.devices.link import LINK_LATENCIES, transfer_ms, wait_ms

FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CATALOG = load_catalog()


def layered_levels(truth: str, *, noise: float = 0.01, seed: int = 0) -> list[dict]:
    """Levels of a 4-conv branch whose channels shrink by (1 - p), with per-operator work and
    latencies under each kernel set from a known ground truth:

    - "per-layer": 0.01 ms per op + conv MACs at 10 GMAC/s + pooled elements at 20 M/s (the
      pooling term shrinks like (1 - p), the MACs like (1 - p)^2: not MAC-linear);
    - "mac": 0.05 ms + MACs at 10 GMAC/s;
    - "flat": 0.1 ms whatever the work.
    Every kernel set carries the same truth; `noise` is relative, seeded."""
    rng = np.random.default_rng(seed)
    out = []
    for p in FRACTIONS:
        c = max(2, round(32 * (1 - p)))
        convs = [24 * 24 * 9 * 1 * c, 12 * 12 * 9 * c * c, 6 * 6 * 9 * c * c, 3 * 3 * 9 * c * c]
        pools = [24 * 24 * c, 12 * 12 * c, 6 * 6 * c]
        layers = [{"op": "CONV_2D", "kind": "conv", "macs": m, "out_elements": m // 9}
                  for m in convs]
        layers += [{"op": "MAX_POOL_2D", "kind": "pool", "macs": e, "out_elements": e // 4}
                   for e in pools]
        layers.append({"op": "FULLY_CONNECTED", "kind": "dense", "macs": 16 * c,
                       "out_elements": 16})
        layers.append({"op": "RESHAPE", "kind": "other", "macs": 0, "out_elements": 16})
        macs = sum(x["macs"] for x in layers if x["kind"] in ("conv", "dense"))
        if truth == "per-layer":
            t = 0.01 * len(layers) + sum(convs) / 10e9 * 1e3 + sum(pools) / 20e6 * 1e3
        elif truth == "mac":
            t = 0.05 + macs / 10e9 * 1e3
        else:
            t = 0.1
        lat = {k: t * (1 + noise * rng.standard_normal()) for k in ("xnnpack", "reference")}
        out.append({"level": p, "macs": macs, "params": 30 * c * c, "val_accuracy": 0.9,
                    "tflite_int8_bytes": 20_000, "layers": layers,
                    "latency_ms_kernels": lat, "latency_ms_int8": lat["xnnpack"],
                    "tflm_arena_bytes": 30_000, "peak_activation_bytes": 20_000,
                    "tflite_bytes": {f: 20_000 for f in ("int8", "dynamic", "float16",
                                                         "float32")}})
    return out


# --------------------------------------------------------------------------- the fit rule


@pytest.mark.parametrize(("truth", "form"), [("per-layer", "per-layer"), ("mac", "mac"),
                                             ("flat", "board")])
def test_rule_picks_the_form_of_the_ground_truth(truth, form):
    fit = fit_kernel_set(layered_levels(truth), "reference")
    assert fit.form == form, fit.reason
    assert set(fit.fits) == {"mac", "per-layer"}
    if form == "per-layer":
        layer, mac = fit.fits["per-layer"], fit.fits["mac"]
        assert layer.loo_rel_rms < FORM_GAIN * mac.loo_rel_rms
        # Within the 1 % noise everywhere; MAC-linear misses the pooling term at some level.
        # (Coefficients are not asserted: conv MACs and output elements move together.)
        assert layer.max_rel_error < 0.05 < mac.max_rel_error
    if form == "board":
        assert fit.chosen is None


def test_rule_without_layers_or_with_too_few_levels_stays_mac():
    levels = layered_levels("per-layer")
    no_layers = [{k: v for k, v in e.items() if k != "layers"} for e in levels]
    fit = fit_kernel_set(no_layers, "reference")
    assert (fit.form, set(fit.fits)) == ("mac", {"mac"})
    assert "no per-layer data" in fit.reason
    few = fit_kernel_set(levels[::3], "reference")  # 4 levels, 5 per-layer columns
    assert few.form == "mac" and "too few levels" in few.reason
    assert math.isnan(few.fits["per-layer"].loo_rel_rms)


def test_choose_form_needs_a_mac_slope():
    fits = dict(fit_kernel_set(layered_levels("mac"), "reference").fits)
    flat = fits["mac"].__class__(**{**fits["mac"].__dict__, "coef": (0.1, 0.0)})
    assert choose_form({**fits, "mac": flat})[0] == "board"


def test_fit_kernel_sets_covers_the_sets_every_level_timed():
    levels = layered_levels("mac")
    assert set(fit_kernel_sets(levels)) == {"xnnpack", "reference"}
    del levels[3]["latency_ms_kernels"]["xnnpack"]
    assert set(fit_kernel_sets(levels)) == {"reference"}


@pytest.mark.parametrize(("mutate", "pattern"), [
    (lambda e: e["layers"][0].update(kind="attention"), r"levels\[2\].*layers\[0\]: kind"),
    (lambda e: e["layers"][1].update(macs=-1), r"'macs' must be >= 0"),
    (lambda e: e.update(layers=[]), r"levels\[2\].*'layers' must be a non-empty list"),
    (lambda e: e["latency_ms_kernels"].update(reference=0), r"levels\[2\].*must be > 0"),
])
def test_bad_calibration_data_names_level_and_field(mutate, pattern):
    levels = copy.deepcopy(layered_levels("mac"))
    mutate(levels[2])
    with pytest.raises(CostModelError, match=pattern):
        fit_kernel_set(levels, "reference")


def test_unknown_kernel_set_and_cost_model_are_refused():
    levels = layered_levels("mac")
    with pytest.raises(CostModelError, match="kernel set 'cmsis'"):
        fit_kernel_set(levels, "cmsis")
    with pytest.raises(CostModelError, match=r"cost model 'roofline'.*per-layer, mac, authors"):
        make_cost_model("roofline", levels, CATALOG.values())


# --------------------------------------------------------------------------- the cost models


def test_default_cost_model_follows_the_per_operator_work():
    levels = layered_levels("mac")
    assert default_cost_model(levels) == "per-layer"
    untimed = [{k: v for k, v in e.items() if k != "latency_ms_kernels"} for e in levels]
    assert default_cost_model(untimed) == "per-layer"  # host timing plays no part
    bare = [{k: v for k, v in e.items() if k != "layers"} for e in levels]
    assert default_cost_model(bare) == "mac"


@pytest.mark.parametrize("board_id", sorted(CATALOG))
def test_every_model_times_every_board(board_id):
    board = CATALOG[board_id]
    levels = layered_levels("per-layer")
    macs = np.array([e["macs"] for e in levels], float)
    for name in COST_MODELS:
        model = make_cost_model(name, levels, CATALOG.values())
        assert isinstance(model, CostModel) and model.name == name
        t = model.inference_ms(board)
        assert t.shape == (len(levels),) and np.all(np.isfinite(t)) and np.all(t > 0)
        assert np.all(np.diff(t) <= 1e-12), f"{name}: pruning never slows a level down"
    mac = make_cost_model("mac", levels, CATALOG.values()).inference_ms(board)
    assert mac == pytest.approx(mac_ms(macs, board, board.preferred_format))
    # per-layer: the board figure sets the full branch, the board's kernel profile the shape.
    per_layer = make_cost_model("per-layer", levels, CATALOG.values())
    t = per_layer.inference_ms(board)
    assert t[0] == pytest.approx(mac[0])
    if board.kernels is None:
        assert per_layer.form(board) == "board" and t == pytest.approx(mac)
        return
    profile = load_profiles()[board.kernels.key]
    assert per_layer.form(board) == profile.form
    shape = profile.instructions(levels)
    assert t == pytest.approx(mac[0] * shape / shape[0])


def test_per_layer_ignores_what_the_host_timed():
    flat, slow = layered_levels("flat"), layered_levels("per-layer")
    for a, b in zip(flat, slow, strict=True):
        assert a["latency_ms_kernels"] != b["latency_ms_kernels"]
    for board in CATALOG.values():
        assert make_cost_model("per-layer", flat, [board]).inference_ms(board) == \
            pytest.approx(make_cost_model("per-layer", slow, [board]).inference_ms(board))


def test_authors_formula_by_hand():
    levels = layered_levels("mac")
    boards = [CATALOG["nrf52840"], CATALOG["rpi4b"], CATALOG["coral_devboard"]]
    model = make_cost_model("authors", levels, boards)
    assert isinstance(model, AuthorsModel)
    slow, mid, fast = (b.throughput() for b in boards)
    assert model.perf(boards[0]) == 0.0 and model.perf(boards[2]) == 1.0
    perf_mid = math.log(mid / slow) / math.log(fast / slow)
    assert model.perf(boards[1]) == pytest.approx(perf_mid)
    p = np.array(FRACTIONS)
    assert model.inference_ms(boards[0]) == pytest.approx(300 * np.exp(-2 * p))
    assert model.inference_ms(boards[2]) == pytest.approx(100 * np.exp(-2 * p))
    assert model.inference_ms(boards[1]) == pytest.approx(
        100 * np.exp(-2 * p) * (1 + 2 * (1 - perf_mid)))
    # One board alone is the best of its set.
    assert make_cost_model("authors", levels, boards[:1]).perf(boards[0]) == 1.0


def test_cost_table_records_model_link_and_forms():
    levels = layered_levels("per-layer")
    fleet = load_fleet(resolve_fleet_path("mixed12"))
    tables = {name: CostTable.build(levels, fleet, 128, cost_model=name) for name in COST_MODELS}
    for name, table in tables.items():
        assert table.cost_model == name and table.link_latency == "expected"
        assert table.total_ms == pytest.approx(table.inference_ms + table.transfer_ms[:, None])
    forms = dict(zip(tables["per-layer"].boards, tables["per-layer"].forms, strict=True))
    assert forms["nrf52840"] == "per-layer"  # Cortex-M4 CMSIS-NN: the per-layer fit
    assert forms["rpi4b"] == "mac"  # Cortex-A72 XNNPACK: MAC-linear fits better
    assert forms["jetson_nano"] == "board"  # no kernel profile
    assert set(tables["mac"].forms) == {"board"}
    # Memory does not depend on the cost model.
    assert np.array_equal(tables["mac"].fits, tables["authors"].fits)
    assert CostTable.build(levels, fleet, 128).cost_model == "per-layer"  # the default
    model = make_cost_model("mac", levels, [d.board for d in fleet.devices])
    assert CostTable.build(levels, fleet, 128, cost_model=model).cost_model == "mac"


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize("board_id", sorted(CATALOG))
def test_link_expected_and_worst(board_id):
    board = CATALOG[board_id]
    worst = transfer_ms(board, 128, link_latency="worst")
    expected = transfer_ms(board, 128, link_latency="expected")
    if board.link.interval_s is None:
        assert expected == worst
    else:
        assert worst - expected == pytest.approx(board.link.interval_s / 2 * 1e3)
    assert wait_ms(board, "worst") == pytest.approx(board.link.latency_s * 1e3)
    assert 0 <= wait_ms(board, "expected") <= wait_ms(board, "worst")


def test_ble_waits_half_an_interval_on_average():
    board = CATALOG["nrf52840"]
    assert board.link.medium == "ble" and board.link.interval_s == pytest.approx(0.05)
    assert wait_ms(board, "expected") == pytest.approx(25.0)
    levels = layered_levels("mac")
    fleet = load_fleet(resolve_fleet_path("mixed12"))
    tabs = {k: CostTable.build(levels, fleet, 128, cost_model="mac", link_latency=k)
            for k in LINK_LATENCIES}
    row = [b for b in tabs["worst"].boards].index("nrf52840")
    assert tabs["worst"].transfer_ms[row] - tabs["expected"].transfer_ms[row] == \
        pytest.approx(25.0)
    assert np.array_equal(tabs["worst"].transfer_ms_expected, tabs["expected"].transfer_ms)
    with pytest.raises(CostModelError, match="link latency 'typical'"):
        CostTable.build(levels, fleet, 128, link_latency="typical")


# --------------------------------------------------------------------------- the tool


def _tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "fit_cost_model.py"
    spec = importlib.util.spec_from_file_location("fit_cost_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_tool_prints_ratios_per_kernel_set_and_form(tmp_path, capsys):
    import json

    levels = layered_levels("per-layer")
    root = tmp_path / "ladder"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({
        "format": "slimedge-ladder", "format_version": 1, "views": 12, "feature_dim": 128,
        "pool_mode": "max", "dataset_hash": "d0d0", "model_hash": "beefcafe",
        "host": {"cpu": "synthetic"}, "levels": levels}))
    tool = _tool()
    assert tool.main([str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost_model"] == "per-layer" and out["link_latency"] == "expected"
    fits = out["kernel_fits"]
    assert set(fits) == {"xnnpack", "reference"}
    ref = fits["reference"]
    assert ref["form"] == "per-layer" and set(ref["fits"]) == {"mac", "per-layer"}
    want = fit_kernel_set(levels, "reference").fits["per-layer"].predicted_ms
    assert ref["fits"]["per-layer"]["predicted_ms"] == pytest.approx(list(want))
    boards = {b["board"]: b for b in out["boards"]}
    assert boards["nrf52840"]["kernel_profile"] == "cortex-m4-cmsis-nn"
    assert boards["nrf52840"]["form"] == "per-layer"
    counted = {c["profile"]: c for c in out["counted"]}
    m4 = counted["cortex-m4-cmsis-nn"]
    assert m4["chosen"] == "per-layer" and m4["same_ladder"] is False
    assert m4["host_kernel_set"] == "reference" and len(m4["host_speedup"]) == len(levels)
    assert max(abs(r - 1) for r in m4["forms"]["per-layer"]["ratio"]) == pytest.approx(
        m4["forms"]["per-layer"]["max_rel_error"])
    assert tool.main([str(root), "--cost-model", "authors"]) == 0
    text = capsys.readouterr().out
    assert "kernel set reference (runs on: mcu): chosen form per-layer" in text
    assert "cortex-m4-cmsis-nn: firmware_configs/kernels/counted/" in text
    assert "host reference (timed)" in text
    assert "ratio" in text and "cost model authors" in text


# --------------------------------------------------------------------------- a real ladder


def test_ladder_records_calibration_and_layer_macs_match(tiny_ladder):
    from slimedge.ladder.store import level_dir
    from slimedge.profile.layers import layer_costs

    levels = tiny_ladder.manifest["levels"]
    for i, entry in enumerate(levels):
        assert set(entry["latency_ms_kernels"]) == {"xnnpack", "builtin", "reference"}
        # The graph's conv + dense MACs are the Keras count the ladder records.
        ops = entry["layers"]
        assert sum(op["macs"] for op in ops if op["kind"] in ("conv", "depthwise", "dense")) \
            == entry["macs"]
        assert ops == layer_costs(level_dir(tiny_ladder.ladder, i) / "branch_int8.tflite")
    assert default_cost_model(levels) == "per-layer"
    fits = fit_kernel_sets(levels)
    assert set(fits) == {"xnnpack", "builtin", "reference"}
    fleet = load_fleet(resolve_fleet_path("mixed12"))
    table = CostTable.build(levels, fleet, int(tiny_ladder.manifest["feature_dim"]))
    assert table.cost_model == "per-layer" and np.all(table.inference_ms > 0)


def test_fit_tool_measures_an_older_ladder(tiny_ladder, tmp_path, capsys):
    import json
    import shutil

    root = tmp_path / "ladder"
    shutil.copytree(tiny_ladder.ladder, root)
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["levels"]:
        entry.pop("latency_ms_kernels")
        entry.pop("layers")
    (root / "manifest.json").write_text(json.dumps(manifest))
    tool = _tool()
    assert tool.main([str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kernel_fits"] == {}
    assert tool.main([str(root), "--json", "--measure"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration_measured_now"] is True
    assert set(out["kernel_fits"]) == {"xnnpack", "builtin", "reference"}


def _reference_csv(path, levels, scale: float, columns: dict[str, list[float]]):
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["level_index", "level", "macs", *columns])
        for i, e in enumerate(levels):
            w.writerow([i, e["level"], int(e["macs"] * scale), *(c[i] for c in columns.values())])
    return path


def test_fit_tool_checks_against_emulated_board_counts(tmp_path, capsys):
    import json

    levels = layered_levels("per-layer")
    root = tmp_path / "ladder"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({
        "format": "slimedge-ladder", "format_version": 1, "views": 12, "feature_dim": 128,
        "pool_mode": "max", "dataset_hash": "d0d0", "model_hash": "beefcafe",
        "host": {"cpu": "synthetic"}, "levels": levels}))
    counted = [1e6 + 60 * e["macs"] for e in levels]  # instructions: fixed + per MAC
    same = _reference_csv(tmp_path / "cortex-m4" / "same.csv", levels, 1.0,
                          {"instructions_cmsis_nn": counted})
    other = _reference_csv(tmp_path / "aarch64" / "other.csv", levels, 2.0,
                           {"instructions_cortex-a72_xnnpack": counted})
    tool = _tool()
    assert tool.main([str(root), "--json", "--reference-csv", str(same),
                      "--reference-csv", str(other)]) == 0
    checks = json.loads(capsys.readouterr().out)["reference_checks"]
    assert [c["same_ladder"] for c in checks] == [True, False]
    col = checks[0]["columns"][0]
    assert col["cpu"] == "cortex-m4" and col["fit"]["form"] == "mac"
    assert col["fit"]["fits"]["mac"]["max_rel_error"] < 1e-6  # the counts are MAC-linear
    assert col["counted_speedup"] == pytest.approx([counted[0] / c for c in counted])
    assert [b["board"] for b in col["boards"]] == ["nrf52840"]  # the catalog's Cortex-M4
    assert col["boards"][0]["predicted_speedup"][0] == pytest.approx(1.0)
    other_col = checks[1]["columns"][0]
    assert other_col["cpu"] == "cortex-a72" and other_col["boards"] == []
    assert set(other_col["fit"]["fits"]) == {"mac"}  # no per-operator work for another ladder
    assert tool.main([str(root), "--reference-csv", str(same)]) == 0
    text = capsys.readouterr().out
    assert "the same ladder" in text and "nrf52840 (per-layer)" in text
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert tool.main([str(root), "--reference-csv", str(bad)]) == 2
    assert "not a reference CSV" in capsys.readouterr().err
