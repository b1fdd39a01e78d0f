"""Per-device cost model: host calibration, board latency, transfer, memory fit, the vectorized
table, system latency, and the fit_cost_model tool on a synthetic ladder manifest."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from slimedge.devices import load_catalog, load_fleet, resolve_fleet_path
from slimedge.devices.cost import (
    ACTIVATION_ELEMENT_BYTES,
    RUNTIME_RESIDENT_BYTES,
    CostModelError,
    CostTable,
    aggregator_ms,
    assess,
    calibrate_host,
    head_macs,
    inference_ms,
    least_pruned_fitting_level,
    message_bytes,
    no_fit_message,
    transfer_ms,
)

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9)
MiB = 2**20
# Ground truth of the synthetic host: t = T0 + MACs / R (+ bytes / B).
T0_MS, R_HOST, B_HOST = 0.05, 20e9, 0.4e9


def synthetic_levels(*, bytes_term: bool = False, noise: float = 0.0, seed: int = 0,
                     arena0: int = 150_000, flash0: int = 90_000) -> list[dict]:
    """Levels shaped like a real ladder's: MACs and weights shrink ~(1-p)^2, activations
    ~(1-p); host latencies follow the ground truth above (times (1 + noise))."""
    rng = np.random.default_rng(seed)
    out = []
    for p in FRACTIONS:
        keep = 1.0 - p
        macs = int(28_000_000 * keep**2 + 600_000 * keep + 50_000)
        params = int(78_000 * keep**2 + 2_000)
        # Model bytes carry a per-file constant and per-layer metadata, so they are not
        # proportional to MACs (which lets the bytes term be identified).
        tfl = {"int8": int(params * 1.1 + 7_000 + 4_000 * math.sin(7 * p)),
               "float16": params * 2 + 9_000, "dynamic": params + 9_500,
               "float32": params * 4 + 9_000}
        act = int(80_000 * keep + 4_000)
        lat = {}
        for fmt, size in tfl.items():
            t = T0_MS + macs / R_HOST * 1e3 + (size / B_HOST * 1e3 if bytes_term else 0.0)
            lat[fmt] = t * (1.0 + noise * rng.standard_normal())
        out.append({
            "level": p, "achieved": p, "params": params, "macs": macs,
            "fp32_weight_bytes": params * 4, "int8_weight_bytes": params,
            "tflite_int8_bytes": tfl["int8"] + int(flash0 - 90_000),
            "tflm_arena_bytes": int(arena0 * keep + 12_000), "peak_activation_bytes": act,
            "latency_ms_int8": lat["int8"],
            "tflite_bytes": {**tfl, "int8": tfl["int8"] + int(flash0 - 90_000)},
            "latency_ms": lat, "val_accuracy": 0.9 - 0.2 * p,
        })
    return out


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def mixed12(catalog):
    return load_fleet(resolve_fleet_path("mixed12"), catalog)


@pytest.fixture(scope="module")
def published(catalog):
    return load_fleet(resolve_fleet_path("published3class"), catalog)


# --------------------------------------------------------------------------- host fit


def test_host_fit_recovers_two_term_model():
    fit = calibrate_host(synthetic_levels(), "int8")
    assert fit.terms == "macs"
    assert fit.t0_ms == pytest.approx(T0_MS, rel=1e-6)
    assert fit.r_host_mac_per_s == pytest.approx(R_HOST, rel=1e-6)
    assert fit.ms_per_byte == 0.0
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.max_rel_error < 1e-6 and fit.warning is None
    assert [r["level"] for r in fit.residuals] == list(FRACTIONS)
    assert all(abs(r["residual_ms"]) < 1e-9 for r in fit.residuals)


def test_host_fit_keeps_bytes_term_only_when_it_earns_its_place():
    levels = synthetic_levels(bytes_term=True)
    fit = calibrate_host(levels, "int8")
    assert fit.terms == "macs+bytes"
    assert fit.t0_ms == pytest.approx(T0_MS, rel=1e-5)
    assert fit.r_host_mac_per_s == pytest.approx(R_HOST, rel=1e-5)
    assert fit.b_host_byte_per_s == pytest.approx(B_HOST, rel=1e-5)
    assert fit.loo_rel_rms["macs+bytes"] < 0.9 * fit.loo_rel_rms["macs"]
    forced = calibrate_host(levels, "int8", terms="macs")
    assert forced.terms == "macs" and forced.max_rel_error > fit.max_rel_error


def test_host_fit_with_noise_reports_r2_and_residuals():
    levels = synthetic_levels(noise=0.02, seed=3)
    fit = calibrate_host(levels, "float32", host={"cpu": "test"})
    assert fit.terms == "macs"
    assert fit.r_host_mac_per_s == pytest.approx(R_HOST, rel=0.15)
    assert 0.95 < fit.r2 < 1.0
    measured = np.array([e["latency_ms"]["float32"] for e in levels])
    pred = fit.predict(np.array([e["macs"] for e in levels]))
    assert fit.max_rel_error == pytest.approx(np.max(np.abs((measured - pred) / measured)))
    for r, m, p in zip(fit.residuals, measured, pred, strict=True):
        assert r["measured_ms"] == m and r["residual_ms"] == pytest.approx(m - p)
    d = fit.to_dict()
    assert d["host"] == {"cpu": "test"} and d["terms"] == "macs" and len(d["residuals"]) == 5
    json.dumps(d)  # JSON-ready


def test_flat_host_latency_is_flagged():
    levels = synthetic_levels()
    for e in levels:
        e["latency_ms"]["int8"] = 0.27
        del e["latency_ms_int8"]
    fit = calibrate_host(levels, "int8")
    assert math.isnan(fit.r2) and "does not vary" in fit.warning
    assert fit.t0_ms == pytest.approx(0.27) and fit.r_host_mac_per_s == math.inf
    assert fit.fixed_share(levels[0]["macs"]) == pytest.approx(1.0)


def test_host_fit_errors_name_the_level_and_field():
    levels = synthetic_levels()
    del levels[2]["latency_ms"]["float16"]
    with pytest.raises(CostModelError, match=r"levels\[2\] \(level 0.5\): field "
                       r"'latency_ms'\['float16'\] is missing"):
        calibrate_host(levels, "float16")
    levels[1]["macs"] = -3
    with pytest.raises(CostModelError, match=r"levels\[1\].*'macs' must be > 0"):
        calibrate_host(levels, "int8")
    with pytest.raises(CostModelError, match="at least 2 levels"):
        calibrate_host(synthetic_levels()[:1])
    with pytest.raises(CostModelError, match="'int4'"):
        calibrate_host(synthetic_levels(), "int4")


# --------------------------------------------------------------------------- one board


def test_inference_is_overhead_plus_macs_over_throughput(catalog):
    level = synthetic_levels()[0]
    board = catalog["rpi4b"]
    for fmt in board.formats:
        want = (board.compute.overhead_s + level["macs"] / board.throughput(fmt)) * 1e3
        assert inference_ms(level, board, fmt) == pytest.approx(want, rel=1e-12)
    assert inference_ms(level, board) == inference_ms(level, board, board.preferred_format)


def test_more_pruning_is_never_slower_on_any_board(catalog):
    levels = synthetic_levels()
    assert all(a["macs"] > b["macs"] for a, b in zip(levels[:-1], levels[1:], strict=True))
    for board in catalog.values():
        for fmt in board.formats:
            times = [inference_ms(e, board, fmt) for e in levels]
            assert all(a >= b for a, b in zip(times[:-1], times[1:], strict=True)), (board.id, fmt, times)
            assert times[-1] >= board.compute.overhead_s * 1e3


@pytest.mark.parametrize("board_id, fmt", [("jetson_nano", "int8"), ("esp32s3", "float32"),
                                           ("coral_devboard", "float16")])
def test_format_the_board_does_not_accept_is_named(catalog, board_id, fmt):
    level = synthetic_levels()[0]
    pattern = rf"board '{board_id}' does not accept format '{fmt}'"
    with pytest.raises(CostModelError, match=pattern):
        inference_ms(level, catalog[board_id], fmt)
    with pytest.raises(CostModelError, match=pattern):
        assess(level, catalog[board_id], feature_dim=64, fmt=fmt)
    with pytest.raises(CostModelError, match=pattern):
        aggregator_ms(1000, catalog[board_id], fmt=fmt)


def test_transfer_time_matches_hand_arithmetic(catalog):
    board = catalog["nrf52840"]  # BLE: 1327.5 kbit/s, 50 ms connection interval
    # Header 37 B (magic 4, version 1, dtype 1, view 2, seq 8, time 8, scale 4, zero point 4,
    # D 4, id length 1) + "cam00" 5 B + 128 int8 features + CRC-32 4 B = 174 B.
    assert message_bytes(128, "cam00") == 174
    want = 174 * 8 / 1_327_500 * 1e3 + 50.0  # worst: a full 50 ms interval
    assert transfer_ms(board, 128, "cam00", link_latency="worst") == pytest.approx(want,
                                                                                  rel=1e-12)
    # Expected: half an interval less (the message waits 25 ms on average).
    assert transfer_ms(board, 128, "cam00") == pytest.approx(want - 25.0, rel=1e-12)
    # A longer id and float32 features cost their bytes.
    assert message_bytes(128, "camera-0007") == 174 + 6
    assert message_bytes(128, "cam00", "float32") == 174 + 3 * 128
    eth = catalog["rpi4b"]  # 1 Gbit/s, 0.5 ms
    assert transfer_ms(eth, 256) == pytest.approx((37 + 5 + 256 + 4) * 8 / 1e9 * 1e3 + 0.5)
    with pytest.raises(CostModelError, match="feature_dim"):
        transfer_ms(board, 0)
    with pytest.raises(CostModelError, match="device ''"):
        transfer_ms(board, 8, "")


# --------------------------------------------------------------------------- memory fit


def test_mcu_arena_over_budget_does_not_fit_and_says_so(catalog, mixed12):
    nrf = catalog["nrf52840"]
    budget = nrf.model_memory_bytes  # 256 KiB x (1 - 0.25)
    assert budget == 196_608
    # Level 0 needs more arena than the nRF52840 has; the rest fit.
    levels = synthetic_levels(arena0=212_480 - 12_000)
    assert levels[0]["tflm_arena_bytes"] == 212_480
    a = assess(levels[0], nrf, feature_dim=128, device_id="cam01")
    assert not a.fits and a.binding == "arena"
    assert a.ram_margin_bytes == 196_608 - 212_480
    assert a.storage_margin_bytes == nrf.model_storage_bytes - levels[0]["tflite_bytes"]["int8"]
    assert "cam01 (nrf52840): level 0.0 needs 212,480 B of arena, has 196,608 B" \
        == a.details["message"]
    table = CostTable.build(levels, mixed12, 128)
    i = table.device_index("cam01")
    assert table.fits[i].tolist() == [False, True, True, True, True]
    assert table.message("cam01", 0) == \
        "cam01 (nrf52840): level 0 (0) needs 212,480 B of arena, has 196,608 B"
    assert table.message("cam01", 1) is None
    assert least_pruned_fitting_level(table, "cam01") == 1
    assert least_pruned_fitting_level(table, "cam09") == 0  # Coral: RAM in GiB
    # At exactly the budget it fits (margin 0).
    exact = dict(levels[0], tflm_arena_bytes=budget)
    assert assess(exact, nrf, feature_dim=128).fits


def test_no_level_fits_names_the_most_pruned_level(mixed12):
    levels = synthetic_levels(arena0=2_000_000)  # every arena far above any MCU's SRAM
    table = CostTable.build(levels, mixed12, 128)
    assert least_pruned_fitting_level(table, "cam01") is None
    msg = no_fit_message(table, "cam01")
    need = levels[-1]["tflm_arena_bytes"]
    assert msg == (f"no level fits; cam01 (nrf52840): level 4 (0.9) needs {need:,} B of "
                   f"arena, has 196,608 B")
    assert no_fit_message(table, "cam07") is None  # a Raspberry Pi 4 fits them all


def test_flash_overflow_binds_when_the_model_exceeds_flash(catalog):
    nrf = catalog["nrf52840"]
    flash = nrf.model_storage_bytes  # 1 MiB x (1 - 0.35)
    levels = synthetic_levels(arena0=50_000, flash0=800_000)
    a = assess(levels[0], nrf, feature_dim=64, device_id="cam01")
    size = levels[0]["tflite_bytes"]["int8"]
    assert size > flash and not a.fits and a.binding == "flash"
    assert a.ram_margin_bytes > 0 and a.storage_margin_bytes == flash - size
    assert a.details["message"] == (f"cam01 (nrf52840): level 0.0 needs {size:,} B of flash, "
                                    f"has {flash:,} B")
    # Both over: the larger relative shortfall binds, and the message lists both.
    both = dict(levels[0], tflm_arena_bytes=4 * nrf.model_memory_bytes)
    b = assess(both, nrf, feature_dim=64)
    assert b.binding == "arena" and "of arena" in b.details["message"] \
        and "of flash" in b.details["message"]


def test_hosted_ram_counts_model_activations_and_runtime(catalog, published):
    levels = synthetic_levels()
    entry = dict(levels[0], tflite_bytes=dict(levels[0]["tflite_bytes"], int8=100_000_000))
    table = CostTable.build([entry, *levels[1:]], published, 64)
    small, large = table.device_index("cam00"), table.device_index("cam03")  # 128 / 512 MiB
    need = 100_000_000 + entry["peak_activation_bytes"] * 1 + RUNTIME_RESIDENT_BYTES["linux"]
    assert table.ram_needed[small, 0] == need
    assert table.ram_budget[small] == 128 * MiB and table.ram_budget[large] == 512 * MiB
    assert table.ram_margin[small, 0] == 128 * MiB - need and not table.fits[small, 0]
    assert table.binding[small, 0] == "ram" and table.fits[large, 0]
    assert "needs" in table.message("cam00", 0) and "(model 100,000,000 + activations" in \
        table.message("cam00", 0)
    # Float formats hold float32 activations: 4 bytes per element.
    pi4 = catalog["rpi4b"]
    a = assess(levels[0], pi4, feature_dim=64, fmt="float32")
    assert a.details["ram_parts_bytes"]["activations"] == \
        levels[0]["peak_activation_bytes"] * ACTIVATION_ELEMENT_BYTES["float32"]
    assert a.storage_margin_bytes == pi4.model_storage_bytes - levels[0]["tflite_bytes"]["float32"]
    # Over storage as well: the larger relative shortfall (RAM here) binds.
    huge = dict(levels[0], tflite_bytes=dict(levels[0]["tflite_bytes"], int8=5_000_000_000))
    h = assess(huge, pi4, feature_dim=64)
    assert h.binding == "ram" and h.storage_margin_bytes < 0


def test_missing_mcu_field_is_named(catalog):
    entry = synthetic_levels()[1]
    del entry["tflm_arena_bytes"]
    with pytest.raises(CostModelError, match=r"level 0.25.*'tflm_arena_bytes' is missing"):
        assess(entry, catalog["esp32s3"], feature_dim=32)
    assert assess(entry, catalog["rpi4b"], feature_dim=32).fits  # hosted boards do not need it


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize("fleet_name", ["mixed12", "published3class", "pi4x12"])
def test_cost_table_agrees_with_assess_elementwise(catalog, fleet_name):
    fleet = load_fleet(resolve_fleet_path(fleet_name), catalog)
    levels = synthetic_levels(arena0=300_000, flash0=700_000)
    table = CostTable.build(levels, fleet, 96)
    assert table.fits.shape == (len(fleet.devices), len(levels))
    assert table.fits.dtype == bool and table.ram_margin.dtype == np.int64
    for i, device in enumerate(fleet.devices):
        for j, entry in enumerate(levels):
            a = assess(entry, device.board, feature_dim=96, device_id=device.id)
            assert a.inference_ms == table.inference_ms[i, j]
            assert a.transfer_ms == table.transfer_ms[i]
            assert a.total_ms == table.total_ms[i, j]
            assert a.fits == table.fits[i, j]
            assert a.ram_margin_bytes == table.ram_margin[i, j]
            assert a.storage_margin_bytes == table.storage_margin[i, j]
            assert (a.binding or "") == table.binding[i, j]
            assert a.format == table.formats[i] == device.board.preferred_format
            assert table.assessment(device.id, j).total_ms == a.total_ms


def test_cost_table_rejects_unordered_levels_and_unknown_format_overrides(mixed12):
    levels = synthetic_levels()
    with pytest.raises(CostModelError, match="ascending"):
        CostTable.build(levels[::-1], mixed12, 64)
    with pytest.raises(CostModelError, match="no device 'cam99'"):
        CostTable.build(levels, mixed12, 64, formats={"cam99": "int8"})
    with pytest.raises(CostModelError, match="'jetson_nano' does not accept format 'int8'"):
        CostTable.build(levels, mixed12, 64, formats={"cam11": "int8"})
    table = CostTable.build(levels, mixed12, 64, formats={"cam11": "float32"})
    assert table.formats[11] == "float32"


def test_aggregator_time_on_a_board_and_on_a_host(catalog, mixed12):
    macs = head_macs(12, 128, 128 * 40)
    assert macs == 12 * 128 + 128 * 40
    orin = catalog["jetson_orin_nano"]
    want = (orin.compute.overhead_s + macs / orin.throughput("float16")) * 1e3
    assert aggregator_ms(macs, mixed12.aggregator) == pytest.approx(want)
    assert aggregator_ms(macs, orin) == pytest.approx(want)
    fit = calibrate_host(synthetic_levels(), "float32")
    host = load_fleet(resolve_fleet_path("pi4x12"), catalog).aggregator
    assert aggregator_ms(macs, host, host_fit=fit) == pytest.approx(T0_MS + macs / R_HOST * 1e3)
    with pytest.raises(CostModelError, match="aggregator 'gateway' is a host"):
        aggregator_ms(macs, host)
    with pytest.raises(CostModelError, match="head MACs"):
        aggregator_ms(-1, orin)


# --------------------------------------------------------------------------- the tool


def _tool():
    spec = importlib.util.spec_from_file_location("fit_cost_model",
                                                  ROOT / "tools" / "fit_cost_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_ladder(root: Path, levels: list[dict]) -> Path:
    root.mkdir()
    manifest = {"format": "slimedge-ladder", "format_version": 1, "views": 12,
                "feature_dim": 128, "pool_mode": "max", "dataset_hash": "d0d0",
                "model_hash": "beefcafe", "host": {"cpu": "synthetic", "litert": "2.3.0"},
                "head_classifier_macs": 128 * 40 + 40, "levels": levels}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_fit_cost_model_tool_on_a_synthetic_ladder(tmp_path, capsys, catalog):
    levels = synthetic_levels(arena0=212_480 - 12_000)
    ladder = _write_ladder(tmp_path / "ladder", levels)
    tool = _tool()
    assert tool.main([str(ladder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_hash"] == "beefcafe" and out["host"]["cpu"] == "synthetic"
    assert [f["format"] for f in out["host_fits"]] == ["int8", "dynamic", "float16", "float32"]
    int8 = out["host_fits"][0]
    assert int8["r_host_mac_per_s"] == pytest.approx(R_HOST, rel=1e-6)
    assert int8["r2"] == pytest.approx(1.0) and len(int8["residuals"]) == len(levels)
    boards = {b["board"]: b for b in out["boards"]}
    assert set(boards) == set(catalog)
    assert boards["nrf52840"]["fits"][0] is False and boards["nrf52840"]["binding"][0] == "arena"
    assert boards["rpi4b"]["inference_ms"][2] == pytest.approx(
        inference_ms(levels[2], catalog["rpi4b"]))
    agg = out["aggregator"]
    assert agg["head_macs"] == 12 * 128 + 128 * 40 + 40
    assert agg["boards_ms"]["rpi4b"] == pytest.approx(aggregator_ms(agg["head_macs"],
                                                                    catalog["rpi4b"]))
    assert agg["host_fit_format"] == "float32"
    assert agg["host_ms"] == pytest.approx(T0_MS + agg["head_macs"] / R_HOST * 1e3)
    assert tool.main([str(ladder)]) == 0
    text = capsys.readouterr().out
    assert "beefcafe" in text and "host fit int8: terms macs" in text and "R² 1.0000" in text
    assert "nrf52840" in text and "!a" in text and "aggregator: head 6,696 MACs" in text


def test_fit_cost_model_tool_reports_a_bad_ladder(tmp_path, capsys):
    tool = _tool()
    assert tool.main([str(tmp_path / "none")]) == 2
    assert "no such ladder" in capsys.readouterr().err


def test_cost_model_imports_no_device_side_code():
    """`slimedge.devices` sits below `slimedge.runtime`: the message size comes from
    `slimedge.wire`, which the runtime's encoder also uses."""
    import subprocess
    import sys

    code = ("import sys, slimedge.devices.cost, slimedge.devices.energy; "
            "print([m for m in sys.modules if m.startswith('slimedge.runtime')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_message_size_equals_the_encoded_message():
    from slimedge.runtime.frames import FeatureMessage, encode

    for dim, device, dtype in ((128, "cam00", "int8"), (7, "pi-ü", "float32")):
        msg = FeatureMessage(view=0, seq=0, timestamp_ns=0, device=device,
                             features=np.zeros(dim, dtype),
                             scale=1.0 if dtype == "int8" else None,
                             zero_point=0 if dtype == "int8" else None)
        assert message_bytes(dim, device, dtype) == len(encode(msg))
