"""Device catalog: every board file loads, every number has a source, and each kind of mistake
in a board file is reported with the file and the field path."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import yaml

from slimedge.devices import (
    CLASSES,
    DeviceConfigError,
    devices_dir,
    load_board,
    load_catalog,
    parse_quantity,
)
from slimedge.devices.commands import (
    add_list_options,
    add_show_options,
    list_boards,
    show_board,
)
from slimedge.devices.units import QuantityError

DEVICES = devices_dir()
BOARD_FILES = sorted(DEVICES.glob("*.yaml"))
REQUIRED_BOARDS = (
    "esp32s3",
    "stm32h743",
    "nrf52840",
    "rp2350",
    "portenta_h7",
    "rpi_zero2w",
    "rpi3bplus",
    "rpi4b",
    "rpi5",
    "coral_devboard",
    "coral_usb_pi4",
    "jetson_nano",
    "jetson_orin_nano",
)


def test_catalog_directory_resolves_to_repository() -> None:
    assert DEVICES == Path(__file__).resolve().parents[1] / "firmware_configs" / "devices"
    assert len(BOARD_FILES) >= 12


@pytest.mark.parametrize("path", BOARD_FILES, ids=lambda p: p.stem)
def test_board_file_loads_with_a_source_for_every_number(path: Path) -> None:
    board = load_board(path)
    assert board.id == path.stem
    assert board.board_class in CLASSES
    assert board.preferred_format in board.formats
    assert set(board.compute.throughput) == set(board.formats)
    assert all(v > 0 for v in board.compute.throughput.values())
    assert board.model_memory_bytes > 0 and isinstance(board.model_memory_bytes, int)
    assert board.model_storage_bytes > 0 and isinstance(board.model_storage_bytes, int)
    assert 0.0 <= board.failure.probability <= 1.0
    # Every number in the file is a quantity with a non-empty source.
    raw = yaml.safe_load(path.read_text())
    numbers = list(_numeric_leaves(raw))
    assert numbers, "a board file without numbers"
    for field_path in numbers:
        source = board.source_of(field_path)
        assert source.strip(), f"{path.name}: {field_path} has no source"
    assert set(numbers) == set(board.quantities)
    for derived in ("memory.model_memory", "memory.model_storage"):
        assert board.source_of(derived).strip()


def _numeric_leaves(node: object, prefix: str = ""):
    """Field paths of every `{value: ...}` mapping in a raw board file."""
    if isinstance(node, dict):
        if "value" in node:
            yield prefix
            return
        for key, child in node.items():
            yield from _numeric_leaves(child, f"{prefix}.{key}" if prefix else str(key))


def test_catalog_spans_every_class_and_required_boards() -> None:
    catalog = load_catalog()
    assert {b.board_class for b in catalog.values()} == set(CLASSES)
    for board_id in REQUIRED_BOARDS:
        assert board_id in catalog
    # Microcontrollers and the Edge TPU run int8 only.
    for board in catalog.values():
        if board.board_class in ("mcu", "edgetpu"):
            assert board.formats == ("int8",)
    # All boards share one failure window, so fleets can combine their probabilities.
    assert len({b.failure.window_s for b in catalog.values()}) == 1


def test_loaded_values_are_si() -> None:
    esp = load_board(DEVICES / "esp32s3.yaml")
    assert esp.memory.sram == 512 * 1024
    assert esp.memory.flash == 8 * 2**20
    assert esp.cpu.clock_hz == 240e6
    assert esp.compute.throughput["int8"] == pytest.approx(132.6e6)
    assert esp.compute.overhead_s == pytest.approx(1e-3)
    assert esp.link.bandwidth_bps == 20e6
    assert esp.model_memory_bytes == int(512 * 1024 * 0.6)
    assert "0.4" in esp.source_of("memory.model_memory")
    pi = load_board(DEVICES / "rpi4b.yaml")
    assert pi.memory.ram == 4 * 2**30 and pi.model_memory_bytes == 2 * 2**30
    assert pi.link.bandwidth_bps == 1e9
    assert pi.failure.window_s == 30 * 86400
    assert pi.source_of("memory.model_memory").startswith("memory.ram_budget")


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("value", "unit", "kind", "si"),
    [
        (512, "KB", "bytes", 512_000),
        (512, "KiB", "bytes", 524_288),
        (1, "MB", "bytes", 1_000_000),
        (1, "MiB", "bytes", 1_048_576),
        (2, "GB", "bytes", 2_000_000_000),
        (2, "GiB", "bytes", 2 * 2**30),
        (4, "TOPS", "throughput", 2e12),  # 2 operations per MAC
        (4, "TOP/s", "throughput", 2e12),
        (1, "GMAC/s", "throughput", 1e9),
        (300, "Mbit/s", "bandwidth", 3e8),
        (2.5, "ms", "time", 2.5e-3),
        (40, "us", "time", 4e-5),
        (30, "d", "duration", 2_592_000),
        (250, "mW", "power", 0.25),
        (1.4, "GHz", "frequency", 1.4e9),
    ],
)
def test_unit_conversion(value: float, unit: str, kind: str, si: float) -> None:
    qty = parse_quantity({"value": value, "unit": unit, "source": "test"}, kind)
    assert qty.si == pytest.approx(si)
    if kind == "bytes":
        assert isinstance(qty.si, int)


def test_unitless_fraction_and_range() -> None:
    assert parse_quantity({"value": 0.3, "source": "s"}, "fraction").si == 0.3
    assert parse_quantity({"value": 1, "unit": "1", "source": "s"}, "probability").si == 1.0
    with pytest.raises(QuantityError, match=r"\[0, 1\)"):
        parse_quantity({"value": 1.0, "source": "s"}, "fraction")
    with pytest.raises(QuantityError, match="did you mean 'KiB'"):
        parse_quantity({"value": 1, "unit": "kib", "source": "s"}, "bytes")


# --------------------------------------------------------------------------- schema errors


def _write(tmp_path: Path, board_id: str, mutate) -> Path:
    """A copy of a real board file with one mistake; same file name so `id` still matches."""
    raw = yaml.safe_load((DEVICES / f"{board_id}.yaml").read_text())
    raw = copy.deepcopy(raw)
    mutate(raw)
    path = tmp_path / f"{board_id}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error(path: Path) -> str:
    with pytest.raises(DeviceConfigError) as info:
        load_board(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


def test_error_unknown_field_suggests(tmp_path: Path) -> None:
    def mutate(raw):
        raw["memory"]["sramm"] = raw["memory"].pop("sram")

    message = _error(_write(tmp_path, "esp32s3", mutate))
    assert "memory.sramm: unknown field (did you mean 'sram'?)" in message


def test_error_unknown_top_level_field(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "rpi4b", lambda raw: raw.update(runtim="litert")))
    assert ": runtim: unknown field (did you mean 'runtime'?)" in message


def test_error_wrong_unit(tmp_path: Path) -> None:
    message = _error(
        _write(tmp_path, "esp32s3", lambda raw: raw["memory"]["sram"].update(unit="MHz"))
    )
    assert "esp32s3.yaml: memory.sram.unit: 'MHz' is not a unit of bytes" in message
    assert "B, KB, KiB, MB, MiB, GB, GiB" in message


def test_error_missing_source(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "rpi5", lambda raw: raw["link"]["bandwidth"].pop("source")))
    assert "link.bandwidth.source: missing or empty" in message


def test_error_empty_source(tmp_path: Path) -> None:
    def mutate(raw):
        raw["compute"]["throughput"]["int8"]["source"] = "  "

    message = _error(_write(tmp_path, "nrf52840", mutate))
    assert "compute.throughput.int8.source: missing or empty" in message


def test_error_missing_required_field(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "rp2350", lambda raw: raw["memory"].pop("flash")))
    assert "memory.flash: missing (required for class 'mcu')" in message


def test_error_missing_required_linux_field(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "rpi3bplus", lambda raw: raw["memory"].pop("ram_budget")))
    assert "memory.ram_budget: missing (required for class 'linux')" in message


def test_error_wrong_type(tmp_path: Path) -> None:
    message = _error(
        _write(tmp_path, "rpi4b", lambda raw: raw["cpu"]["clock"].update(value="fast"))
    )
    assert "cpu.clock.value: expected a number, got str 'fast'" in message


def test_error_wrong_type_formats(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "rpi4b", lambda raw: raw.update(formats="int8")))
    assert "formats: expected a non-empty list" in message


def test_error_negative_value(tmp_path: Path) -> None:
    message = _error(
        _write(tmp_path, "stm32h743", lambda raw: raw["link"]["latency"].update(value=-1))
    )
    assert "link.latency.value: must not be negative, got -1" in message


def test_error_probability_above_one(tmp_path: Path) -> None:
    def mutate(raw):
        raw["failure"]["probability"]["value"] = 1.5

    message = _error(_write(tmp_path, "rpi5", mutate))
    assert "failure.probability.value: must lie in [0, 1], got 1.5" in message


def test_error_mcu_claims_float32_litert(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "esp32s3", lambda raw: raw.update(runtime="litert")))
    assert "runtime: 'litert' is not a runtime of class 'mcu' boards (allowed: tflite-micro)" in (
        message
    )

    def float_mcu(raw):
        raw["formats"] = ["int8", "float32"]
        raw["compute"]["throughput"]["float32"] = {"value": 1, "unit": "MMAC/s", "source": "x"}

    message = _error(_write(tmp_path, "esp32s3", float_mcu))
    assert "formats[1]: 'float32' is not a format class 'mcu' boards run (allowed: int8)" in message


def test_error_edgetpu_float(tmp_path: Path) -> None:
    message = _error(
        _write(tmp_path, "coral_devboard", lambda raw: raw.update(formats=["float16"]))
    )
    assert "formats[0]: 'float16' is not a format class 'edgetpu' boards run" in message


def test_error_linux_field_on_mcu(tmp_path: Path) -> None:
    def mutate(raw):
        raw["memory"]["ram"] = {"value": 1, "unit": "GiB", "source": "x"}

    message = _error(_write(tmp_path, "nrf52840", mutate))
    assert "memory.ram: not a field of class 'mcu' boards" in message


def test_error_throughput_does_not_match_formats(tmp_path: Path) -> None:
    def drop_throughput(raw):
        raw["compute"]["throughput"].pop("float16")

    message = _error(_write(tmp_path, "rpi4b", drop_throughput))
    assert "compute.throughput.float16: missing (the board accepts float16" in message

    def drop_format(raw):
        raw["formats"] = ["float32"]
        raw["preferred_format"] = "float32"

    message = _error(_write(tmp_path, "jetson_nano", drop_format))
    assert "compute.throughput.float16: the board does not accept float16" in message


def test_error_preferred_format_not_accepted(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "rpi5", lambda raw: raw.update(preferred_format="float64")))
    assert "preferred_format: 'float64' is not among formats" in message


def test_error_id_must_match_file_name(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "rpi5", lambda raw: raw.update(id="rpi6")))
    assert "id: 'rpi6' must equal the file name stem 'rpi5'" in message


def test_error_unknown_class_suggests(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "rpi5", lambda raw: raw.update({"class": "linx"})))
    assert "class: 'linx' is not a board class (did you mean 'linux'?)" in message


def test_error_ram_budget_above_ram(tmp_path: Path) -> None:
    def mutate(raw):
        raw["memory"]["ram_budget"] = {"value": 8, "unit": "GiB", "source": "x"}

    message = _error(_write(tmp_path, "rpi4b", mutate))
    assert "memory.ram_budget: 8 GiB exceeds memory.ram (4 GiB)" in message


def test_error_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("id: broken\nname: [unclosed\n")
    assert "not valid YAML" in _error(bad)
    assert "no such file" in _error(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- catalog location


def test_env_override_and_catalog_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "rpi5.yaml").write_text((DEVICES / "rpi5.yaml").read_text())
    monkeypatch.setenv("SLIMEDGE_FIRMWARE_CONFIGS", str(tmp_path))
    assert list(load_catalog()) == ["rpi5"]
    with pytest.raises(DeviceConfigError, match="no board files"):
        load_catalog(tmp_path)
    with pytest.raises(DeviceConfigError, match="no such catalog directory"):
        load_catalog(tmp_path / "nowhere")


def test_source_of_unknown_field_suggests() -> None:
    board = load_board(DEVICES / "rpi4b.yaml")
    with pytest.raises(KeyError, match="did you mean 'cpu.clock'"):
        board.source_of("cpu.clok")


# --------------------------------------------------------------------------- CLI handlers


def _args(adder, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    adder(parser)
    return parser.parse_args(argv)


def test_list_boards_handler() -> None:
    summary = list_boards(_args(add_list_options, []))
    assert summary["count"] == len(BOARD_FILES)
    rows = {row["id"]: row for row in summary["boards"]}
    assert rows["nrf52840"]["sram_bytes"] == 256 * 1024
    assert rows["nrf52840"]["flash_bytes"] == 2**20
    assert rows["rpi4b"]["ram_bytes"] == 4 * 2**30
    assert rows["coral_devboard"]["throughput_mac_per_s"]["int8"] == pytest.approx(547.8e9)
    only_mcu = list_boards(_args(add_list_options, ["--class", "mcu"]))
    assert {row["class"] for row in only_mcu["boards"]} == {"mcu"}
    assert only_mcu["count"] == 5


def test_show_board_handler_lists_sources() -> None:
    shown = show_board(_args(add_show_options, ["jetson_orin_nano"]))
    assert shown["class"] == "gpu"
    fields = shown["fields"]
    assert fields["memory.ram"]["si"] == 8 * 2**30
    assert "YOLOv8n" in fields["compute.throughput.int8"]["source"]
    assert all(entry["source"] for entry in fields.values())
    by_path = show_board(_args(add_show_options, [str(DEVICES / "rp2350.yaml")]))
    assert by_path["id"] == "rp2350"
    with pytest.raises(DeviceConfigError, match="did you mean 'rpi5'"):
        show_board(_args(add_show_options, ["rpi6"]))
