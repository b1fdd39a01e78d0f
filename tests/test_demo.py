"""`slimedge demo --quick` end to end: every stage's artifact at its fixed path, a resumed run
skips what is up to date, and the report covers each stage."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tensorflow")

from slimedge.cli import main  # noqa: E402
from slimedge.demo import _fleet_files, _model_on_disk  # noqa: E402
from slimedge.ladder.build import model_hash  # noqa: E402
from slimedge.pipeline import WorkFolder  # noqa: E402


def test_quick_demo_runs_every_stage_then_skips_them(tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["demo", "--quick", "--work", str(work), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    stages = first["stages"]
    assert all(s["status"] == "ran" for s in stages.values())
    for sub in ("dataset", "model", "ladder", "importance.json", "plan.json",
                "deploy/manifest.json", "deploy/manifest.sig", "report/index.md"):
        assert (work / sub).exists(), sub
    report = (work / "report" / "index.md").read_text()
    for heading in ("## Dataset", "## Model", "## Pruning ladder", "## View importance",
                    "## Plan for the mixed fleet", "## Deployment (signed, verified)"):
        assert heading in report
    assert "head failout stage" in report
    # The model stage records the hash of the model it wrote (the ladder's input).
    record = json.loads((work / "model" / "train.json").read_text())
    assert stages["model"]["model_hash"] == model_hash(record) == stages["ladder"]["model_hash"]
    for png in ("contact_sheet.png", "ladder_costs.png", "importance.png", "vs_failed.png"):
        assert (work / "report" / png).stat().st_size > 0

    assert main(["demo", "--quick", "--work", str(work), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert all(s["status"] == "skipped" for s in second["stages"].values())
    assert second["stages"]["ladder"]["files_hash"] == stages["ladder"]["files_hash"]
    # The deployment the demo wrote verifies from the command line.
    assert main(["verify", str(work / "deploy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_ladder_input_is_the_model_on_disk(tmp_path):
    """A model replaced under the work folder (by hand, or by a run whose stage record was
    stale) changes the ladder stage's input, so the ladder is rebuilt."""
    work = WorkFolder(tmp_path / "work")
    assert _model_on_disk(work) is None
    model = work.path("model")
    model.mkdir(parents=True)
    (model / "train.json").write_text(json.dumps({"files": {"branch.keras": "a", "head.keras": "b"}}))
    first = _model_on_disk(work)
    (model / "train.json").write_text(json.dumps({"files": {"branch.keras": "a", "head.keras": "c"}}))
    assert first is not None and _model_on_disk(work) not in (None, first)


def test_plan_input_follows_the_fleet_and_board_files(tmp_path, monkeypatch):
    """Editing a board of the catalog (not only renaming the fleet) makes the plan stale."""
    import shutil

    from slimedge.devices.catalog import firmware_configs_dir

    copy = tmp_path / "firmware_configs"
    shutil.copytree(firmware_configs_dir(), copy)
    monkeypatch.setenv("SLIMEDGE_FIRMWARE_CONFIGS", str(copy))
    before = _fleet_files()
    assert "fleets/mixed12.yaml" in before and "devices/rpi4b.yaml" in before
    board = copy / "devices" / "rpi4b.yaml"
    board.write_text(board.read_text() + "\n# edited\n")
    after = _fleet_files()
    assert after["devices/rpi4b.yaml"] != before["devices/rpi4b.yaml"]
    assert {k: v for k, v in after.items() if k != "devices/rpi4b.yaml"} == {
        k: v for k, v in before.items() if k != "devices/rpi4b.yaml"}
