"""Reading a sweep's rows and summarizing them.

Summary, per generator, cost model and method (`summary[generator][cost_model][method]`):

- `ratio_vs_unpruned`, `ratio_vs_uniform`, `energy_ratio`: `median`, `p90`, `max` over the
  scenarios where the ratio is defined (both configurations fit memory; for the uniform one,
  it also meets the floors); None where it is defined in none;
- `feasible`: share of all scenarios in which the method's configuration fits memory (for the
  plan: a configuration meeting every floor was found);
- `satisfied_val`, `satisfied_test`: share of the feasible scenarios (the planner found a
  configuration meeting every floor) in which the method's configuration fits memory and
  meets every floor (nominal, worst-k, latency cap) on val, on test;
- `met_nominal_<split>`, `met_worst_k_<split>`: the same shares for each floor alone, and
  `expected_accuracy_<split>`: the median failure-weighted accuracy (`_floors_apart`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.simulate import SimulateError
from slimedge.simulate.generators import RELATIVE_FALLBACK

RATIOS = ("ratio_vs_unpruned", "ratio_vs_uniform", "energy_ratio")


class Rows:
    """A sweep's rows as columns (NumPy arrays; `levels` a list of lists)."""

    def __init__(self, columns: dict[str, Any]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["method"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def where(self, mask: np.ndarray) -> Rows:
        idx = np.flatnonzero(mask)
        return Rows({k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx])
                     for k, v in self.columns.items()})

    def values(self, name: str) -> list[str]:
        """Distinct values of a column, in first-seen order."""
        return list(dict.fromkeys(self.columns[name].tolist()))

    def records(self) -> list[dict[str, Any]]:
        names = list(self.columns)
        return [{k: (self.columns[k][i].item() if isinstance(self.columns[k], np.ndarray)
                     else self.columns[k][i]) for k in names} for i in range(len(self))]


def read_rows(paths: Sequence[Path]) -> Rows:
    """The rows of the given chunk files, ordered by generator, scenario, cost model and
    method (as each chunk wrote them)."""
    import pyarrow.dataset as ds

    if not paths:
        raise SimulateError("no chunk files to read")
    try:
        table = ds.dataset([str(p) for p in paths], format="parquet").to_table()
    except (OSError, ValueError) as exc:
        raise SimulateError(f"cannot read the sweep's rows ({exc})") from None
    cols: dict[str, Any] = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        cols[name] = values if name == "levels" else np.array(
            [np.nan if v is None else v for v in values])
    order = np.lexsort((cols["scenario"], cols["generator"]))  # stable within a scenario
    return Rows({k: (v[order] if isinstance(v, np.ndarray) else [v[i] for i in order])
                 for k, v in cols.items()})


def _stats(values: np.ndarray) -> dict[str, float | int | None]:
    v = values[np.isfinite(values)]
    if not len(v):
        return {"median": None, "p90": None, "max": None}
    return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
            "max": float(v.max())}


def _share(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if len(flags) else None


def _floors_apart(g: Rows, feasible: np.ndarray) -> dict[str, float | None]:
    """The two floors apart, over the feasible scenarios: fits memory and meets the nominal
    floor (`met_nominal_<split>`) / the worst-k floor (`met_worst_k_<split>`; no k floor
    counts as met); and the failure-weighted expected accuracy's median on each split. The
    sweep's scenarios set no latency cap, so `satisfied_<split>` is both floors together."""
    fits = g["fits"].astype(bool)
    k_floor = g["min_accuracy_k"].astype(float)
    out: dict[str, float | None] = {}
    for split in ("val", "test"):
        acc = g[f"accuracy_{split}"].astype(float)
        worst = g[f"worst_k_{split}"].astype(float)
        nominal = fits & (acc >= g["min_accuracy"].astype(float))
        worst_k = fits & (np.isnan(k_floor) | (worst >= k_floor))
        out[f"met_nominal_{split}"] = _share(nominal[feasible])
        out[f"met_worst_k_{split}"] = _share(worst_k[feasible])
        exp = g[f"expected_{split}"].astype(float)
        exp = exp[np.isfinite(exp)]
        out[f"expected_accuracy_{split}"] = float(np.median(exp)) if len(exp) else None
    return out


def summarize(rows: Rows) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """summary[generator][cost_model][method] (module docstring)."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for gen in rows.values("generator"):
        for cm in rows.values("cost_model"):
            for method in rows.values("method"):
                g = rows.where((rows["generator"] == gen) & (rows["cost_model"] == cm)
                               & (rows["method"] == method))
                if not len(g):
                    continue
                feasible = g["scenario_feasible"].astype(bool)
                entry: dict[str, Any] = {r: _stats(g[r].astype(float)) for r in RATIOS}
                entry["feasible"] = _share(g["fits"].astype(bool))
                entry["satisfied_val"] = _share(g["satisfied_val"].astype(bool)[feasible])
                entry["satisfied_test"] = _share(g["satisfied_test"].astype(bool)[feasible])
                entry.update(_floors_apart(g, feasible))
                out.setdefault(str(gen), {}).setdefault(str(cm), {})[str(method)] = entry
    return out


def counts(rows: Rows) -> dict[str, dict[str, int]]:
    """Per generator: scenarios, feasible ones (the least over cost models), scenarios whose
    floor is the relative equivalent of an infeasible absolute one, multi-camera fleets, and
    plans (scenarios x cost models) whose answer the search proved optimal (`plan_proven`)
    out of the plans made."""
    out: dict[str, dict[str, int]] = {}
    for gen in rows.values("generator"):
        plans = rows.where((rows["generator"] == gen) & (rows["method"] == "plan"))
        cms = plans.values("cost_model")
        first = plans.where(plans["cost_model"] == cms[0])
        out[str(gen)] = {
            "scenarios": int(len(first)),
            "feasible": int(min(plans["scenario_feasible"][plans["cost_model"] == cm]
                                .astype(bool).sum() for cm in cms)),
            "relative_fallback": int((first["floor_kind"] == RELATIVE_FALLBACK).sum()),
            "multi_camera": int(first["multi_camera"].astype(bool).sum()),
            "plans": int(plans["scenario_feasible"].astype(bool).sum()),
            "plans_proven": int((plans["plan_proven"].astype(float) == 1).sum()
                                if "plan_proven" in plans.columns else 0),
        }
    return out


def plan_seconds(rows: Rows) -> dict[str, float | int]:
    s = rows["plan_s"][rows["method"] == "plan"].astype(float)
    s = s[np.isfinite(s)]
    return {"median": float(np.median(s)) if len(s) else math.nan,
            "mean": float(s.mean()) if len(s) else math.nan, "n": int(len(s))}
