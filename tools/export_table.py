"""Print the per-device table of a deployment (the one `slimedge export` reports), read back
from its signed manifest after checking the signature and every file's hash.

    .venv/bin/python tools/export_table.py DEPLOY_DIR [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from slimedge.errors import SlimEdgeError
from slimedge.export.deploy import markdown_table, summary_from_deployment


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("deploy_dir", help="a deployment directory written by slimedge export")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    args = p.parse_args(argv)
    try:
        summary = summary_from_deployment(args.deploy_dir)
    except SlimEdgeError as exc:
        print(f"export_table: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1) if args.json else markdown_table(summary), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
