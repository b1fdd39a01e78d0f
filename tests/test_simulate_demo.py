"""The demo's simulate stage and its report section, on a synthetic ladder in a work folder."""

from __future__ import annotations

from pathlib import Path

from slimedge import demo
from slimedge.pipeline import Stage, WorkFolder
from slimedge.plan.synthetic import SyntheticSpec, write_synthetic_ladder
from slimedge.report import write_report

SPEC = SyntheticSpec(fractions=(0.0, 0.5, 0.9), n_val=60, n_test=60, n_train=300, views=3,
                     dim=16, classes=3, hidden=16, difficulty=0.5)


def test_demo_simulate_stage_and_report_show_the_ratio_cdf(tmp_path, monkeypatch):
    work = WorkFolder(tmp_path / "work")

    def ladder(out: Path) -> dict:
        write_synthetic_ladder(out, SPEC)
        return {"files_hash": "synthetic"}

    assert work.run(Stage("ladder", "ladder", {"spec": str(SPEC)}, ladder)).ok
    monkeypatch.setitem(demo.SIMULATE_SCENARIOS, True, 1)
    outcome = work.run(demo._simulate_stage(work, True, 1, False))
    assert outcome.status == "ran", outcome.reason
    assert outcome.record["scenarios"] == 2
    folder = work.path("simulate")
    for name in ("results.parquet", "summary.json", "simulate.md", "ratio_cdf.png"):
        assert (folder / name).is_file()
    assert "random fleets" in demo._brief(outcome)
    again = work.run(demo._simulate_stage(work, True, 1, False))
    assert again.status == "skipped"
    record = write_report(work, tmp_path / "report", ["simulate"])
    assert record["sections"] == ["simulate"]
    page = (tmp_path / "report" / "index.md").read_text()
    assert "## Random fleets" in page and "| catalog | per-layer | **plan** |" in page
    assert "![latency ratio CDF](simulate_ratio_cdf.png)" in page
    assert (tmp_path / "report" / "simulate_ratio_cdf.png").is_file()
