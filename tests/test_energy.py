"""Energy: the board files' sourced power and radio figures (parsed, validated, with errors
naming file and field), energy per frame and battery life, by hand and through the table."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from slimedge.devices import DeviceConfigError, load_board, load_catalog, load_fleet
from slimedge.devices.catalog import devices_dir
from slimedge.devices.cost import CostModelError, CostTable
from slimedge.devices.energy import battery_life_h, energy_per_frame_mj
from slimedge.devices.fleet import resolve_fleet_path
from slimedge.devices.link import message_bytes

CATALOG = load_catalog()
DEVICES = devices_dir()


# --------------------------------------------------------------------------- board files


@pytest.mark.parametrize("board_id", sorted(CATALOG))
def test_every_board_states_sourced_energy_figures(board_id):
    board = CATALOG[board_id]
    assert 0 < board.power.idle_w <= board.power.active_w
    assert board.link.energy_per_byte_j > 0
    for path in ("power.active", "power.idle", "link.energy_per_byte"):
        source = board.source_of(path)
        assert source.strip(), path
    if board.battery_j is not None:
        assert board.source_of("battery.capacity").startswith(("assumption:", "derived:"))
    if board.link.interval_s is not None:
        assert board.link.interval_s <= board.link.latency_s


def test_energy_values_in_si():
    nrf = CATALOG["nrf52840"]
    assert nrf.power.active_w == pytest.approx(10e-3)
    assert nrf.power.idle_w == pytest.approx(0.1e-3)
    assert nrf.link.energy_per_byte_j == pytest.approx(87e-9)
    assert nrf.battery_j == pytest.approx(7.5 * 3600)
    assert CATALOG["rpi4b"].battery_j is None


def _write(tmp_path: Path, board_id: str, mutate) -> Path:
    raw = copy.deepcopy(yaml.safe_load((DEVICES / f"{board_id}.yaml").read_text()))
    mutate(raw)
    path = tmp_path / f"{board_id}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("board_id", "mutate", "pattern"), [
    ("rpi4b", lambda r: r["power"].pop("active"), r"power\.active: missing"),
    ("esp32s3", lambda r: r["power"].pop("idle"), r"power\.idle: missing"),
    ("rp2350", lambda r: r["link"].pop("energy_per_byte"), r"link\.energy_per_byte: missing"),
    ("rpi5", lambda r: r["link"]["energy_per_byte"].update(unit="nJ"),
     r"link\.energy_per_byte\.unit: 'nJ' is not a unit of energy per byte"),
    ("nrf52840", lambda r: r["battery"]["capacity"].update(unit="mAh"),
     r"battery\.capacity\.unit: 'mAh' is not a unit of energy"),
    ("nrf52840", lambda r: r["battery"]["capacity"].pop("source"),
     r"battery\.capacity\.source: missing"),
    ("stm32h743", lambda r: r["power"]["idle"].update(value=5, unit="W"),
     r"power\.idle: 5 W exceeds power\.active"),
    ("nrf52840", lambda r: r["link"]["interval"].update(value=80),
     r"link\.interval: 80 ms exceeds link\.latency"),
    ("rpi4b", lambda r: r["power"]["active"].update(value=-1), r"power\.active\.value"),
    ("rpi4b", lambda r: r.update(battery={"size": 1}), r"battery\.size: unknown field"),
])
def test_energy_field_errors_name_file_and_field(tmp_path, board_id, mutate, pattern):
    path = _write(tmp_path, board_id, mutate)
    with pytest.raises(DeviceConfigError, match=pattern) as info:
        load_board(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- formulas


def test_energy_per_frame_by_hand():
    nrf = CATALOG["nrf52840"]
    nbytes = message_bytes(128, "cam00")  # 174 B
    # 10 mW x 100 ms = 1 mJ; 87 nJ x 174 B = 0.015138 mJ.
    assert energy_per_frame_mj(nrf, 100.0, nbytes) == pytest.approx(1.0 + 87e-9 * 174 * 1e3)
    # With a 1 s period, idle 0.1 mW over 1000 - 100 - 30 ms = 0.087 mJ more.
    with_idle = energy_per_frame_mj(nrf, 100.0, nbytes, transfer_ms=30.0, frame_period_ms=1000)
    assert with_idle == pytest.approx(1.0 + 0.015138 + 0.1e-3 * 870)
    # A frame longer than the period has no idle remainder.
    assert energy_per_frame_mj(nrf, 2000.0, nbytes, frame_period_ms=1000) == \
        pytest.approx(energy_per_frame_mj(nrf, 2000.0, nbytes))


def test_battery_life_by_hand():
    nrf = CATALOG["nrf52840"]
    # 7.5 Wh = 27 kJ; 1.102 mJ per 1000 ms frame = 1.102 mW -> 27000 / 1.102e-3 s.
    assert battery_life_h(nrf, 1.102, 1000.0) == pytest.approx(27000 / 1.102e-3 / 3600)
    assert battery_life_h(CATALOG["rpi4b"], 5000.0, 1000.0) == math.inf
    assert battery_life_h(nrf, np.array([1.0, 2.0]), 1000.0).shape == (2,)
    with pytest.raises(CostModelError, match="frame period must be a time > 0"):
        battery_life_h(nrf, 1.0, 0)


@pytest.mark.parametrize("link_latency", ["expected", "worst"])
def test_table_energy_and_battery_life(link_latency):
    levels = [{"level": p, "macs": int(4e6 * (1 - p) ** 2) + 1000, "tflite_int8_bytes": 20_000,
               "tflm_arena_bytes": 30_000, "peak_activation_bytes": 20_000,
               "tflite_bytes": {f: 20_000 for f in ("int8", "dynamic", "float16", "float32")}}
              for p in (0.0, 0.5, 0.9)]
    fleet = load_fleet(resolve_fleet_path("mixed12"))
    table = CostTable.build(levels, fleet, 128, cost_model="mac", link_latency=link_latency)
    energy = table.energy_mj()
    assert energy.shape == table.inference_ms.shape and np.all(energy > 0)
    assert np.all(np.diff(energy, axis=1) <= 0), "fewer MACs never cost more energy"
    boards = {d.id: d.board for d in fleet.devices}
    for i, dev in enumerate(table.devices):
        b = boards[dev]
        want = b.power.active_w * table.inference_ms[i] \
            + b.link.energy_per_byte_j * table.message_bytes[i] * 1e3
        assert energy[i] == pytest.approx(want)
    period = 1000.0
    life = table.battery_life_h(period)
    with_idle = table.energy_mj(period)
    assert np.all(with_idle >= energy)
    powered = table.battery_powered
    assert powered.any() and not powered.all()  # mixed12 has the nRF52840
    assert np.all(np.isinf(life[~powered]))
    for i in np.flatnonzero(powered):
        b = boards[table.devices[i]]
        assert life[i] == pytest.approx(b.battery_j / (with_idle[i] / period) / 3600)
