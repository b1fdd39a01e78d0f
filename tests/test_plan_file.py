"""The plan file: JSON round trip, Pareto CSV/PNG beside it, loading into the C++ contingency
table, errors that name the field; the `slimedge plan` handler on a ladder on disk."""

from __future__ import annotations

import argparse
import csv
import json
import sys

import numpy as np
import pytest

from slimedge import _core
from slimedge.plan import PlanError, PlanInfeasibleError
from slimedge.plan.commands import add_plan_options, plan
from slimedge.plan.context import Constraints
from slimedge.plan.failures import sets_up_to
from slimedge.plan.plan_file import (
    PlanFileError,
    contingency_table,
    read_plan,
    side_paths,
    write_plan,
)
from slimedge.plan.planner import make_plan
from slimedge.plan.search import SearchSettings
from slimedge.plan.synthetic import SyntheticSpec, synthetic_context, write_synthetic_ladder

FAST = SearchSettings(pop=16, generations=8, seed=1)


@pytest.fixture(scope="module")
def outcome():
    ctx = synthetic_context(Constraints(min_accuracy=0.75, k_failures=2))
    return make_plan(ctx, FAST)


def test_plan_round_trips_and_loads_into_the_core_table(outcome, tmp_path):
    path = tmp_path / "plan.json"
    written = write_plan(path, outcome.plan, outcome.pareto_rows, outcome.png)
    back = read_plan(path)
    assert back == json.loads(json.dumps(written))
    assert back["format"] == "slimedge-plan" and back["format_version"] == 1
    table = contingency_table(back)
    assert isinstance(table, _core.ContingencyTable)
    assert table.views == 4
    assert sorted(table.keys()) == sorted(sets_up_to(4, 2).tolist())
    for row in back["contingency"]["rows"]:
        np.testing.assert_array_equal(table.get(row["dead_mask"]),
                                      np.asarray(row["weights"], np.float32))
    # the table drives the core's redistribution for a failure set it holds
    live = np.array([False, True, True, True])
    got = _core.redistribute(np.ones(4, np.float32), live, "table", table)
    np.testing.assert_array_equal(got, table.get(1))


def test_pareto_files_sit_beside_the_plan(outcome, tmp_path):
    path = tmp_path / "out" / "myplan.json"
    written = write_plan(path, outcome.plan, outcome.pareto_rows, outcome.png)
    csv_path, png_path = side_paths(path)
    assert csv_path.name == "myplan.pareto.csv" and png_path.name == "myplan.pareto.png"
    assert written["pareto"] == {"csv": csv_path.name, "png": png_path.name,
                                 "points": len(outcome.pareto_rows)}
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(outcome.pareto_rows) >= 1
    chosen = [r for r in rows if r["chosen"] == "True"]
    assert len(chosen) == 1
    levels = [v["level_index"] for v in written["views"]]
    assert chosen[0]["levels"] == "-".join(map(str, levels))
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_fields_are_present(outcome):
    views = outcome.plan["views"]
    assert [v["view"] for v in views] == [0, 1, 2, 3]
    for v in views:
        assert {"device", "level_index", "level", "board", "format", "total_ms",
                "ram_margin_bytes", "storage_margin_bytes"} <= set(v)
    pred = outcome.plan["predicted"]
    assert {"latency_ms", "latency_breakdown", "model_bytes", "val", "test"} <= set(pred)
    assert set(pred["latency_breakdown"]["devices"]) == {"cam00", "cam01", "cam02", "cam03"}


@pytest.mark.parametrize("edit, field", [
    (lambda p: p.update(format="other"), "format"),
    (lambda p: p.update(format_version=9), "format_version"),
    (lambda p: p["views"][2].update(level_index=99), r"views\[2\].level_index"),
    (lambda p: p["views"][1].pop("device"), r"views\[1\].device"),
    (lambda p: p["contingency"]["rows"][0].update(weights=[1.0]), r"rows\[0\].weights"),
    (lambda p: p["contingency"]["rows"][3].update(dead_mask=0), r"rows\[3\].dead_mask"),
])
def test_damaged_plan_names_the_field(outcome, tmp_path, edit, field):
    path = tmp_path / "plan.json"
    written = write_plan(path, outcome.plan, outcome.pareto_rows, None)
    edit(written)
    path.write_text(json.dumps(written))
    with pytest.raises(PlanFileError, match=field):
        read_plan(path)


def test_table_rejects_weight_on_a_dead_view(outcome, tmp_path):
    bad = write_plan(tmp_path / "plan.json", outcome.plan, outcome.pareto_rows, None)
    assert bad["contingency"]["rows"][0]["dead_views"] == [0]
    bad["contingency"]["rows"][0]["weights"] = [1.0, 1.0, 1.0, 1.0]  # view 0 is dead
    with pytest.raises(PlanFileError, match="contingency table"):
        contingency_table(bad)


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(PlanFileError, match="no such plan file"):
        read_plan(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlanFileError, match="not valid JSON"):
        read_plan(tmp_path / "bad.json")


# --------------------------------------------------------------------------- the handler


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder") / "ladder"
    spec = SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=90, n_test=60, n_train=400,
                         views=12, dim=16, classes=4, hidden=16, difficulty=0.5)
    write_synthetic_ladder(root, spec)
    return root


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_plan_options(p)
    p.add_argument("--json", action="store_true")
    return p.parse_args(list(argv))


def test_handler_writes_plan_for_a_catalog_fleet(ladder, tmp_path):
    out = tmp_path / "plan.json"
    summary = plan(parse("--fleet", "mixed12", "--ladder", str(ladder), "--min-accuracy", "0.6",
                         "--k-failures", "1", "--out", str(out), "--pop", "12",
                         "--generations", "3", "--json"))
    for key in ("levels", "latency_ms", "accuracy", "expected_accuracy", "worst_k_accuracy",
                "baselines", "energy_mj", "cost_model", "link_latency", "down"):
        assert key in summary
    assert len(summary["levels"]) == 12
    assert summary["energy_mj"] > 0 and summary["down"] == []
    assert summary["link_latency"] == "expected"
    assert summary["cost_model"] in ("per-layer", "mac", "authors")
    assert set(summary["baselines"]) == {"unpruned", "uniform", "uniform_fit",
                                         "importance_only", "device_only", "published"}
    for b in summary["baselines"].values():
        assert b["energy_mj"] > 0 and isinstance(b["fits"], bool)
    written = read_plan(out)
    assert written["ladder"]["path"] == str(ladder)
    assert written["ladder"]["model_hash"] and written["ladder"]["dataset_hash"]
    assert written["fleet"]["name"] == "mixed12"
    assert [v["level_index"] for v in written["views"]] == summary["levels"]
    assert contingency_table(written).views == 12
    assert summary["pareto_csv"].endswith("plan.pareto.csv")
    header = (tmp_path / "plan.pareto.csv").read_text().splitlines()[0]
    assert "energy_mj" in header.split(",")


def test_handler_options_reach_the_plan(ladder, tmp_path):
    out = tmp_path / "plan.json"
    summary = plan(parse("--fleet", "mixed12", "--ladder", str(ladder), "--min-accuracy", "0.6",
                         "--out", str(out), "--generations", "1", "--cost-model", "authors",
                         "--link-latency", "worst", "--down", "cam05,cam11", "--prefer",
                         "energy", "--no-plot", "--json"))
    assert summary["cost_model"] == "authors" and summary["link_latency"] == "worst"
    assert summary["down"] == ["cam05", "cam11"] and summary["prefer"] == "energy"
    written = read_plan(out)
    assert written["cost_model"] == "authors" and written["down"] == ["cam05", "cam11"]
    downs = {v["device"] for v in written["views"] if v.get("down")}
    assert downs == {"cam05", "cam11"}
    with pytest.raises(PlanError, match="down: fleet 'mixed12' has no device 'cam99'"):
        plan(parse("--fleet", "mixed12", "--ladder", str(ladder), "--min-accuracy", "0.6",
                   "--out", str(tmp_path / "p.json"), "--down", "cam99"))
    with pytest.raises(PlanError, match="--down: expected device ids"):
        plan(parse("--fleet", "mixed12", "--ladder", str(ladder), "--min-accuracy", "0.6",
                   "--out", str(tmp_path / "p.json"), "--down", "cam01,,cam02"))


def test_handler_infeasible_is_machine_readable(ladder, tmp_path):
    out = tmp_path / "plan.json"
    with pytest.raises(PlanInfeasibleError) as info:
        plan(parse("--fleet", "mixed12", "--ladder", str(ladder), "--min-accuracy", "0.999",
                   "--out", str(out), "--pop", "8", "--generations", "2", "--no-baselines"))
    assert info.value.exit_code == 3
    assert info.value.summary["infeasible"][0]["constraint"] == "min_accuracy"
    json.dumps(info.value.summary)  # serializable as the --json answer
    assert not out.exists()  # nothing written


def test_handler_rejects_a_fleet_of_other_size(ladder, tmp_path):
    from slimedge.devices import load_catalog
    from slimedge.plan.context import PlanContext
    from slimedge.plan.synthetic import make_fleet

    cat = load_catalog()
    fleet = make_fleet([cat["rpi4b"]] * 3, [0.05] * 3, name="three")
    with pytest.raises(PlanError, match=r"fleet 'three' has 3 views .* has 12 views"):
        PlanContext.from_ladder(ladder, fleet, Constraints())
    with pytest.raises(PlanError, match="--objectives"):
        plan(parse("--fleet", "mixed12", "--ladder", str(ladder), "--min-accuracy", "0.5",
                   "--out", str(tmp_path / "p.json"), "--objectives", "latency"))


def test_dask_option_without_dask_is_a_clear_error(ladder, tmp_path, monkeypatch):
    # The host extra installs dask; a device-only or trimmed install may not have it.
    # A None entry in sys.modules makes that import fail as it would there.
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(PlanError, match="dask.distributed is not installed"):
        plan(parse("--fleet", "mixed12", "--ladder", str(ladder), "--min-accuracy", "0.5",
                   "--out", str(tmp_path / "p.json"), "--dask", "tcp://127.0.0.1:8786"))
    assert not (tmp_path / "p.json").exists()
