"""`slimedge simulate`: scenarios fixed by their seed, valid fleets and floors, the shared memo
that changes no plan, identical rows whatever runs them, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slimedge.cli import main
from slimedge.devices.catalog import MCU
from slimedge.plan import PlanInfeasibleError
from slimedge.plan.context import PlanContext
from slimedge.plan.failures import AccuracyCache
from slimedge.plan.planner import make_plan
from slimedge.plan.search import SearchSettings
from slimedge.plan.synthetic import SyntheticSpec, write_synthetic_ladder
from slimedge.simulate import SimulateError
from slimedge.simulate.evaluate import METHODS, TIMING_COLUMNS, run_chunk
from slimedge.simulate.generators import (
    AUTHORS_FLOOR_LOW,
    AUTHORS_UNPRUNED_ACCURACY,
    FAILURE_FACTOR,
    MAX_FAILURE_PROBABILITY,
    NOMINAL_FLOOR,
    RELATIVE_FALLBACK,
    WORST_K_FLOOR,
    make_scenario,
)
from slimedge.simulate.markdown import floors_table
from slimedge.simulate.results import read_rows, summarize
from slimedge.simulate.runner import CHUNKS_DIR, RUNS_FILE, read_runs, run_sweep
from slimedge.simulate.state import AccuracyStore, ScenarioCache, ladder_state

SPEC = SyntheticSpec(fractions=(0.0, 0.3, 0.6, 0.9), n_val=80, n_test=80, n_train=400, views=4,
                     dim=16, classes=4, hidden=16, difficulty=0.5)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("simladder") / "ladder"
    write_synthetic_ladder(root, SPEC)
    return root


def _fleet_facts(s):
    return [(d.id, d.board_id, d.views, d.failure_probability, d.board.model_memory_bytes)
            for d in s.fleet.devices], s.constraints, s.mix, s.floor_kind, s.search_seed


def test_a_scenario_is_fixed_by_its_seed_and_valid(ladder):
    state = ladder_state(ladder)
    lo, hi = FAILURE_FACTOR
    mixes, multi = set(), 0
    for i in range(40):
        a, b = (make_scenario(state, "catalog", i, 7) for _ in range(2))
        assert _fleet_facts(a) == _fleet_facts(b)
        assert _fleet_facts(a) != _fleet_facts(make_scenario(state, "catalog", i, 8))
        seen = sorted(v for d in a.fleet.devices for v in d.views)
        assert seen == list(range(state.views))  # every view on exactly one device
        for d in a.fleet.devices:
            p0 = d.board.failure.probability
            assert p0 * lo - 1e-12 <= d.failure_probability <= min(MAX_FAILURE_PROBABILITY,
                                                                    p0 * hi) + 1e-12
            assert len(d.views) == 1 or d.board.board_class != MCU
        c = a.constraints
        assert NOMINAL_FLOOR[0] <= c.min_accuracy / state.unpruned_accuracy <= NOMINAL_FLOOR[1]
        assert WORST_K_FLOOR[0] <= c.min_accuracy_k / state.unpruned_worst1 <= WORST_K_FLOOR[1]
        mixes.add(a.mix)
        multi += a.multi_camera
    assert len(mixes) == 4 and multi > 0


def test_published_generator_caps_floors_and_relative_fallback(ladder):
    state = ladder_state(ladder)
    mib = 2**20
    for a0, kind in ((0.99, "absolute"), (0.5, RELATIVE_FALLBACK)):
        st = dataclasses.replace(state, unpruned_accuracy=a0)
        for i in range(20):
            s = make_scenario(st, "published", i, 0)
            assert {d.board.model_memory_bytes for d in s.fleet.devices} <= {128 * mib,
                                                                              256 * mib,
                                                                              512 * mib}
            assert len(s.fleet.devices) == st.views
            a_min = s.drawn["a_min"]
            assert AUTHORS_FLOOR_LOW <= a_min <= AUTHORS_UNPRUNED_ACCURACY
            assert s.floor_kind == kind and s.constraints.min_accuracy_k is None
            want = a_min if kind == "absolute" else a_min / AUTHORS_UNPRUNED_ACCURACY * a0
            assert s.constraints.min_accuracy == pytest.approx(want)
            assert s.constraints.min_accuracy <= a0


def test_shared_memo_changes_no_plan(ladder):
    """A scenario planned over a store warmed by other scenarios: same plan, same counters."""
    state = ladder_state(ladder)
    store = AccuracyStore()
    for i in (3, 4):  # warm the store
        s = make_scenario(state, "catalog", i, 0)
        ctx = PlanContext.from_ladder(ladder, s.fleet, s.constraints)
        try:
            make_plan(ctx, SearchSettings(seed=0), importance=state.importance, plot=False,
                      cache=ScenarioCache(ctx.evaluator, ctx.base_weights, store))
        except PlanInfeasibleError:
            pass  # an infeasible fleet warms the store too
    s = make_scenario(state, "catalog", 0, 0)
    ctx = PlanContext.from_ladder(ladder, s.fleet, s.constraints)
    fresh = AccuracyCache(ctx.evaluator, ctx.base_weights)
    shared = ScenarioCache(ctx.evaluator, ctx.base_weights, store)
    before = store.served
    outs = [make_plan(ctx, SearchSettings(seed=1), importance=state.importance, plot=False,
                      cache=c) for c in (fresh, shared)]
    assert store.served > before  # the warm store did serve values
    assert outs[0].plan["views"] == outs[1].plan["views"]
    assert outs[0].plan["predicted"]["latency_ms"] == outs[1].plan["predicted"]["latency_ms"]
    assert (fresh.calls, fresh.hits) == (shared.calls, shared.hits)


def test_a_store_cleared_in_the_middle_of_a_plan_changes_nothing(ladder):
    """A store that reaches its cap is cleared, possibly between a value's lookup and its use
    (a 1,000-scenario sweep stopped on that KeyError): with a tiny cap it is cleared over and
    over within one plan, which still equals the plan of a fresh memo, counters included."""
    state = ladder_state(ladder)
    s = make_scenario(state, "catalog", 1, 0)
    ctx = PlanContext.from_ladder(ladder, s.fleet, s.constraints)
    tiny = AccuracyStore(cap=40)
    warm = ScenarioCache(ctx.evaluator, ctx.base_weights, tiny)
    warm.get(np.zeros(state.views, np.int64), [0, 1, 2])  # values the plan will be served
    fresh = AccuracyCache(ctx.evaluator, ctx.base_weights)
    shared = ScenarioCache(ctx.evaluator, ctx.base_weights, tiny)
    outs = [make_plan(ctx, SearchSettings(seed=1), importance=state.importance, plot=False,
                      cache=c) for c in (fresh, shared)]
    assert tiny.computed > tiny.cap  # it was cleared (more values than it can hold)
    assert outs[0].plan["views"] == outs[1].plan["views"]
    assert outs[0].plan["predicted"] == outs[1].plan["predicted"]
    assert (fresh.calls, fresh.hits) == (shared.calls, shared.hits)


def test_a_failing_chunk_is_named_and_finished_ones_kept(ladder, tmp_path):
    import shutil

    broken = tmp_path / "ladder"
    shutil.copytree(ladder, broken)
    out = tmp_path / "sweep"
    run_sweep(broken, 1, out=out, generators=("catalog",), cost_models=("authors",),
              workers=1, progress=False, chunk=1)
    kept = sorted((out / CHUNKS_DIR).glob("*.parquet"))
    (broken / "classifier.npz").write_bytes(b"not a classifier")  # the manifest is unchanged
    with pytest.raises(SimulateError, match=r"catalog scenarios 1-1 \(seed 0, cost models "
                                            r"authors\):.*classifier"):
        run_sweep(broken, 2, out=out, generators=("catalog",), cost_models=("authors",),
                  workers=1, progress=False, chunk=1)
    assert sorted((out / CHUNKS_DIR).glob("*.parquet")) == kept
    runs, _ = read_runs(out)
    assert [(r["computed_scenarios"], r["completed"]) for r in runs] == [(1, True), (0, False)]


def test_rows_have_every_method_and_ratios_as_defined(ladder):
    rows = run_chunk(str(ladder), "catalog", 0, 2, 0, ("per-layer", "authors"))
    assert len(rows) == 2 * 2 * len(METHODS)
    for (scen, cm) in {(r["scenario"], r["cost_model"]) for r in rows}:
        by = {r["method"]: r for r in rows if (r["scenario"], r["cost_model"]) == (scen, cm)}
        assert set(by) == set(METHODS)
        plan, un = by["plan"], by["unpruned"]
        if plan["scenario_feasible"] and un["fits"]:
            assert plan["ratio_vs_unpruned"] == pytest.approx(un["latency_ms"]
                                                              / plan["latency_ms"])
            assert plan["satisfied_val"]
        if not un["fits"]:
            assert all(math.isnan(r["ratio_vs_unpruned"]) for r in by.values())


def test_each_floor_is_counted_apart_over_the_feasible_scenarios():
    from slimedge.simulate.results import Rows

    n = 5  # meets both; misses nominal on test; misses worst-k on val; no k floor (met);
    # and a scenario the planner found infeasible (left out of every share)
    rows = Rows({
        "generator": np.array(["catalog"] * n), "cost_model": np.array(["authors"] * n),
        "method": np.array(["uniform"] * n), "scenario": np.arange(n),
        "scenario_feasible": np.array([True, True, True, True, False]),
        "fits": np.array([True] * n),
        "min_accuracy": np.full(n, 0.90), "min_accuracy_k": np.array([0.8, 0.8, 0.8, np.nan, 0.8]),
        "accuracy_val": np.array([0.95, 0.95, 0.95, 0.95, 0.5]),
        "accuracy_test": np.array([0.95, 0.85, 0.95, 0.95, 0.5]),
        "worst_k_val": np.array([0.85, 0.85, 0.75, 0.10, 0.1]),
        "worst_k_test": np.array([0.85, 0.85, 0.85, 0.10, 0.1]),
        "expected_val": np.array([0.94, 0.93, 0.92, 0.91, 0.5]),
        "expected_test": np.array([0.94, 0.84, 0.92, 0.91, 0.5]),
        "satisfied_val": np.array([True, True, False, True, False]),
        "satisfied_test": np.array([True, False, True, True, False]),
        **{r: np.full(n, np.nan) for r in ("ratio_vs_unpruned", "ratio_vs_uniform",
                                           "energy_ratio")},
    })
    e = summarize(rows)["catalog"]["authors"]["uniform"]
    assert (e["met_nominal_val"], e["met_nominal_test"]) == (1.0, 0.75)
    assert (e["met_worst_k_val"], e["met_worst_k_test"]) == (0.75, 1.0)
    assert (e["satisfied_val"], e["satisfied_test"]) == (0.75, 0.75)
    assert e["expected_accuracy_val"] == pytest.approx(0.92)  # median of all five
    text = floors_table(summarize(rows))
    assert "| catalog | authors | uniform | 100 % / 75 % | 75 % / 100 % | 0.920 / 0.910 |" in text


def _rows_without_timing(paths):
    recs = read_rows(paths).records()
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in recs]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float) and math.isnan(x[k]):
                assert isinstance(y[k], float) and math.isnan(y[k]), k
            else:
                assert x[k] == y[k], k


def test_cli_json_and_the_same_rows_from_one_and_two_workers(ladder, tmp_path, capsys):
    out1 = tmp_path / "one"
    assert main(["simulate", "--ladder", str(ladder), "--scenarios", "2", "--workers", "1",
                 "--out", str(out1), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got) == {"scenarios", "wall_s", "results", "summary"}
    assert got["scenarios"] == 4 and Path(got["results"]).is_file()
    for gen in ("catalog", "published"):
        for cm in ("per-layer", "authors"):
            for m in METHODS:
                entry = got["summary"][gen][cm][m]
                assert {"ratio_vs_unpruned", "ratio_vs_uniform", "energy_ratio", "feasible",
                        "satisfied_val", "satisfied_test"} <= set(entry)
                assert set(entry["ratio_vs_unpruned"]) == {"median", "p90", "max"}
    for name in ("simulate.md", "summary.json", "ratio_cdf.png", "satisfaction.png",
                 "accuracy_latency.png"):
        assert (out1 / name).is_file()
    assert "| catalog | per-layer | **plan** |" in (out1 / "simulate.md").read_text()
    counted = json.loads((out1 / "summary.json").read_text())["counts"]
    recs = read_rows(sorted((out1 / CHUNKS_DIR).glob("*.parquet"))).records()
    for gen in ("catalog", "published"):
        plans = [r for r in recs if r["generator"] == gen and r["method"] == "plan"]
        assert counted[gen]["plans"] == sum(bool(r["scenario_feasible"]) for r in plans)
        assert counted[gen]["plans_proven"] == sum(r["plan_proven"] == 1 for r in plans)
    run2 = run_sweep(ladder, 2, out=tmp_path / "two", workers=2, progress=False)
    assert run2.workers == 2
    _same(_rows_without_timing(sorted((out1 / CHUNKS_DIR).glob("*.parquet"))),
          _rows_without_timing(run2.paths()))
    # the tool that checks it on any two sweep folders agrees, and finds a changed value
    tool = Path(__file__).resolve().parents[1] / "tools" / "compare_sweeps.py"

    def compare(a: Path, b: Path) -> tuple[int, dict]:
        done = subprocess.run([sys.executable, str(tool), str(a), str(b), "--json"],
                              capture_output=True, text=True)
        return done.returncode, json.loads(done.stdout)

    rc, r = compare(out1, tmp_path / "two")
    assert rc == 0 and r["shared_scenarios"] == 4 and r["differing_rows"] == 0
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = run2.paths()[0]
    table = pq.read_table(path).to_pylist()
    table[0]["latency_ms"] += 1.0
    pq.write_table(pa.Table.from_pylist(table), path)
    rc, r = compare(out1, tmp_path / "two")
    assert rc == 1 and r["differing_rows"] == 1 and r["differ"][0]["columns"] == ["latency_ms"]


def test_resume_after_an_interrupt_recomputes_nothing_finished(ladder, tmp_path):
    out = tmp_path / "sweep"
    done = []

    def interrupt(chunk):
        done.append(chunk)
        raise KeyboardInterrupt  # as Ctrl-C in the driver, after the first chunk is written

    with pytest.raises(KeyboardInterrupt):
        run_sweep(ladder, 3, out=out, generators=("catalog",), cost_models=("authors",),
                  workers=1, chunk=1, progress=False, on_chunk=interrupt)
    files = sorted((out / CHUNKS_DIR).glob("*.parquet"))
    assert [f.name for f in files] == [done[0].name]
    stamp = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}
    again = run_sweep(ladder, 3, out=out, generators=("catalog",), cost_models=("authors",),
                      workers=1, chunk=1, progress=False)
    assert [c.name for c in again.reused] == [done[0].name]
    assert sorted(c.name for c in again.computed) == sorted(
        c.name for c in again.chunks if c.name != done[0].name)
    for f in files:
        assert (f.stat().st_ino, f.stat().st_mtime_ns) == stamp[f.name]
    assert not list((out / CHUNKS_DIR).glob(".*tmp*"))  # no temporary file left behind
    rows = read_rows(again.paths())
    assert sorted(set(rows["scenario"].tolist())) == [0, 1, 2]
    summary = summarize(rows)
    assert set(summary) == {"catalog"} and set(summary["catalog"]) == {"authors"}
    # both runs are logged, the interrupted one too: the sweep's cost is their sum
    runs, bad = read_runs(out)
    assert bad == 0
    assert [(r["computed_scenarios"], r["reused_scenarios"], r["completed"]) for r in runs] \
        == [(1, 0, False), (2, 1, True)]
    assert all(r["wall_s"] > 0 and r["workers"] == 1 for r in runs)


def test_the_run_log_skips_a_bad_line_and_sums_every_run(ladder, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["simulate", "--ladder", str(ladder), "--scenarios", "1", "--generator", "catalog",
            "--cost-model", "authors", "--workers", "1", "--out", str(out), "--no-plot",
            "--json"]
    assert main(argv) == 0
    with open(out / RUNS_FILE, "a") as fh:
        fh.write('{"wall_s": "not a number"\n')  # a torn line
    assert main(argv) == 0  # nothing left to compute: a run of 0 scenarios, logged
    capsys.readouterr()
    info = json.loads((out / "summary.json").read_text())
    assert info["unreadable_run_lines"] == 1
    assert [r["computed_scenarios"] for r in info["runs"]] == [1, 0]
    assert info["all_runs_computed_scenarios"] == 1
    assert info["all_runs_wall_s"] == pytest.approx(sum(r["wall_s"] for r in info["runs"]))
    md = (out / "simulate.md").read_text()
    assert "All 2 logged runs into this folder: 1 scenarios" in md and "no (interrupted)" not in md
    # the table docs/benchmarks.md takes, from the same folder
    tool = Path(__file__).resolve().parents[1] / "tools" / "simulate_table.py"
    done = subprocess.run([sys.executable, str(tool), str(out), "--json"], capture_output=True,
                          text=True, check=True)
    r = json.loads(done.stdout)
    assert r["all_runs_computed_scenarios"] == 1 and len(r["runs"]) == 2
    assert set(r["summary"]["catalog"]["authors"]) == set(METHODS)
    text = subprocess.run([sys.executable, str(tool), str(out)], capture_output=True, text=True,
                          check=True).stdout
    assert "| catalog | authors | **plan** |" in text
    assert "All 2 logged runs into this folder: 1 scenarios computed" in text


def test_bad_input_names_the_option(ladder, tmp_path, capsys):
    def fails(argv, *words):
        assert main(["simulate", *argv]) != 0
        err = capsys.readouterr().err
        for w in words:
            assert w in err, err

    fails(["--ladder", str(tmp_path / "nope"), "--scenarios", "2", "--out", str(tmp_path)],
          "--ladder", "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(["--ladder", str(empty), "--scenarios", "2", "--out", str(tmp_path / "o")],
          "--ladder", "manifest.json")
    fails(["--ladder", str(ladder), "--scenarios", "0", "--out", str(tmp_path / "o")],
          "--scenarios")
    with pytest.raises(SystemExit):
        main(["simulate", "--ladder", str(ladder), "--scenarios", "2", "--generator", "bogus"])
    assert "--generator" in capsys.readouterr().err
    fails(["--ladder", str(ladder), "--scenarios", "2", "--scheduler", "tcp://127.0.0.1:1",
           "--workers", "2"], "--workers")
    out = tmp_path / "held"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"version": 1, "ladder_manifest_sha256": "x",
                                                "seed": 0, "chunk": 5}))
    fails(["--ladder", str(ladder), "--scenarios", "2", "--out", str(out)], "--out",
          "ladder_manifest_sha256")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, "the dask scheduler exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.mark.slow
def test_external_scheduler_and_two_workers_give_the_same_rows(ladder, tmp_path):
    dask = str(Path(sys.executable).with_name("dask"))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        _wait_port(port, procs[0])
        address = f"tcp://127.0.0.1:{port}"
        procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1",
                                    "--no-dashboard", "--host", "127.0.0.1"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(2)]
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
        external = run_sweep(ladder, 3, out=tmp_path / "ext", scheduler=address,
                             progress=False)
        assert external.workers == 2
        local = run_sweep(ladder, 3, out=tmp_path / "one", workers=1, progress=False)
        _same(_rows_without_timing(external.paths()), _rows_without_timing(local.paths()))
    finally:
        for p in reversed(procs):  # stopped by pid, workers first
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_an_unreachable_scheduler_is_named(ladder, tmp_path):
    with pytest.raises(SimulateError, match="--scheduler"):
        run_sweep(ladder, 1, out=tmp_path / "x", scheduler=f"tcp://127.0.0.1:{_free_port()}",
                  progress=False)


def test_chunks_are_bounded_at_multiples(ladder):
    from slimedge.simulate.runner import plan_chunks

    a = plan_chunks(7, ("catalog",), ("authors",), 5)
    b = plan_chunks(12, ("catalog",), ("authors",), 5)
    assert [c.name for c in a][:1] == [c.name for c in b][:1]
    assert [(c.start, c.stop) for c in a] == [(0, 5), (5, 7)]
    assert np.sum([c.scenarios for c in b]) == 12
