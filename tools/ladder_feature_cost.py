"""What caching every feature variant costs a ladder build, from the ladder's own record.

A ladder records, per level, the seconds its build took (`seconds`: prune, fine-tune, convert,
measure, cache) and the seconds each feature variant's inference pass took
(`feature_seconds`). Before feature variants, only the int8 (LiteRT) pass ran; the others
(int8 in TFLite Micro, float16, dynamic, float32) are the added cost. Prints one table (per
level and in total: build seconds, int8 pass, added passes, added share) with the ladder's
provenance (CPU, versions, model hash); `--json` for the numbers.

    .venv/bin/python tools/ladder_feature_cost.py WORK/ladder [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slimedge.ladder.store import INT8, read_manifest  # noqa: E402


def cost_rows(manifest: dict) -> list[dict]:
    rows = []
    for e in manifest["levels"]:
        fs = e.get("feature_seconds")
        if fs is None:
            raise SystemExit(f"level {e['index']}: no feature_seconds (a ladder built before "
                             "feature variants were cached)")
        added = sum(s for v, s in fs.items() if v != INT8)
        rows.append({"index": e["index"], "level": e["level"], "seconds": e["seconds"],
                     "int8_s": fs[INT8], "added_s": round(added, 3),
                     "per_variant_s": {v: s for v, s in fs.items() if v != INT8},
                     "added_share": added / e["seconds"] if e["seconds"] else 0.0})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ladder")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    m = read_manifest(args.ladder)
    rows = cost_rows(m)
    total = sum(r["seconds"] for r in rows)
    added = sum(r["added_s"] for r in rows)
    out = {"ladder": str(args.ladder), "model_hash": m["model_hash"],
           "cpu": m.get("host", {}).get("cpu"), "versions": m.get("versions"),
           "build_seconds": m.get("seconds"), "levels_seconds": round(total, 3),
           "added_seconds": round(added, 3),
           "added_share": added / total if total else 0.0, "levels": rows}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    variants = list(rows[0]["per_variant_s"])
    print(f"ladder {args.ladder} (model {m['model_hash'][:12]}), CPU {out['cpu']}, "
          f"build {out['build_seconds']} s")
    print("| level | level s | int8 pass s | " + " | ".join(f"{v} s" for v in variants)
          + " | added s | added share |")
    print("|---" * (5 + len(variants)) + "|")
    for r in rows:
        print(f"| {r['level']:g} | {r['seconds']:.1f} | {r['int8_s']:.2f} | "
              + " | ".join(f"{r['per_variant_s'][v]:.2f}" for v in variants)
              + f" | {r['added_s']:.1f} | {r['added_share']:.1%} |")
    print(f"| all | {total:.1f} | {sum(r['int8_s'] for r in rows):.2f} | "
          + " | ".join(f"{sum(r['per_variant_s'][v] for r in rows):.2f}" for v in variants)
          + f" | {added:.1f} | {out['added_share']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
