"""`slimedge demo --quick` end to end: every stage's artifact at its fixed path, a resumed run
skips what is up to date, the report covers each stage, library messages go to the logs, the
run ends with its figures, and a plan the data cannot meet blocks the deployment without
stopping the run."""

from __future__ import annotations

import json
from dataclasses import replace

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
                "deploy/manifest.json", "deploy/manifest.sig", "fleet/summary.json",
                "fleet/timeline.png", "report/index.md"):
        assert (work / sub).exists(), sub
    report = (work / "report" / "index.md").read_text()
    for heading in ("## Dataset", "## Model", "## Pruning ladder", "## View importance",
                    "## Plan for the mixed fleet", "## Deployment (signed, verified)",
                    "## The deployment as a local fleet"):
        assert heading in report
    assert "head failout stage" in report
    assert f"model hash `{stages['model']['model_hash'][:12]}` (seed 0), trained on" in report
    # The model stage records the hash of the model it wrote (the ladder's input).
    record = json.loads((work / "model" / "train.json").read_text())
    assert stages["model"]["model_hash"] == model_hash(record) == stages["ladder"]["model_hash"]
    # The fleet stage: every process of the run, one device killed, answers checked.
    assert stages["fleet"]["frames"] == stages["fleet"]["answered"] + stages["fleet"]["lost"]
    assert stages["fleet"]["killed"] and stages["fleet"]["detected_after_s"] is not None
    for png in ("contact_sheet.png", "ladder_costs.png", "importance.png", "vs_failed.png",
                "fleet_timeline.png"):
        assert (work / "report" / png).stat().st_size > 0

    # The figures the run ends with.
    assert first["seed"] == 0 and first["unmet"] == {}
    figures = first["figures"]
    assert figures["float_test_accuracy"] == record["test"]["accuracy"]
    plan = json.loads((work / "plan.json").read_text())
    assert figures["int8_test_accuracy"] == plan["predicted"]["test"]["accuracy"]
    assert figures["latency_ms"] == plan["predicted"]["latency_ms"]
    assert figures["unpruned_latency_ms"] == plan["baselines"]["unpruned"]["latency_ms"]
    assert figures["uniform_latency_ms"] == plan["baselines"]["uniform"]["latency_ms"]
    assert figures["deployment_verified"] is True
    # What TensorFlow and its converter print went to the stage logs.
    assert "fully_quantize" in (work / "logs" / "ladder.log").read_text()
    assert sorted(p.stem for p in (work / "logs").iterdir()) == sorted(
        ["demo", "dataset", "model", "ladder", "importance", "plan", "simulate", "deploy",
         "fleet", "report"])

    # A resumed run in text mode: one line per stage, then the short summary.
    assert main(["demo", "--quick", "--work", str(work)]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith("slimedge demo --quick, seed 0, work folder")
    assert [line.split()[:3] for line in lines[1:]] == [
        [f"[{i}/9]", name, "up"] for i, name in enumerate(
            ["dataset", "model", "ladder", "importance", "plan", "simulate", "deploy", "fleet",
             "report"], 1)]
    assert "test accuracy  float" in out and "at the plan's levels" in out
    assert f"plan latency   {figures['latency_ms']:.1f} ms; unpruned" in out
    assert "deployment     verified (12 devices, signed)" in out
    assert out.rstrip().endswith(str(work / "report" / "index.md"))

    assert main(["demo", "--quick", "--work", str(work), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert all(s["status"] == "skipped" for s in second["stages"].values())
    assert second["stages"]["ladder"]["files_hash"] == stages["ladder"]["files_hash"]
    # The deployment the demo wrote verifies from the command line.
    assert main(["verify", str(work / "deploy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    _infeasible_plan_blocks_deploy_only(work, capsys)


def _infeasible_plan_blocks_deploy_only(work, capsys):
    """Floors no plan can meet (val accuracy 0.9999 with this model): the plan stage is unmet
    with the planner's explanation, deploy is blocked, the report says why, and the run
    exits 0 with both in its summary."""

    from slimedge import demo

    base = json.loads((work / "ladder" / "manifest.json").read_text())["levels"][0]
    rel = 0.9999 / base["val_accuracy"]
    real = demo.settings

    def strict(quick, seed=0):
        s = real(quick, seed)
        return replace(s, plan={**s.plan, "min_accuracy_rel": rel})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "settings", strict)
        assert main(["demo", "--quick", "--work", str(work), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    stages = result["stages"]
    assert [stages[n]["status"] for n in ("ladder", "plan", "deploy", "fleet", "report")] == [
        "skipped", "unmet", "blocked", "blocked", "ran"]
    assert "0.9999" in stages["plan"]["reason"] or "0.999" in stages["plan"]["reason"]
    assert stages["deploy"]["reason"].startswith("needs plan, which is unmet")
    assert set(result["unmet"]) == {"plan", "deploy", "fleet"}
    assert "latency_ms" not in result["figures"] and "float_test_accuracy" in result["figures"]
    assert not (work / "plan.json").exists() and not (work / "deploy").exists()
    assert not (work / "fleet").exists()
    report = (work / "report" / "index.md").read_text()
    assert "## Plan for the mixed fleet: goal not met" in report
    assert "## Deployment: not run" in report and "## Pruning ladder" in report
    assert "| plan | unmet |" in report


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


def test_a_defect_stops_the_run_naming_stage_cause_and_log(tmp_path, capsys, monkeypatch):
    """A stage that fails for a defect (not a goal the data cannot meet): exit non-zero, the
    stage and the cause named, with the log that holds what libraries printed meanwhile; the
    stages after it do not run."""
    import os

    from slimedge import demo
    from slimedge.errors import DatasetError
    from slimedge.pipeline import Stage

    ran = []

    def broken(out):
        os.write(2, b"E0000 a native library complains\n")
        raise DatasetError("images.npy: truncated")

    def after(out):
        ran.append("after")
        return {}

    monkeypatch.setattr(demo, "_stages", lambda work, s, args, progress: [
        ("broken", lambda: Stage("broken", "broken", {}, broken)),
        ("after", lambda: Stage("after", "after", {}, after))])
    work = tmp_path / "work"
    assert main(["demo", "--quick", "--work", str(work)]) == 2
    err = capsys.readouterr().err
    log = work / "logs" / "broken.log"
    assert (f"slimedge demo: error: stage 'broken' failed: images.npy: truncated (library "
            f"messages: {log})") in err
    assert "[1/2] broken" in err and "failed" in err and "native library" not in err
    assert "E0000 a native library complains" in log.read_text()
    assert ran == []
