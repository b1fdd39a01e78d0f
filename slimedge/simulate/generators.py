"""Random fleets, each fully determined by (generator, index, seed).

`catalog`: one device per view (V = the ladder's views) drawn from the board catalog in one of
four mixes, by board class (then a board uniformly within its class):

- `mcu_heavy`: microcontrollers 70 %, Linux boards 20 %, accelerators (Edge TPU, GPU) 10 %;
- `pi_only`: Linux boards only;
- `accelerators`: accelerators 60 %, Linux boards 30 %, microcontrollers 10 %;
- `mixed`: every board of the catalog equally likely.

In `MULTI_CAMERA_SHARE` of the scenarios, one to three devices on hosted boards (Linux, Edge
TPU, GPU: a microcontroller with two cameras is not a product) see two views each, so the
fleet has fewer devices than views. Failure probability: the board file's, times a factor
drawn log-uniformly in [1/3, 3] (capped at 0.5). Floors relative to the ladder's unpruned
accuracy: nominal >= r x the unpruned accuracy, r ~ U(0.90, 0.99); worst accuracy with any one
device failed >= r_k x the unpruned configuration's own worst single failure, r_k ~ U(0.85,
0.97) (so the unpruned configuration meets both floors when it fits).

`published`: the SlimEdge authors' generator: V devices, each of one of their three Raspberry
Pi classes (128 MB / 700 MHz, 256 MB / 900 MHz, 512 MB / 1400 MHz; the boards are read from
`firmware_configs/fleets/published3class.yaml`, where each class is sourced) drawn uniformly;
failure probability the board file's; an absolute nominal floor A_min ~ U(0.80, a_max), a_max
= `AUTHORS_UNPRUNED_ACCURACY`. Where A_min is above our ladder's unpruned accuracy (no
configuration could meet it), the relative equivalent A_min / a_max x our unpruned accuracy is
used instead, and the scenario says so (`floor_kind` = "relative_fallback"; the catalog's
floors are "relative" by design). They set no floor under
failures; the worst single failure is still reported (k = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from slimedge.devices.catalog import EDGETPU, GPU, LINUX, MCU, Board, load_catalog
from slimedge.devices.fleet import Aggregator, Device, Fleet, load_fleet, resolve_fleet_path
from slimedge.plan.context import Constraints
from slimedge.simulate import GENERATORS, SimulateError
from slimedge.simulate.state import LadderState

MIXES: dict[str, dict[str, float] | None] = {
    "mcu_heavy": {MCU: 0.7, LINUX: 0.2, "accelerator": 0.1},
    "pi_only": {LINUX: 1.0},
    "accelerators": {"accelerator": 0.6, LINUX: 0.3, MCU: 0.1},
    "mixed": None,  # every board equally likely
}
MULTI_CAMERA_SHARE = 0.25
FAILURE_FACTOR = (1.0 / 3.0, 3.0)  # log-uniform range of the factor on the board's probability
MAX_FAILURE_PROBABILITY = 0.5
NOMINAL_FLOOR = (0.90, 0.99)  # catalog: fraction of the unpruned accuracy
WORST_K_FLOOR = (0.85, 0.97)  # catalog: fraction of the unpruned worst single failure
# The authors' unpruned accuracy: optimization_Pruning_Results.csv, pruning 0.00 -> 0.84940
# (github.com/mahadevxo/DDNN-Working, snapshot 2025-11-12; shared/reference/slimedge-authors).
AUTHORS_UNPRUNED_ACCURACY = 0.8494
AUTHORS_FLOOR_LOW = 0.80  # A_min ~ U(0.80, a_max)
CATALOG_FLEET = "mixed12"  # its aggregator is the catalog scenarios' aggregator
PUBLISHED_FLEET = "published3class"  # the authors' three classes, sourced per field
RELATIVE_FALLBACK = "relative_fallback"
GENERATOR_KEYS = {name: i for i, name in enumerate(GENERATORS)}  # part of every seed


@dataclass(frozen=True)
class Scenario:
    generator: str
    index: int
    seed: int  # the sweep's seed
    mix: str
    fleet: Fleet
    constraints: Constraints
    floor_kind: str  # "relative", "absolute" or RELATIVE_FALLBACK
    search_seed: int
    drawn: dict[str, Any] = field(default_factory=dict)  # the drawn numbers, for the rows

    @property
    def multi_camera(self) -> bool:
        return any(len(d.views) > 1 for d in self.fleet.devices)


def scenario_rng(generator: str, index: int, seed: int) -> np.random.Generator:
    """The scenario's own stream: `SeedSequence(seed)` spawned at (generator, index), so it
    does not depend on how many scenarios the sweep has or where it runs."""
    ss = np.random.SeedSequence(seed, spawn_key=(GENERATOR_KEYS[generator], index))
    return np.random.default_rng(ss)


@lru_cache(maxsize=1)
def _catalog() -> dict[str, Board]:
    return dict(load_catalog())


@lru_cache(maxsize=2)
def _reference_fleet(name: str) -> Fleet:
    return load_fleet(resolve_fleet_path(name), _catalog())


def _class_of(board: Board) -> str:
    return "accelerator" if board.board_class in (EDGETPU, GPU) else board.board_class


def _draw_board(rng: np.random.Generator, mix: str) -> Board:
    boards = sorted(_catalog().values(), key=lambda b: b.id)
    weights = MIXES[mix]
    if weights is None:
        return boards[int(rng.integers(len(boards)))]
    classes = sorted(weights)
    p = np.array([weights[c] for c in classes])
    cls = classes[int(rng.choice(len(classes), p=p / p.sum()))]
    pool = [b for b in boards if _class_of(b) == cls]
    return pool[int(rng.integers(len(pool)))]


def catalog_scenario(state: LadderState, index: int, seed: int) -> Scenario:
    rng = scenario_rng("catalog", index, seed)
    V = state.views
    mixes = sorted(MIXES)
    mix = mixes[int(rng.integers(len(mixes)))]
    pairs = int(rng.integers(1, 4)) if rng.random() < MULTI_CAMERA_SHARE else 0
    pairs = min(pairs, max(0, V - 2))  # at least two devices: one failure leaves a view
    order = rng.permutation(V)
    devices: list[Device] = []
    at = 0
    lo, hi = (math.log(f) for f in FAILURE_FACTOR)
    while at < V:
        board = _draw_board(rng, mix)
        take = 2 if pairs and board.board_class != MCU and at + 2 <= V else 1
        pairs -= take == 2
        views = tuple(sorted(int(v) for v in order[at:at + take]))
        at += take
        factor = math.exp(rng.uniform(lo, hi))
        p = min(MAX_FAILURE_PROBABILITY, board.failure.probability * factor)
        devices.append(Device(f"cam{len(devices):02d}", board.id, board, views, p,
                              f"{board.id} board file ({board.failure.probability:g}) x "
                              f"{factor:.3f} (scenario draw)", {}, ""))
    r = float(rng.uniform(*NOMINAL_FLOOR))
    r_k = float(rng.uniform(*WORST_K_FLOOR))
    constraints = Constraints(min_accuracy=r * state.unpruned_accuracy, k_failures=1,
                              min_accuracy_k=r_k * state.unpruned_worst1)
    agg = _reference_fleet(CATALOG_FLEET).aggregator
    fleet = Fleet(f"catalog-{seed}-{index}", f"catalog scenario {index} ({mix})", None, V,
                  tuple(devices), agg)
    return Scenario("catalog", index, seed, mix, fleet, constraints, "relative",
                    int(rng.integers(2**31)), {"floor_ratio": r, "floor_ratio_k": r_k})


def published_classes() -> list[Board]:
    """The authors' three Pi classes as boards (overrides applied), by memory budget."""
    ref = _reference_fleet(PUBLISHED_FLEET)
    by_budget: dict[int, Board] = {}
    for d in ref.devices:
        by_budget.setdefault(d.board.model_memory_bytes, d.board)
    return [by_budget[k] for k in sorted(by_budget)]


def published_scenario(state: LadderState, index: int, seed: int) -> Scenario:
    rng = scenario_rng("published", index, seed)
    V = state.views
    classes = published_classes()
    ref = _reference_fleet(PUBLISHED_FLEET)
    devices = []
    for v in range(V):
        board = classes[int(rng.integers(len(classes)))]
        mib = board.model_memory_bytes // 2**20
        devices.append(Device(f"cam{v:02d}", board.id, board, (v,), board.failure.probability,
                              board.source_of("failure.probability"), {},
                              f"class {mib} MiB"))
    a_min = float(rng.uniform(AUTHORS_FLOOR_LOW, AUTHORS_UNPRUNED_ACCURACY))
    if a_min <= state.unpruned_accuracy:
        floor, kind = a_min, "absolute"
    else:
        floor = a_min / AUTHORS_UNPRUNED_ACCURACY * state.unpruned_accuracy
        kind = RELATIVE_FALLBACK
    fleet = Fleet(f"published-{seed}-{index}", f"published scenario {index}", None, V,
                  tuple(devices), Aggregator(ref.aggregator.kind, ref.aggregator.name,
                                             ref.aggregator.board))
    return Scenario("published", index, seed, "pi_classes", fleet,
                    Constraints(min_accuracy=floor, k_failures=1), kind,
                    int(rng.integers(2**31)), {"a_min": a_min})


def make_scenario(state: LadderState, generator: str, index: int, seed: int) -> Scenario:
    if generator == "catalog":
        return catalog_scenario(state, index, seed)
    if generator == "published":
        return published_scenario(state, index, seed)
    raise SimulateError(f"--generator: unknown generator {generator!r} (known: "
                        f"{', '.join(GENERATORS)}, all)")
