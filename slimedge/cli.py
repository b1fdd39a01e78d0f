"""`slimedge <stage> ...`: one command per pipeline stage, each able to print --json."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from slimedge.errors import SlimEdgeError

Handler = Callable[[argparse.Namespace], dict[str, Any]]


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")


def _data_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.data import commands as cmd

    data = sub.add_parser("data", help="make, import and inspect multi-view datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    p = dsub.add_parser("generate", help="render the built-in parametric 3D objects (no download)")
    p.add_argument("--out", required=True, help="dataset directory to write")
    cmd.add_generate_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.generate)

    p = dsub.add_parser("import-modelnet", help="import ModelNet40 12-view renders")
    p.add_argument("root", help="<root>/<class>/<split>/<class>_<NNNN>.obj.shaded_v<VVV>.png")
    p.add_argument("--out", required=True, help="dataset directory to write")
    cmd.add_modelnet_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.import_modelnet)

    p = dsub.add_parser("import-meshes", help="render your own meshes with the camera ring")
    p.add_argument("root", help="<root>/<class>/{train,test}/*.{off,obj,stl}")
    p.add_argument("--out", required=True, help="dataset directory to write")
    cmd.add_meshes_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.import_meshes)

    p = dsub.add_parser("info", help="summarize a dataset")
    p.add_argument("path")
    p.add_argument("--verify", action="store_true", help="recompute and check the content hash")
    _add_json(p)
    p.set_defaults(handler=cmd.info)

    p = dsub.add_parser("show", help="write an objects x views contact sheet (PNG)")
    p.add_argument("path")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--objects", type=int, default=8, help="rows (objects) in the sheet")
    p.add_argument("--split", default=None, help="take objects from this split only")
    p.add_argument("--seed", type=int, default=0, help="which objects are picked")
    _add_json(p)
    p.set_defaults(handler=cmd.show)


def _device_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.devices import commands as cmd

    devices = sub.add_parser("devices", help="the device catalog (firmware_configs/devices)")
    dsub = devices.add_subparsers(dest="devices_command", required=True, metavar="COMMAND")
    p = dsub.add_parser("list", help="list the boards of the catalog")
    cmd.add_list_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.list_boards)
    p = dsub.add_parser("show", help="every field of one board, with its source")
    cmd.add_show_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.show_board)

    fleet = sub.add_parser("fleet", help="fleet files (firmware_configs/fleets)")
    fsub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    p = fsub.add_parser("show", help="the devices of a fleet, their boards and views")
    cmd.add_fleet_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.show_fleet)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge.model import commands as cmd

    p = sub.add_parser("train", help="train the MVCNN (branch + head) with failout")
    cmd.add_train_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.train)


def _ladder_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.ladder import commands as cmd

    ladder = sub.add_parser("ladder", help="the pruning ladder: levels, measured costs")
    lsub = ladder.add_subparsers(dest="ladder_command", required=True, metavar="COMMAND")
    p = lsub.add_parser("build", help="prune, fine-tune, measure and cache every level")
    cmd.add_build_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.build)

    p = lsub.add_parser("info", help="per-level measured costs and accuracy")
    p.add_argument("ladder")
    _add_json(p)
    p.set_defaults(handler=cmd.info)

    p = sub.add_parser("evaluate", help="system accuracy of a level per view and a failure set")
    p.add_argument("ladder")
    p.add_argument("--levels", required=True,
                   help="level index per view (0,0,3,...), one for all, or fractions (0.5,...)")
    p.add_argument("--dead", default=None, help="failed views, e.g. 2,5")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--vs-failed", action="store_true",
                   help="also accuracy vs number of failed views (mean and worst)")
    _add_json(p)
    p.set_defaults(handler=cmd.evaluate)

    p = sub.add_parser("importance", help="view importance: Shapley, leave-one-out, ratio")
    p.add_argument("ladder")
    p.add_argument("--levels", default=None, help="levels to measure at (default: all 0)")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--out", default=None, help="write the result as JSON here (and a .png)")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    _add_json(p)
    p.set_defaults(handler=cmd.importance)


def _plan_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge.plan import commands as cmd

    p = sub.add_parser("plan", help="search per-view pruning levels for a fleet, with "
                                    "contingency plans and baselines")
    cmd.add_plan_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.plan)


def _export_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.export import commands as cmd

    keys = sub.add_parser("keys", help="signing keys for deployments")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    p = ksub.add_parser("generate", help="a new Ed25519 key pair (private + public PEM)")
    cmd.add_keys_generate_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.keys_generate)

    p = sub.add_parser("export", help="per-device artifacts, verified, in a signed deployment")
    cmd.add_export_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.export)

    p = sub.add_parser("verify", help="check a deployment: signature, hashes, artifacts load")
    cmd.add_verify_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd.verify)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge import demo

    p = sub.add_parser("demo", help="run the whole pipeline on built-in defaults")
    p.add_argument("--work", default="./slimedge-work", help="work folder")
    p.add_argument("--quick", action="store_true", help="a small version that runs in minutes")
    p.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    p.add_argument("--workers", type=int, default=None, help="processes for parallel stages")
    _add_json(p)
    p.set_defaults(handler=demo.run_demo)


def build_parser() -> argparse.ArgumentParser:
    from slimedge import __version__

    parser = argparse.ArgumentParser(
        prog="slimedge",
        description="Deploy one multi-view CNN over a fleet of unequal edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"slimedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _data_parsers(sub)
    _train_parser(sub)
    _ladder_parsers(sub)
    _device_parsers(sub)
    _plan_parser(sub)
    _export_parsers(sub)
    _demo_parser(sub)
    return parser


def _print_text(obj: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, dict | list) and value and not _is_flat_list(value):
                print(f"{pad}{key}:")
                _print_text(value, indent + 1)
            else:
                print(f"{pad}{key}: {_short(value)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                print(f"{pad}-")
                _print_text(item, indent + 1)
            else:
                print(f"{pad}- {_short(item)}")
    else:
        print(f"{pad}{_short(obj)}")


def _is_flat_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, dict | list) for v in value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value)
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        summary = handler(args)
    except SlimEdgeError as exc:
        print(f"slimedge {args.command}: error: {exc}", file=sys.stderr)
        # Some errors are answers too (an infeasible plan): scripts get them as JSON.
        if getattr(exc, "summary", None) is not None and getattr(args, "json", False):
            print(json.dumps(exc.summary, default=str))
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        if getattr(args, "json", False):
            print(json.dumps(summary, default=str))
        elif summary:
            _print_text(summary)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
