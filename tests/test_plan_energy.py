"""Energy per frame and the weakest battery as objectives: the front trades latency, accuracy and
energy, and `prefer` picks the plan from it by its documented rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slimedge.plan import PlanError
from slimedge.plan.context import Constraints
from slimedge.plan.planner import SELECTION_RULES, make_plan
from slimedge.plan.problem import PlanProblem, Record, default_objectives
from slimedge.plan.search import PREFER, SearchSettings, choose, pareto_front, search
from slimedge.plan.synthetic import SyntheticSpec, synthetic_context

BOARDS = ("esp32s3", "nrf52840", "rpi4b", "rpi5", "rpi3bplus")
IMPORTANCE = {"shapley": [0.2] * 5, "ratio": [0.2] * 5}


@pytest.fixture(scope="module")
def ctx():
    spec = SyntheticSpec(fractions=(0.0, 0.2, 0.4, 0.6, 0.8), n_val=120, n_test=60,
                         n_train=500, views=len(BOARDS), dim=16, classes=4, hidden=16,
                         difficulty=0.4, seed=5)
    return synthetic_context(Constraints(min_accuracy=0.7, k_failures=1), spec=spec,
                             boards=BOARDS)


@pytest.fixture(scope="module")
def result(ctx):
    return search(ctx, SearchSettings(pop=16, generations=4, seed=0))


def test_energy_is_the_sum_over_devices_and_battery_the_weakest(ctx):
    x = np.array([1, 3, 0, 2, 4])
    rows = ctx.view_row
    e = ctx.cost.energy_mj()  # the cost model's own per-device figure (active + radio)
    assert ctx.energies(x[None, :])[0] == pytest.approx(sum(e[rows[v], x[v]] for v in range(5)))
    life = ctx.cost.battery_life_h(ctx.frame_period_ms)
    assert ctx.lives(x[None, :])[0] == pytest.approx(life[rows[1], 3])  # the nRF52840's
    assert ctx.has_battery and default_objectives(ctx) == (
        "latency", "accuracy", "energy", "battery")
    # more pruning on the battery node lasts longer
    y = x.copy()
    y[1] = 4
    assert ctx.lives(y[None, :])[0] > ctx.lives(x[None, :])[0]


def test_the_front_is_a_trade_between_latency_accuracy_and_energy(result):
    front = result.front
    assert len(front) >= 3
    assert all(r.feasible for r in front)
    lat = [r.latency_ms for r in front]
    energy = [r.energy_mj for r in front]
    # not one point best at everything: the fastest plan (most accurate among the fastest)
    # spends more energy than the cheapest, which gives up accuracy or speed for it
    fastest, cheapest = choose(front, "latency"), choose(front, "energy")
    assert fastest.levels != cheapest.levels
    assert fastest.energy_mj > cheapest.energy_mj
    assert (fastest.expected > cheapest.expected or fastest.latency_ms < cheapest.latency_ms)
    assert max(energy) > min(energy) and max(lat) >= min(lat)
    # non-dominated in the problem's objectives
    F = np.array([result.problem.objective_values(r) for r in front])
    for i in range(len(F)):
        dominated = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        assert not dominated.any()


def test_prefer_picks_by_its_rule(ctx, result):
    recs = list(result.problem.archive.values())
    feas = [r for r in recs if r.feasible]
    by_lat = choose(recs, "latency")
    by_energy = choose(recs, "energy")
    assert by_lat.latency_ms == min(r.latency_ms for r in feas)
    assert by_energy.energy_mj == min(r.energy_mj for r in feas)
    assert by_energy.energy_mj <= by_lat.energy_mj
    assert by_lat.latency_ms <= by_energy.latency_ms
    bal = choose(recs, "balanced")
    front = pareto_front(result.problem)
    assert bal.levels in {r.levels for r in front}
    # the knee: its worst scaled regret over latency, energy, expected accuracy is the least
    F = np.array([[r.latency_ms, r.energy_mj, -r.expected] for r in front])
    span = np.where(np.ptp(F, axis=0) > 0, np.ptp(F, axis=0), 1.0)
    regret = ((F - F.min(axis=0)) / span).max(axis=1)
    i = [r.levels for r in front].index(bal.levels)
    assert regret[i] == pytest.approx(regret.min())
    with pytest.raises(ValueError, match="prefer"):
        choose(recs, "cheapest")


def test_choose_breaks_ties_by_the_documented_order():
    def rec(levels, lat, energy, expected):
        return Record(levels, lat, 100, "feasible", energy, math.inf, 0.9, 0.8, expected)

    a, b, c = rec((0,), 10.0, 5.0, 0.80), rec((1,), 10.0, 4.0, 0.80), rec((2,), 10.0, 3.0, 0.85)
    assert choose([a, b, c], "latency").levels == (2,)  # higher expected accuracy first
    assert choose([a, b], "latency").levels == (1,)  # then lower energy
    d = rec((3,), 12.0, 3.0, 0.9)
    assert choose([c, d], "energy").levels == (2,)  # equal energy: lower latency


def test_the_plan_reports_energy_and_its_rule(ctx):
    out = make_plan(ctx, SearchSettings(pop=16, generations=2, prefer="energy"),
                    importance=IMPORTANCE, plot=True)
    plan = out.plan
    assert plan["search"]["prefer"] == "energy"
    assert plan["search"]["selection_rule"] == SELECTION_RULES["energy"]
    assert plan["predicted"]["energy_mj"] == pytest.approx(
        ctx.energies(np.array([[v["level_index"] for v in plan["views"]]]))[0])
    assert plan["predicted"]["battery_life_h"] > 0
    assert all("energy_mj" in r and "battery_life_h" in r for r in out.pareto_rows)
    assert sum(r["chosen"] for r in out.pareto_rows) == 1
    assert out.png and out.png[:4] == b"\x89PNG"
    energy_plan = plan["predicted"]["energy_mj"]
    lat_plan = make_plan(ctx, SearchSettings(pop=16, generations=2), importance=IMPORTANCE,
                         plot=False, baselines=False).plan
    assert lat_plan["predicted"]["latency_ms"] <= plan["predicted"]["latency_ms"]
    assert energy_plan <= lat_plan["predicted"]["energy_mj"]


def test_bad_prefer_and_objectives_are_named(ctx):
    assert set(PREFER) == set(SELECTION_RULES)
    with pytest.raises(PlanError, match="prefer: expected one of latency, energy, balanced"):
        search(ctx, SearchSettings(prefer="fast"))
    with pytest.raises(PlanError, match="objectives: expected latency,accuracy then"):
        search(ctx, SearchSettings(objectives=("accuracy", "latency")))
    # a fleet without a battery-powered device has no battery objective
    no_battery = synthetic_context(Constraints(min_accuracy=0.3), boards=(
        "esp32s3", "rpi4b", "rpi5", "rpi3bplus"))
    assert not no_battery.has_battery
    assert PlanProblem(no_battery).objectives == ("latency", "accuracy", "energy")
