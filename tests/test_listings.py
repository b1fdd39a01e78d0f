"""`slimedge devices list|show` and `fleet show` in text: tables and fields a person can scan;
`--json` is the handler's summary, unchanged."""

from __future__ import annotations

import argparse
import json

import pytest

from slimedge.cli import main
from slimedge.devices import commands as cmd
from slimedge.devices.catalog import load_catalog
from slimedge.devices.units import format_si


def _run(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_devices_list_is_a_table_with_one_row_per_board(capsys):
    boards = json.loads(_run(capsys, "devices", "list", "--json"))["boards"]
    text = _run(capsys, "devices", "list")
    head, blank, header, *rows = text.splitlines()
    assert head.startswith(f"{len(boards)} boards in ") and blank == ""
    assert header.split() == ["id", "class", "memory", "budget", "int8", "throughput", "link",
                              "failure", "p", "name"]
    assert len(rows) == len(boards)
    for row, board in zip(rows, boards, strict=True):
        assert row.split()[:2] == [board["id"], board["class"]]
        assert format_si(board["model_memory_bytes"], "bytes") in row
        int8 = board["throughput_mac_per_s"].get("int8")
        assert (format_si(int8, "throughput") if int8 else " - ") in row
        assert f"{board['failure_probability']:.3f}" in row and row.endswith(board["name"])
        assert board["link"] in row


def test_devices_list_class_filter_keeps_the_layout(capsys):
    text = _run(capsys, "devices", "list", "--class", "mcu")
    rows = text.splitlines()[3:]
    assert rows and all(r.split()[1] == "mcu" for r in rows)


def test_devices_show_lists_every_field_with_value_and_source(capsys):
    board = load_catalog()["rpi4b"].describe()
    text = _run(capsys, "devices", "show", "rpi4b")
    assert text.startswith(f"rpi4b: {board['name']}\n")
    lines = text.splitlines()
    for path, field in board["fields"].items():
        row = next(i for i, line in enumerate(lines) if line.split()[:1] == [path])
        assert field["readable"] in lines[row]
        # The source follows its value, indented, wrapped: its words are all there.
        source = " ".join(line.strip() for line in lines[row + 1 :]
                          if line.startswith("      "))
        assert field["source"].split()[0] in source
    assert "int8 (preferred)" in text


def test_fleet_show_is_a_table_of_devices(capsys):
    summary = json.loads(_run(capsys, "fleet", "show", "mixed12", "--json"))
    text = _run(capsys, "fleet", "show", "mixed12")
    lines = text.splitlines()
    assert lines[0] == (f"mixed12: {summary['views']} views, {len(summary['devices'])} devices, "
                        f"aggregator {summary['aggregator']['name']} "
                        f"({summary['aggregator']['kind']})")
    header = next(i for i, line in enumerate(lines) if line.startswith("device "))
    rows = lines[header + 1 : header + 1 + len(summary["devices"])]
    for row, d in zip(rows, summary["devices"], strict=True):
        assert row.split()[:4] == [d["id"], d["board"], d["class"],
                                   ",".join(map(str, d["views"]))]
        assert format_si(d["throughput_mac_per_s"], "throughput") in row


@pytest.mark.parametrize(("argv", "handler", "args"), [
    (["devices", "list"], cmd.list_boards, {"catalog": None, "board_class": None}),
    (["devices", "show", "esp32s3"], cmd.show_board, {"board": "esp32s3", "catalog": None}),
    (["fleet", "show", "mixed12"], cmd.show_fleet, {"fleet": "mixed12", "catalog": None}),
])
def test_json_is_the_handlers_summary(capsys, argv, handler, args):
    printed = json.loads(_run(capsys, *argv, "--json"))
    assert printed == json.loads(json.dumps(handler(argparse.Namespace(**args)), default=str))
