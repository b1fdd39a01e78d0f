"""`slimedge <stage> ...`: one command per pipeline stage, each able to print --json."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError

Handler = Callable[[argparse.Namespace], dict[str, Any]]


def _command(sub: argparse._SubParsersAction, name: str, help: str, handler: Handler,
             *add_options: Callable[[argparse.ArgumentParser], None]
             ) -> argparse.ArgumentParser:
    """One subcommand: its options (from the stage's commands module), --json, its handler.
    Returns the parser for command-specific arguments."""
    p = sub.add_parser(name, help=help)
    for add in add_options:
        add(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(handler=handler)
    return p


def _group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with subcommands (`slimedge data generate`, ...)."""
    return sub.add_parser(name, help=help).add_subparsers(
        dest=f"{name}_command", required=True, metavar="COMMAND")


def _out_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="dataset directory to write")


def _data_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.data import commands as cmd

    dsub = _group(sub, "data", "make, import and inspect multi-view datasets")
    _command(dsub, "generate", "render the built-in parametric 3D objects (no download)",
             cmd.generate, _out_dir, cmd.add_generate_options)
    p = _command(dsub, "import-modelnet", "import ModelNet40 12-view renders",
                 cmd.import_modelnet, _out_dir, cmd.add_modelnet_options)
    p.add_argument("root", help="<root>/<class>/<split>/<class>_<NNNN>.obj.shaded_v<VVV>.png")
    p = _command(dsub, "import-meshes", "render your own meshes with the camera ring",
                 cmd.import_meshes, _out_dir, cmd.add_meshes_options)
    p.add_argument("root", help="<root>/<class>/{train,test}/*.{off,obj,stl}")
    p = _command(dsub, "info", "summarize a dataset", cmd.info)
    p.add_argument("path")
    p.add_argument("--verify", action="store_true", help="recompute and check the content hash")
    p = _command(dsub, "show", "write an objects x views contact sheet (PNG)", cmd.show)
    p.add_argument("path")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--objects", type=int, default=8, help="rows (objects) in the sheet")
    p.add_argument("--split", default=None, help="take objects from this split only")
    p.add_argument("--seed", type=int, default=0, help="which objects are picked")


def _device_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.devices import commands as cmd

    dsub = _group(sub, "devices", "the device catalog (firmware_configs/devices)")
    _command(dsub, "list", "list the boards of the catalog", cmd.list_boards,
             cmd.add_list_options).set_defaults(text=cmd.list_text)
    _command(dsub, "show", "every field of one board, with its source", cmd.show_board,
             cmd.add_show_options).set_defaults(text=cmd.board_text)
    fsub = _group(sub, "fleet", "fleet files (firmware_configs/fleets)")
    from slimedge.fleet import credentials as cred

    _command(fsub, "credentials", "broker password file, ACL and passwords for a deployment "
             "(each device may publish only on its own topics)", cred.credentials,
             cred.add_credentials_options)
    _command(fsub, "show", "the devices of a fleet, their boards and views", cmd.show_fleet,
             cmd.add_fleet_options).set_defaults(text=cmd.fleet_text)
    from slimedge.fleet import summary, up

    _command(fsub, "up", "run a deployment as a local fleet (broker, agent processes, "
             "aggregator) with injected failures", up.fleet_up,
             up.add_up_options).set_defaults(text=summary.summary_text)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge.model import commands as cmd

    p = _command(sub, "train", "train the MVCNN (branch + head) with failout", cmd.train,
                 cmd.add_train_options)
    p.set_defaults(library_log=True)


def _ladder_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.ladder import commands as cmd

    lsub = _group(sub, "ladder", "the pruning ladder: levels, measured costs")
    p = _command(lsub, "build", "prune, fine-tune, measure and cache every level", cmd.build,
                 cmd.add_build_options)
    p.set_defaults(library_log=True)
    p = _command(lsub, "info", "per-level measured costs and accuracy", cmd.info)
    p.add_argument("ladder")

    p = _command(sub, "evaluate", "system accuracy of a level per view and a failure set",
                 cmd.evaluate)
    p.add_argument("ladder")
    p.add_argument("--levels", required=True,
                   help="level index per view (0,0,3,...), one for all, or fractions (0.5,...)")
    p.add_argument("--dead", default=None, help="failed views, e.g. 2,5")
    p.add_argument("--features", default=None,
                   help="feature variant each view's device sends, one per view or one for "
                        "all: int8 (LiteRT, default), int8-tflm (TFLite Micro), float16, "
                        "dynamic, float32")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--vs-failed", action="store_true",
                   help="also accuracy vs number of failed views (mean and worst)")

    p = _command(sub, "importance", "view importance: Shapley, leave-one-out, ratio",
                 cmd.importance)
    p.add_argument("ladder")
    p.add_argument("--levels", default=None, help="levels to measure at (default: all 0)")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--out", default=None, help="write the result as JSON here (and a .png)")
    p.add_argument("--no-plot", dest="plot", action="store_false")


def _plan_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge.plan import commands as cmd

    _command(sub, "plan", "search per-view pruning levels for a fleet, with contingency plans "
             "and baselines", cmd.plan, cmd.add_plan_options)


def _simulate_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge.simulate import commands as cmd

    p = _command(sub, "simulate", "plan many random fleets against every baseline under each "
                 "cost model (Dask); results, summary, plots, simulate.md", cmd.simulate,
                 cmd.add_simulate_options)
    p.set_defaults(text=cmd.summary_text)


def _export_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.export import commands as cmd

    ksub = _group(sub, "keys", "signing keys for deployments")
    _command(ksub, "generate", "a new Ed25519 key pair (private + public PEM)",
             cmd.keys_generate, cmd.add_keys_generate_options)
    p = _command(sub, "export", "per-device artifacts, verified, in a signed deployment",
                 cmd.export, cmd.add_export_options)
    p.set_defaults(library_log=True)
    _command(sub, "verify", "check a deployment: signature, hashes, artifacts load",
             cmd.verify, cmd.add_verify_options)


def _aggregator_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.runtime import aggregator_service as agg

    asub = _group(sub, "aggregator", "the fleet's aggregator service")
    _command(asub, "run", "align, pool and classify a fleet's features over MQTT, with failure "
             "detection, a results database and metrics", agg.run, agg.add_run_options)


def _agent_parsers(sub: argparse._SubParsersAction) -> None:
    from slimedge.runtime import commands as cmd

    asub = _group(sub, "agent", "the device agent daemon (device side: no TensorFlow)")
    _command(asub, "run", "verify the deployment, run this device's branch per frame and "
             "publish features, heartbeats and status over MQTT", cmd.agent_run,
             cmd.add_agent_run_options)


# Commands a device runs: `main` builds only their parser, so a board with the `device` extra
# alone never imports a host module (TensorFlow, pymoo, ...) to parse the command line.
_DEVICE_COMMANDS = {"agent": _agent_parsers}


def _push_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge.fleet import push as cmd

    _command(sub, "push", "carry a signed deployment to running devices as signed "
             "per-device updates over MQTT", cmd.push, cmd.add_push_options)


def _controller_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge.fleet import controller as cmd

    csub = _group(sub, "controller", "the host process that replans when a device dies")
    _command(csub, "run", "watch the fleet; when a device stays dead (or comes back) replan, "
             "export and push the changed devices", cmd.controller_run,
             cmd.add_controller_options).set_defaults(text=cmd.summary_text)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    from slimedge import demo

    p = _command(sub, "demo", "run the whole pipeline on built-in defaults", demo.run_demo)
    p.add_argument("--work", default="./slimedge-work", help="work folder")
    p.add_argument("--quick", action="store_true", help="a small version that runs in minutes")
    p.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    p.add_argument("--workers", type=int, default=None, help="processes for parallel stages")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of training, the ladder and the search (the dataset stays fixed)")
    p.set_defaults(text=demo.summary_text)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only` (a key of _DEVICE_COMMANDS), just that command."""
    from slimedge import __version__

    parser = argparse.ArgumentParser(
        prog="slimedge",
        description="Deploy one multi-view CNN over a fleet of unequal edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"slimedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if only in _DEVICE_COMMANDS:
        _DEVICE_COMMANDS[only](sub)
        return parser
    _data_parsers(sub)
    _train_parser(sub)
    _ladder_parsers(sub)
    _device_parsers(sub)
    _plan_parser(sub)
    _simulate_parser(sub)
    _export_parsers(sub)
    _aggregator_parsers(sub)
    _agent_parsers(sub)
    _push_parser(sub)
    _controller_parser(sub)
    _demo_parser(sub)
    return parser


def _library_log(args: argparse.Namespace) -> Path | None:
    """Where a command that runs TensorFlow/LiteRT sends their messages: beside its output."""
    out = getattr(args, "out", None)
    if not getattr(args, "library_log", False) or not out:
        return None
    out = Path(out)
    return out.parent / f"{out.name}.log"


def _run_quietly(handler: Handler, args: argparse.Namespace) -> dict[str, Any]:
    """Run the handler; a command with a library log keeps warnings and native logs there
    (slimedge.console), so the console holds its own lines and progress bars only."""
    log = _library_log(args)
    if log is None:
        return handler(args)
    from slimedge.console import Console

    console = Console()
    try:
        with console.capture(log):
            summary = handler(args)
    finally:
        console.close()
    if not getattr(args, "json", False):
        print(f"(library messages: {log})", file=sys.stderr)
    return summary


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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=argv[0] if argv and argv[0] in _DEVICE_COMMANDS else None)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        summary = _run_quietly(handler, args)
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
        elif summary and getattr(args, "text", None):
            print(args.text(summary))  # the command's own layout (tables, a short summary)
        elif summary:
            _print_text(summary)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
