"""Work-folder stages: skipped when inputs are unchanged, never half-written on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slimedge.artifacts import atomic_dir, atomic_file, read_versioned_json
from slimedge.errors import DatasetError, StageError
from slimedge.pipeline import Stage, WorkFolder
from slimedge.plan import PlanInfeasibleError


def _writer(calls: list[str], text: str):
    def run(out: Path) -> dict:
        calls.append(text)
        with atomic_dir(out) as tmp:
            (tmp / "value.txt").write_text(text)
        return {"text": text}

    return run


def test_stage_runs_once_then_skips_until_inputs_change(tmp_path):
    work = WorkFolder(tmp_path)
    calls: list[str] = []
    a = work.run(Stage("a", "a", {"p": 1}, _writer(calls, "one")))
    b = work.run(Stage("a", "a", {"p": 1}, _writer(calls, "one")))
    assert (a.status, b.status) == ("ran", "skipped")
    assert b.record == {"text": "one"}
    c = work.run(Stage("a", "a", {"p": 2}, _writer(calls, "two")))
    assert c.status == "ran" and calls == ["one", "two"]
    assert (tmp_path / "a" / "value.txt").read_text() == "two"
    # State survives a new WorkFolder (a resumed run).
    again = WorkFolder(tmp_path).run(Stage("a", "a", {"p": 2}, _writer(calls, "two")))
    assert again.status == "skipped"


def test_missing_output_reruns_even_with_same_inputs(tmp_path):
    work = WorkFolder(tmp_path)
    calls: list[str] = []
    work.run(Stage("a", "a", {"p": 1}, _writer(calls, "x")))
    (tmp_path / "a" / "value.txt").unlink()
    (tmp_path / "a").rmdir()
    assert work.run(Stage("a", "a", {"p": 1}, _writer(calls, "x"))).status == "ran"


def test_failing_stage_keeps_last_good_artifact_and_state(tmp_path):
    work = WorkFolder(tmp_path)
    work.run(Stage("a", "a", {"p": 1}, _writer([], "good")))
    state_before = json.loads((tmp_path / "stages.json").read_text())

    def bad(out: Path) -> dict:
        with atomic_dir(out) as tmp:
            (tmp / "value.txt").write_text("partial")
            raise DatasetError("objects.npy: corrupt")

    with pytest.raises(StageError, match="stage 'a' failed: objects.npy: corrupt"):
        work.run(Stage("a", "a", {"p": 2}, bad))
    assert (tmp_path / "a" / "value.txt").read_text() == "good"
    assert json.loads((tmp_path / "stages.json").read_text()) == state_before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.tmp")]


def test_atomic_file_leaves_target_on_error(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_damaged_state_file_means_rerun_not_crash(tmp_path):
    (tmp_path / "stages.json").write_text("{not json")
    work = WorkFolder(tmp_path)
    assert work.run(Stage("a", "a", {}, _writer([], "v"))).status == "ran"


@pytest.mark.parametrize(("text", "match"), [
    ('{"format": "x", "format_version": 1, "a": 2}', None),
    ("{ nope", r"doc.json: not valid JSON"),
    ("[1, 2]", r"doc.json: field 'format' is not 'x'"),
    ('{"format": "y", "format_version": 1}', r"doc.json: field 'format' is not 'x'"),
    ('{"format": "x", "format_version": 2}',
     r"doc.json: field 'format_version' is 2; this slimedge reads version 1 \(redo it\)"),
])
def test_read_versioned_json(tmp_path, text, match):
    path = tmp_path / "doc.json"
    path.write_text(text)
    if match is None:
        assert read_versioned_json(path, fmt="x", version=1, error=DatasetError)["a"] == 2
    else:
        with pytest.raises(DatasetError, match=match):
            read_versioned_json(path, fmt="x", version=1, error=DatasetError, remedy="redo it")


def _unmet_then_blocked(tmp_path, calls):
    work = WorkFolder(tmp_path)

    def no_plan(out: Path) -> dict:
        calls.append("plan")
        why = "accuracy floor 0.99 above the best reachable 0.90"
        raise PlanInfeasibleError(why, {"infeasible": [{"why": why}], "bound": np.float64(0.5)})

    plan = Stage("plan", "plan.json", {"floor": 0.99}, no_plan, unmet=(PlanInfeasibleError,))
    deploy = Stage("deploy", "deploy", {"plan": 1}, _writer(calls, "deployed"), needs=("plan",))
    other = Stage("other", "other", {}, _writer(calls, "other"))
    return work, plan, deploy, other


def test_unmet_stage_blocks_what_needs_it_and_the_rest_runs(tmp_path):
    calls: list[str] = []
    work, plan, deploy, other = _unmet_then_blocked(tmp_path, calls)
    # Outputs of an earlier run answered other inputs: they must not survive as this run's.
    (tmp_path / "plan.json").write_text("{}")
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "old.txt").write_text("old")
    p = work.run(plan)
    assert (p.status, p.ok) == ("unmet", False)
    assert p.reason == "accuracy floor 0.99 above the best reachable 0.90"
    assert p.detail == {"infeasible": [{"why": p.reason}], "bound": 0.5}
    d = work.run(deploy)
    assert d.status == "blocked" and calls == ["plan"]
    assert d.reason == "needs plan, which is unmet"
    assert work.run(other).status == "ran"
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "deploy").exists()
    state = json.loads((tmp_path / "stages.json").read_text())
    assert (state["plan"]["status"], state["deploy"]["status"]) == ("unmet", "blocked")
    assert WorkFolder(tmp_path).reason("plan") == p.reason

    # Same inputs, same answer: the unmet stage is not searched again (unless forced).
    again = WorkFolder(tmp_path)
    assert again.run(plan).status == "unmet" and calls == ["plan", "other"]
    assert again.run(plan, force=True).status == "unmet" and calls.count("plan") == 2


def test_stage_runs_again_once_what_it_needs_is_met(tmp_path):
    calls: list[str] = []
    work, plan, deploy, _ = _unmet_then_blocked(tmp_path, calls)
    work.run(plan)
    assert work.run(deploy).status == "blocked"
    met = Stage("plan", "plan.json", {"floor": 0.8}, _writer(calls, "plan"))
    assert work.run(met).status == "ran"
    assert work.run(deploy).status == "ran"
    assert work.run(deploy).status == "skipped"


def test_a_need_never_run_blocks(tmp_path):
    out = WorkFolder(tmp_path).run(Stage("b", "b", {}, _writer([], "b"), needs=("a",)))
    assert (out.status, out.reason) == ("blocked", "needs a, which is not run")


def test_an_error_not_declared_unmet_is_a_defect(tmp_path):
    def broken(out: Path) -> dict:
        raise DatasetError("images.npy: truncated")

    stage = Stage("plan", "plan.json", {}, broken, unmet=(PlanInfeasibleError,))
    with pytest.raises(StageError, match="stage 'plan' failed: images.npy: truncated"):
        WorkFolder(tmp_path).run(stage)
    assert not (tmp_path / "stages.json").exists()
