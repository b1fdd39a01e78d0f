"""Devices with several views (one artifact, branches in series through one interpreter) and
devices listed as down (their views never live): costs, failure sets, the plan, and, on the
tiny ladder, a two-camera fleet planned, exported and verified."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from slimedge.devices import load_catalog, load_fleet, resolve_fleet_path
from slimedge.devices.fleet import Device
from slimedge.plan import PlanError
from slimedge.plan.context import Constraints, PlanContext
from slimedge.plan.failures import views_of
from slimedge.plan.planner import make_plan
from slimedge.plan.search import SearchSettings
from slimedge.plan.synthetic import (
    SyntheticSpec,
    make_fleet,
    synthetic_evaluators,
    synthetic_level_entries,
)

SPEC = SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=120, n_test=60, n_train=600,
                     views=5, dim=16, classes=4, hidden=16, difficulty=0.5, seed=2)


def fleet_with_pairs(boards, pairs, p=0.05):
    """Devices over `boards`; `pairs` maps a device index to the views it sees."""
    cat = load_catalog()
    devices = []
    for i, (b, views) in enumerate(zip(boards, pairs, strict=True)):
        devices.append(Device(f"cam{i:02d}", b, cat[b], tuple(views), p, "test", {}, ""))
    base = make_fleet([cat["rpi4b"]], [p], aggregator=cat["jetson_orin_nano"])
    return dataclasses.replace(base, devices=tuple(devices), views=SPEC.views)


@pytest.fixture(scope="module")
def evs():
    return synthetic_evaluators(SPEC)


def context(evs, fleet, constraints=None, **kw):
    return PlanContext.build(evs["val"], fleet, synthetic_level_entries(SPEC.fractions),
                             constraints or Constraints(), test_evaluator=evs["test"], **kw)


@pytest.fixture(scope="module")
def duo(evs):
    # cam01 (a Pi 4) sees views 1 and 3; cam02 (an ESP32-S3) sees views 2 and 4
    fleet = fleet_with_pairs(["rpi5", "rpi4b", "esp32s3"], [(0,), (1, 3), (2, 4)])
    return context(evs, fleet, Constraints(min_accuracy=0.5, k_failures=1))


@pytest.fixture(scope="module")
def alone(evs):
    cat = load_catalog()
    fleet = make_fleet([cat[b] for b in ("rpi5", "rpi4b", "esp32s3", "rpi4b", "esp32s3")],
                       [0.05] * 5, aggregator=cat["jetson_orin_nano"])
    return context(evs, fleet, Constraints(min_accuracy=0.5, k_failures=1))


def test_a_device_with_two_views_runs_them_in_series_through_one_interpreter(duo, alone):
    c1, c2 = alone.cost, duo.cost
    # time: both branches and both messages
    np.testing.assert_allclose(duo.total_ms[1], 2 * alone.total_ms[1])
    np.testing.assert_allclose(duo.total_ms[3], duo.total_ms[1])
    # memory: the agent loads one engine and invokes it per view: one model, one arena
    np.testing.assert_array_equal(duo.device.ram_needed[1], c1.ram_needed[1])
    np.testing.assert_array_equal(duo.device.ram_needed[2], c1.ram_needed[2])
    np.testing.assert_array_equal(duo.fits[2], c2.fits[2])
    np.testing.assert_array_equal(duo.fits[4], c2.fits[2])
    # energy: two inferences and two messages; the views' shares sum to the device's
    np.testing.assert_allclose(duo.energy_mj[1] + duo.energy_mj[3], 2 * alone.energy_mj[1])
    # the model file is counted once per device
    assert (duo.model_bytes[3] == 0).all() and (duo.model_bytes[1] > 0).all()


def test_failure_sets_are_over_devices(duo):
    sets = duo.failure_sets()
    assert sets.masks[0] == 0
    dead = [set(views_of(int(m))) for m in duo.k_masks()]
    assert dead == [{0}, {1, 3}, {2, 4}]  # a device's views die together
    assert len(sets) <= 2 ** 3
    assert duo.set_probability(0b01010) == pytest.approx(0.95 * 0.05 * 0.95)
    assert sum(duo.set_probability(int(m)) for m in sets.masks) + sets.neglected_mass \
        == pytest.approx(1.0)


def test_a_device_runs_one_level_for_all_its_views(duo):
    out = make_plan(duo, SearchSettings(pop=12, generations=3), plot=False,
                    importance={"shapley": [0.2] * 5, "ratio": [0.2] * 5})
    lv = [v["level_index"] for v in out.plan["views"]]
    assert lv[1] == lv[3] and lv[2] == lv[4]
    for r in out.result.problem.archive.values():
        assert r.levels[1] == r.levels[3] and r.levels[2] == r.levels[4]
    d = out.plan["predicted"]["latency_breakdown"]["devices"]["cam01"]
    assert d["views"] == [1, 3] and d["total_ms"] == pytest.approx(duo.total_ms[1, lv[1]])
    assert out.plan["predicted"]["meets"]["all"]
    rows = {tuple(r["dead_views"]) for r in out.plan["contingency"]["rows"]}
    assert rows == {(0,), (1, 3), (2, 4)}


# --------------------------------------------------------------------------- --down


def test_down_devices_are_never_live(alone, evs):
    fleet = alone.fleet
    ctx = context(evs, fleet, Constraints(min_accuracy=0.4, k_failures=1),
                  down=("cam02", "cam04"))
    assert ctx.nominal_mask == 0b10100
    sets = ctx.failure_sets()
    assert all(int(m) & 0b10100 == 0b10100 for m in sets.masks)
    assert all(int(m) & 0b10100 == 0b10100 for m in ctx.k_masks())
    assert len(ctx.k_masks()) == 3  # one failure among the 3 up devices
    # the down devices cost nothing and set no latency
    x = np.zeros(5, np.int64)
    assert ctx.latency(x) == pytest.approx(
        max(alone.total_ms[v, 0] for v in (0, 1, 3)) + ctx.aggregator_ms)
    assert ctx.energies(x[None, :])[0] == pytest.approx(
        sum(alone.energy_mj[v, 0] for v in (0, 1, 3)))
    out = make_plan(ctx, SearchSettings(pop=12, generations=2), plot=False,
                    importance={"shapley": [0.2] * 5, "ratio": [0.2] * 5})
    views = {v["device"]: v for v in out.plan["views"]}
    assert views["cam02"]["down"] and views["cam04"]["down"] and not views["cam00"]["down"]
    assert out.plan["down"] == ["cam02", "cam04"]
    # nominal accuracy is measured with the down views dead
    lv = [v["level_index"] for v in out.plan["views"]]
    live = np.array([True, True, False, True, False])
    assert out.plan["predicted"]["val"]["accuracy"] == pytest.approx(
        evs["val"].accuracy(lv, live))
    masks = [r["dead_mask"] for r in out.plan["contingency"]["rows"]]
    assert masks[0] == 0b10100 and all(m & 0b10100 == 0b10100 for m in masks)


def test_bad_down_lists_are_named(alone, evs):
    with pytest.raises(PlanError, match="down: fleet 'synthetic' has no device 'cam9'"):
        context(evs, alone.fleet, down=("cam9",))
    with pytest.raises(PlanError, match="every device .* is down"):
        context(evs, alone.fleet, down=tuple(f"cam{i:02d}" for i in range(5)))
    with pytest.raises(PlanError, match="k_failures: 2 failures of 2 up device"):
        context(evs, alone.fleet, Constraints(k_failures=2), down=("cam00", "cam01", "cam02"))


# --------------------------------------------------------------------------- tiny ladder


def test_two_camera_fleet_is_planned_exported_and_verified(tiny_ladder, tmp_path):
    """dualcam11 (a Raspberry Pi 5 seeing views 8 and 11) on the tiny ladder: `slimedge plan`,
    then `slimedge export` from that plan, then `slimedge verify`."""
    import argparse

    from slimedge.export.deploy import export_deployment
    from slimedge.export.verify import verify_deployment
    from slimedge.plan.commands import add_plan_options, plan

    fleet = load_fleet(resolve_fleet_path("dualcam11"))
    assert fleet.device("cam08").views == (8, 11) and len(fleet.devices) == 11
    p = argparse.ArgumentParser()
    add_plan_options(p)
    p.add_argument("--json", action="store_true")
    out = tmp_path / "plan.json"
    summary = plan(p.parse_args(["--fleet", "dualcam11", "--ladder", str(tiny_ladder.ladder),
                                 "--min-accuracy", "0.0", "--out", str(out),
                                 "--generations", "2", "--no-plot", "--json"]))
    assert summary["levels"][8] == summary["levels"][11]
    written = json.loads(out.read_text())
    cam08 = written["predicted"]["latency_breakdown"]["devices"]["cam08"]
    assert cam08["views"] == [8, 11]
    s = export_deployment("dualcam11", tiny_ladder.ladder, None, tmp_path / "deploy",
                          plan=out, progress=False)
    rows = {r["device"]: r for r in s["devices"]}
    assert rows["cam08"]["views"] == [8, 11] and len(rows) == 11
    assert rows["cam08"]["level_index"] == summary["levels"][8]
    assert s["verified"]
    report = verify_deployment(tmp_path / "deploy")
    assert report.ok, report.failures
