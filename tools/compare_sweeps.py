#!/usr/bin/env python3
"""Are two `slimedge simulate` folders' rows the same? Rows are matched on (generator,
scenario, seed, cost model, method) over the scenarios both folders hold; every column but the
timing ones (`evaluate.TIMING_COLUMNS`) must be equal, NaN equal to NaN. Use it to check that
a scenario is fixed by its seed whatever ran it (1 worker, 2 workers, an external scheduler,
a resumed run):

    slimedge simulate --ladder L --scenarios 10 --scheduler tcp://127.0.0.1:8786 --out ext
    python tools/compare_sweeps.py ext big-sweep        # --json for one object

Exit status 0 when every shared row is equal and there is at least one, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from slimedge.simulate.evaluate import TIMING_COLUMNS
from slimedge.simulate.results import read_rows
from slimedge.simulate.runner import CHUNKS_DIR

KEY = ("generator", "scenario", "seed", "cost_model", "method")


def rows_of(folder: Path) -> dict[tuple, dict[str, Any]]:
    paths = sorted((folder / CHUNKS_DIR).glob("*.parquet"))
    if not paths:
        raise SystemExit(f"{folder}: no chunks under {folder / CHUNKS_DIR} (the --out folder "
                         "of a slimedge simulate run?)")
    out = {}
    for r in read_rows(paths).records():
        out[tuple(r[k] for k in KEY)] = {k: v for k, v in r.items() if k not in TIMING_COLUMNS}
    return out


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


def compare(a: Path, b: Path) -> dict[str, Any]:
    ra, rb = rows_of(a), rows_of(b)
    shared = sorted(set(ra) & set(rb), key=str)
    differ = []
    for k in shared:
        cols = sorted(c for c in set(ra[k]) | set(rb[k])
                      if not _equal(ra[k].get(c), rb[k].get(c)))
        if cols:
            differ.append({"row": dict(zip(KEY, k, strict=True)), "columns": cols})
    scenarios = sorted({(k[0], k[1]) for k in shared})
    return {"a": str(a), "b": str(b), "shared_rows": len(shared),
            "shared_scenarios": len(scenarios), "equal_rows": len(shared) - len(differ),
            "differing_rows": len(differ), "differ": differ[:20],
            "only_in_a": len(set(ra) - set(rb)), "only_in_b": len(set(rb) - set(ra)),
            "ignored_columns": list(TIMING_COLUMNS)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="a slimedge simulate --out folder")
    p.add_argument("b", type=Path, help="another one")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = compare(args.a, args.b)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['shared_scenarios']} scenarios ({r['shared_rows']} rows) in both; "
              f"{r['equal_rows']} rows equal, {r['differing_rows']} differ (ignoring "
              f"{', '.join(r['ignored_columns'])}); {r['only_in_a']} rows only in {r['a']}, "
              f"{r['only_in_b']} only in {r['b']}")
        for d in r["differ"]:
            print(f"  differs: {d['row']}: {', '.join(d['columns'])}")
    return 0 if r["shared_rows"] and not r["differing_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
