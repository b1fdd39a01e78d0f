"""The plan file: versioned JSON, with its Pareto front as CSV and PNG beside it.

```json
{
  "format": "slimedge-plan", "format_version": 1, "created": "2025-01-01T00:00:00Z",
  "ladder": {"path": "...", "model_hash": "...", "dataset_hash": "...", "levels": [0.0, ...],
             "views": 12, "feature_dim": 128, "pool_mode": "max", ...},
  "fleet": {"name": "mixed12", "aggregator": {...}, "devices": [...]},
  "constraints": {"min_accuracy": 0.85, "k_failures": 2, "min_accuracy_k": 0.8, ...},
  "cost_model": "per-layer", "link_latency": "expected", "frame_period_ms": 1000.0,
  "down": [],
  "search": {"algorithm": "NSGA-II (pymoo)", "seed": 0, "selection_rule": "...", ...},
  "views": [{"view": 0, "device": "cam00", "board": "esp32s3", "level_index": 3,
             "level": 0.3, "format": "int8", "total_ms": 112.9, "ram_margin_bytes": ...}],
  "predicted": {"latency_ms": ..., "latency_breakdown": {...}, "energy_mj": ...,
                "battery_life_h": ..., "model_bytes": ...,
                "val": {"accuracy", "expected_accuracy", "expected_accuracy_neglected_mass",
                        "worst_k_accuracy", "worst_k_dead_views", "k"},
                "test": {...}, "meets": {...}},
  "pareto": {"csv": "plan.pareto.csv", "png": "plan.pareto.png", "points": 7},
  "baselines": {"uniform": {"levels": [...], "latency_ms": ..., "val": {...}, ...}, ...},
  "contingency": {"k": 2, "rows_pool_mode": "max", "rows": [{"dead_mask": 1,
                  "dead_devices": ["cam00"], "weights": [...], "accuracy": {...}, ...}]}
}
```

`views[*].level_index` and `views[*].device` are what `slimedge export` reads. Every file is
written atomically; the JSON is written last.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimedge import _core
from slimedge.artifacts import atomic_file, read_versioned_json, write_json
from slimedge.plan import PlanError

PLAN_FORMAT = "slimedge-plan"
PLAN_VERSION = 1
PARETO_FIELDS = ("rank", "levels", "latency_ms", "expected_accuracy", "accuracy",
                 "worst_k_accuracy", "energy_mj", "battery_life_h", "model_bytes", "chosen")


class PlanFileError(PlanError):
    """A plan file that is missing, damaged, or of another format; names the field."""


def side_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """`<plan>.pareto.csv` and `<plan>.pareto.png` next to `<plan>.json`."""
    stem = Path(path).with_suffix("")
    return Path(f"{stem}.pareto.csv"), Path(f"{stem}.pareto.png")


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None, NumPy scalars and arrays become Python values."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def pareto_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PARETO_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("-".join(str(j) for j in r[k]) if k == "levels" else r.get(k))
                    for k in PARETO_FIELDS})
    return buf.getvalue()


def write_plan(path: str | os.PathLike, plan: Mapping[str, Any],
               pareto_rows: Sequence[Mapping[str, Any]], png: bytes | None) -> dict[str, Any]:
    """Write the plan JSON and its Pareto CSV (and PNG); returns the plan as written."""
    path = Path(path)
    csv_path, png_path = side_paths(path)
    plan = _clean(dict(plan))
    plan["pareto"] = {"csv": csv_path.name, "png": png_path.name if png else None,
                      "points": len(pareto_rows)}
    with atomic_file(csv_path) as fh:
        fh.write(pareto_csv(pareto_rows))
    if png:
        with atomic_file(png_path, "wb") as fh:
            fh.write(png)
    write_json(path, plan)
    return plan


def _fail(path: Path, field: str, msg: str) -> PlanFileError:
    return PlanFileError(f"{path}: {field}: {msg}")


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a plan file (format, version, and the fields export and the runtime
    read); errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise PlanFileError(f"{path}: no such plan file")
    plan = read_versioned_json(path, fmt=PLAN_FORMAT, version=PLAN_VERSION,
                               error=PlanFileError, remedy="plan again")
    views = plan.get("views")
    if not isinstance(views, list) or not views:
        raise _fail(path, "views", "expected a non-empty list")
    n_levels = len(plan.get("ladder", {}).get("levels", [])) or None
    for i, v in enumerate(views):
        if not isinstance(v, dict):
            raise _fail(path, f"views[{i}]", "expected an object")
        if v.get("view") != i:
            raise _fail(path, f"views[{i}].view", f"expected {i}, got {v.get('view')!r}")
        j = v.get("level_index")
        if isinstance(j, bool) or not isinstance(j, int) or j < 0 or (
                n_levels is not None and j >= n_levels):
            raise _fail(path, f"views[{i}].level_index", f"expected a level index, got {j!r}")
        if not isinstance(v.get("device"), str) or not v["device"]:
            raise _fail(path, f"views[{i}].device", "expected a device id")
    table = plan.get("contingency")
    if not isinstance(table, dict) or not isinstance(table.get("rows"), list):
        raise _fail(path, "contingency.rows", "expected a list of rows")
    for i, row in enumerate(table["rows"]):
        where = f"contingency.rows[{i}]"
        mask = row.get("dead_mask") if isinstance(row, dict) else None
        if isinstance(mask, bool) or not isinstance(mask, int) or mask <= 0 \
                or mask >= 1 << len(views):
            raise _fail(path, f"{where}.dead_mask", f"expected a bitmask of dead views, "
                        f"got {mask!r}")
        w = row.get("weights")
        if not isinstance(w, list) or len(w) != len(views) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                and x >= 0 for x in w):
            raise _fail(path, f"{where}.weights", f"expected {len(views)} finite weights >= 0")
    return plan


def contingency_table(plan: Mapping[str, Any]) -> _core.ContingencyTable:
    """The plan's contingency rows as the C++ core's table (dead-view bitmask -> weights)."""
    V = len(plan["views"])
    rows = {int(r["dead_mask"]): np.asarray(r["weights"], np.float32)
            for r in plan["contingency"]["rows"]}
    try:
        return _core.ContingencyTable(V, rows)
    except ValueError as exc:
        raise PlanFileError(f"contingency table: {exc}") from None
