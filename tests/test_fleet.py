"""Fleet files: every fleet loads against the catalog, overrides apply with their sources, and
each kind of mistake is reported with the file and the field path."""

from __future__ import annotations

import argparse
import copy
from collections import Counter
from pathlib import Path

import pytest
import yaml

from slimedge.devices import DeviceConfigError, fleets_dir, load_catalog, load_fleet
from slimedge.devices.commands import add_fleet_options, show_fleet

FLEETS = fleets_dir()
FLEET_FILES = sorted(FLEETS.glob("*.yaml"))
MiB = 2**20


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.mark.parametrize("path", FLEET_FILES, ids=lambda p: p.stem)
def test_fleet_file_loads(path: Path, catalog) -> None:
    fleet = load_fleet(path, catalog)
    assert fleet.name == path.stem
    assert fleet.views >= 1 and fleet.devices
    mapping = fleet.view_to_devices()
    assert sorted(mapping) == list(range(fleet.views))
    if not fleet.allow_unseen_views:
        assert all(mapping.values())
    for device in fleet.devices:
        assert device.board_id in catalog
        assert 0.0 <= device.failure_probability <= 1.0
        assert device.board.model_memory_bytes > 0
        for field_path in device.overrides:
            assert device.board.source_of(field_path).startswith("override (")
    if fleet.aggregator.kind == "board":
        assert fleet.aggregator.board is catalog[fleet.aggregator.name]


def test_required_fleets_exist() -> None:
    assert {p.stem for p in FLEET_FILES} >= {"pi4x12", "mixed12", "published3class"}


def test_pi4x12(catalog) -> None:
    fleet = load_fleet(FLEETS / "pi4x12.yaml", catalog)
    assert len(fleet.devices) == 12 and fleet.views == 12
    assert {d.board_id for d in fleet.devices} == {"rpi4b"}
    assert fleet.view_to_devices() == {v: (f"cam{v:02d}",) for v in range(12)}
    assert fleet.aggregator.kind == "host"
    # Default failure probability is the board's, with the board's source.
    device = fleet.device("cam03")
    assert device.failure_probability == catalog["rpi4b"].failure.probability
    assert device.failure_source == catalog["rpi4b"].source_of("failure.probability")


def test_mixed12_is_mixed_and_mcus_are_constrained(catalog) -> None:
    fleet = load_fleet(FLEETS / "mixed12.yaml", catalog)
    classes = [d.board.board_class for d in fleet.devices]
    assert len(fleet.devices) == 12
    assert set(classes) == {"mcu", "linux", "edgetpu", "gpu"}
    assert classes.count("mcu") >= 4
    mcus = [d.board for d in fleet.devices if d.board.board_class == "mcu"]
    others = [d.board for d in fleet.devices if d.board.board_class != "mcu"]
    assert max(b.model_memory_bytes for b in mcus) < 512 * 1024
    assert max(b.throughput() for b in mcus) < min(b.throughput() for b in others)
    assert all(len(d.views) == 1 for d in fleet.devices)


def test_published3class_overrides(catalog) -> None:
    fleet = load_fleet(FLEETS / "published3class.yaml", catalog)
    base = catalog["rpi3bplus"]
    classes: Counter = Counter()
    for device in fleet.devices:
        board = device.board
        classes[(board.model_memory_bytes // MiB, round(board.cpu.clock_hz / 1e6))] += 1
        assert "reason" not in device.overrides  # parsed into Override objects
        assert device.overrides["memory.ram_budget"].reason
        # Throughput follows the clock on this CPU-bound board.
        ratio = board.cpu.clock_hz / base.cpu.clock_hz
        assert board.throughput("int8") == pytest.approx(base.throughput("int8") * ratio)
        if ratio != 1:
            assert board.source_of("compute.throughput.int8").startswith("derived:")
    assert classes == {(128, 700): 2, (256, 900): 6, (512, 1400): 4}
    # The catalog board itself is untouched.
    assert catalog["rpi3bplus"].cpu.clock_hz == 1.4e9


# --------------------------------------------------------------------------- errors


def _fleet(tmp_path: Path, mutate, name: str = "mixed12") -> Path:
    raw = copy.deepcopy(yaml.safe_load((FLEETS / f"{name}.yaml").read_text()))
    mutate(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error(path: Path, catalog) -> str:
    with pytest.raises(DeviceConfigError) as info:
        load_fleet(path, catalog)
    message = str(info.value)
    assert str(path) in message, message
    return message


def test_error_unknown_board_suggests(tmp_path: Path, catalog) -> None:
    message = _error(_fleet(tmp_path, lambda raw: raw["devices"][7].update(board="rpi4")), catalog)
    assert "devices[7].board: unknown board 'rpi4' (did you mean 'rpi4b'?)" in message


def test_error_unknown_aggregator_board(tmp_path: Path, catalog) -> None:
    message = _error(
        _fleet(tmp_path, lambda raw: raw.update(aggregator={"board": "jetson_orin"})), catalog
    )
    assert "aggregator.board: unknown board 'jetson_orin'" in message


def test_error_view_seen_by_no_device(tmp_path: Path, catalog) -> None:
    def drop_last(raw):
        raw["devices"].pop()

    message = _error(_fleet(tmp_path, drop_last), catalog)
    assert "devices: view(s) [11] seen by no device" in message

    def allow(raw):
        raw["devices"].pop()
        raw["allow_unseen_views"] = True

    fleet = load_fleet(_fleet(tmp_path, allow), catalog)
    assert fleet.view_to_devices()[11] == ()


def test_error_view_out_of_range(tmp_path: Path, catalog) -> None:
    message = _error(_fleet(tmp_path, lambda raw: raw["devices"][2].update(views=[12])), catalog)
    assert "devices[2].views[0]: view 12 out of range (the fleet has views 0..11)" in message


def test_error_duplicate_device_id(tmp_path: Path, catalog) -> None:
    message = _error(_fleet(tmp_path, lambda raw: raw["devices"][5].update(id="cam01")), catalog)
    assert "devices[5].id: duplicate device id 'cam01' (also devices[1])" in message


def test_error_probability_out_of_range(tmp_path: Path, catalog) -> None:
    def mutate(raw):
        raw["devices"][0]["failure_probability"] = {"value": 1.2, "source": "field study"}

    message = _error(_fleet(tmp_path, mutate), catalog)
    assert "devices[0].failure_probability.value: must lie in [0, 1], got 1.2" in message


def test_failure_probability_override(tmp_path: Path, catalog) -> None:
    def mutate(raw):
        raw["devices"][0]["failure_probability"] = {"value": 0.25, "source": "site survey"}

    device = load_fleet(_fleet(tmp_path, mutate), catalog).device("cam00")
    assert device.failure_probability == 0.25 and device.failure_source == "site survey"


def test_error_unknown_device_field(tmp_path: Path, catalog) -> None:
    message = _error(_fleet(tmp_path, lambda raw: raw["devices"][3].update(veiws=[3])), catalog)
    assert "devices[3].veiws: unknown field (did you mean 'views'?)" in message


def test_error_missing_views(tmp_path: Path, catalog) -> None:
    message = _error(_fleet(tmp_path, lambda raw: raw["devices"][3].pop("views")), catalog)
    assert "devices[3].views: missing" in message


def test_error_override_without_reason(tmp_path: Path, catalog) -> None:
    message = _error(
        _fleet(
            tmp_path,
            lambda raw: raw["devices"][0]["overrides"]["cpu.clock"].pop("reason"),
            "published3class",
        ),
        catalog,
    )
    assert "devices[0].overrides.cpu.clock.reason: missing" in message


def test_error_override_unknown_path(tmp_path: Path, catalog) -> None:
    def mutate(raw):
        raw["devices"][1]["overrides"]["memory.sram"] = {
            "value": 1,
            "unit": "MiB",
            "source": "x",
            "reason": "y",
        }

    message = _error(_fleet(tmp_path, mutate, "published3class"), catalog)
    assert "devices[1].overrides.memory.sram: unknown field" in message


def test_error_override_wrong_unit(tmp_path: Path, catalog) -> None:
    def mutate(raw):
        raw["devices"][0]["overrides"]["memory.ram_budget"]["unit"] = "MHz"

    message = _error(_fleet(tmp_path, mutate, "published3class"), catalog)
    assert "devices[0].overrides.memory.ram_budget.unit: 'MHz' is not a unit of bytes" in message


def test_error_override_budget_above_ram(tmp_path: Path, catalog) -> None:
    def mutate(raw):
        raw["devices"][0]["overrides"]["memory.ram_budget"]["value"] = 4096

    message = _error(_fleet(tmp_path, mutate, "published3class"), catalog)
    assert "devices[0].overrides.memory.ram_budget: 4096 MiB exceeds memory.ram (1 GiB)" in message


def test_error_clock_override_on_accelerator_needs_throughput(tmp_path: Path, catalog) -> None:
    def mutate(raw):
        raw["devices"][9]["overrides"] = {
            "cpu.clock": {"value": 1, "unit": "GHz", "source": "x", "reason": "underclocked"}
        }

    message = _error(_fleet(tmp_path, mutate), catalog)
    assert "devices[9].overrides.cpu.clock: an accelerator board's throughput" in message


def test_explicit_throughput_override(tmp_path: Path, catalog) -> None:
    def mutate(raw):
        raw["devices"][9]["overrides"] = {
            "compute.throughput.int8": {
                "value": 300,
                "unit": "GMAC/s",
                "source": "bench",
                "reason": "thermal",
            }
        }

    device = load_fleet(_fleet(tmp_path, mutate), catalog).device("cam09")
    assert device.board.throughput("int8") == 300e9
    assert "reason: thermal" in device.board.source_of("compute.throughput.int8")


def test_error_missing_fleet_field_and_bad_views(tmp_path: Path, catalog) -> None:
    assert "aggregator: missing" in _error(
        _fleet(tmp_path, lambda raw: raw.pop("aggregator")), catalog
    )
    message = _error(_fleet(tmp_path, lambda raw: raw.update(views=0)), catalog)
    assert "views: expected a whole number of views >= 1" in message


# --------------------------------------------------------------------------- CLI handler


def test_show_fleet_handler(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_fleet_options(parser)
    summary = show_fleet(parser.parse_args(["published3class"]))
    assert summary["fleet"] == "published3class" and summary["views"] == 12
    row = summary["devices"][0]
    assert row["board"] == "rpi3bplus" and row["model_memory_bytes"] == 128 * MiB
    assert set(row["overrides"]) == {"memory.ram_budget", "cpu.clock"}
    assert summary["view_to_devices"]["0"] == ["cam00"]
    by_path = show_fleet(parser.parse_args([str(FLEETS / "pi4x12.yaml")]))
    assert len(by_path["devices"]) == 12
    with pytest.raises(DeviceConfigError, match="did you mean 'mixed12'"):
        show_fleet(parser.parse_args(["mixed11"]))
