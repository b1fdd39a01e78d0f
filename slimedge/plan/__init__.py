"""The planner: per-view pruning levels for a fleet, searched with pymoo, failure-aware.

Modules (one job each):

- `context`: the instance being planned (evaluator, cost table, fleet mapping, constraints);
- `failures`: failure-set enumeration, probabilities, and the memoized accuracy engine;
- `figures`: the figures every configuration is reported with (plan and baselines alike);
- `problem`: the pymoo `Problem` and the memory `Repair`;
- `search`: NSGA-II with seeded initial population, progress bar, selection rule;
- `contingency`: per-failure-set aggregation weights fitted on val, and "extra work" moves;
- `baselines`: unpruned, uniform, importance-only, device-speed-only, the published heuristic;
- `oracle`: exhaustive search for small instances (optimality gap);
- `explain`: why no plan meets the constraints;
- `plan_file`: the versioned plan JSON, its Pareto CSV/PNG, and the C++ contingency table;
- `plots`: the Pareto figure; `commands`: the `slimedge plan` handler;
- `synthetic`: a seeded synthetic ladder (planted features, measured-shaped costs) for tests
  and benchmarks.
"""

from __future__ import annotations

from typing import Any

from slimedge.errors import SlimEdgeError


class PlanError(SlimEdgeError):
    """A planning request that cannot be served (bad input, mismatched fleet and ladder)."""


class PlanInfeasibleError(PlanError):
    """No configuration meets the constraints. The message is the explanation; `summary` is the
    machine-readable answer (`{"infeasible": [reasons...], ...}`) and `exit_code` the CLI's."""

    exit_code = 3

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


__all__ = ["PlanError", "PlanInfeasibleError"]
