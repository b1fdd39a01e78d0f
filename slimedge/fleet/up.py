"""`slimedge fleet up`: a whole fleet on this machine, with failures injected on a schedule.

One run, top to bottom:

1. read the deployment, its dataset (the test split is replayed: device of view v sends view v
   of object i as frame i) and the evaluator the fleet is checked against; refuse a bad
   schedule before anything starts;
2. start a broker (Mosquitto from PATH on a free loopback port, else the embedded one) unless
   `--broker` names one, the aggregator, and one agent process per device, all given one
   start time: frame i is captured at start + i / fps;
3. at start + t, SIGKILL each `--kill` device, SIGSTOP each `--hang` device (a hung board:
   its connection stays open, so only its missing heartbeats give it away), start a new agent
   for each `--restart` device (a hung one is killed first),
   and stop and start the broker for `--restart-broker`;
4. after the last frame's deadline, stop every process by its pid (also on an error or
   Ctrl-C), then summarise the run folder (`slimedge.fleet.summary`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimedge.artifacts import write_json
from slimedge.fleet.processes import Supervisor, log_tail
from slimedge.fleet.reference import (
    SPLIT,
    artifact_reference,
    device_ids,
    find_dataset,
    find_ladder,
    load_deployment,
    make_reference,
)
from slimedge.fleet.run_folder import INJECTIONS_FILE, RUN_FILE, append_jsonl
from slimedge.fleet.schedule import (
    FleetUpError,
    Injection,
    check_story,
    parse_schedule,
    parse_time,
)

if TYPE_CHECKING:
    from slimedge.fleet.reference import Deployment, Reference

DEFAULT_FPS = 10.0
DEFAULT_HEARTBEAT_S = 1.0
AGGREGATOR = "aggregator"
CONTROLLER = "controller"
# Beside the deployment (not the demo's own `fleet/` stage folder, which is replaced whole).
RUNS_DIR = "fleet-runs"
STATE_DIR = "state"  # <run>/state/<device>: each agent's model slots
# Seconds from launching the processes to the first frame: a base plus a share per process
# (each imports NumPy, LiteRT and paho and verifies the deployment; on a busy 2-core machine
# a dozen of them take several seconds). `--startup-s` overrides it.
STARTUP_BASE_S = 3.0
STARTUP_PER_PROCESS_S = 0.4
# After the last frame is captured: the longest the aggregator may take to finish on its own.
AGGREGATOR_TAIL_S = 60.0


def add_up_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deploy", required=True, help="deployment directory (slimedge export)")
    p.add_argument("--broker", default=None,
                   help="use this broker (mqtt://host:port) instead of starting one")
    p.add_argument("--dataset", default=None,
                   help="the deployment's dataset (default: <deploy>/../dataset)")
    p.add_argument("--ladder", default=None,
                   help="the deployment's ladder, for the evaluator (default: "
                        "<deploy>/../ladder; without one the deployment's artifacts are run)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to replay (default: the whole test split)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frames per second")
    p.add_argument("--kill", default=None,
                   help="SIGKILL devices at times after the first frame: cam01@5s,cam02@7.5s")
    p.add_argument("--hang", default=None,
                   help="SIGSTOP devices (hung: the broker keeps their connection, no Last "
                        "Will; only missed heartbeats reveal them): cam03@5s")
    p.add_argument("--restart", default=None,
                   help="start a killed device again: cam01@20s")
    p.add_argument("--broker-kind", default="auto", choices=["auto", "mosquitto", "embedded"],
                   help="the broker to start: auto (Mosquitto if on PATH, else the embedded "
                        "amqtt broker), or one of them")
    p.add_argument("--restart-broker", default=None, metavar="TIME",
                   help="stop the broker at TIME after the first frame and start it again "
                        "(only a broker this command started)")
    p.add_argument("--broker-down", default="1s", metavar="TIME",
                   help="how long the broker stays down on --restart-broker (default 1s)")
    p.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT_S, metavar="S",
                   help="agents' heartbeat period in seconds (the aggregator's detector "
                        "counts in these periods)")
    p.add_argument("--slack-ms", type=float, default=None,
                   help="the aggregator's deadline slack (default: the aggregator's)")
    p.add_argument("--emulate-latency", action="store_true",
                   help="agents hold each result for their board's predicted time")
    p.add_argument("--run-dir", default=None,
                   help=f"run folder to write (default: <deploy>/../{RUNS_DIR}/<time>)")
    p.add_argument("--public-key", default=None,
                   help="the key the agents verify the deployment with (default: "
                        "<deploy>/../keys/public_key.pem)")
    p.add_argument("--startup-s", type=float, default=None,
                   help="seconds from launching the processes to the first frame")
    p.add_argument("--controller", action="store_true",
                   help="run the controller too (`slimedge controller run` on the deployment's "
                        "work folder): a device dead for --grace is planned without, the new "
                        "deployment exported and pushed; its deployments go to "
                        "<run>/controller-deployments")
    p.add_argument("--grace", type=float, default=1.0, metavar="S",
                   help="with --controller: seconds dead before the controller replans")
    p.add_argument("--lead", type=float, default=None, metavar="S",
                   help="with --controller: seconds of frames between the last one reported and "
                        "the switch frame (default: the controller's)")


@dataclass
class Prepared:
    """Everything checked before a process starts."""

    dep: Deployment
    dataset: Path
    frames: int
    fps: float
    kills: list[Injection]
    hangs: list[Injection]
    restarts: list[Injection]
    broker_restart_s: float | None
    broker_down_s: float
    reference: Reference
    artifacts: Reference
    ladder: Path | None
    run_dir: Path
    public_key: Path
    emulate_latency: bool
    broker_url: str | None
    startup_s: float
    heartbeat_s: float
    slack_ms: float | None
    broker_kind: str = "auto"
    controller: bool = False
    grace_s: float = 1.0
    lead_s: float | None = None

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps


def _public_key(args: argparse.Namespace) -> Path:
    """The key provisioned out of band (not the copy inside the deployment)."""
    from slimedge.export.deploy import KEYS_DIR
    from slimedge.export.signing import PUBLIC_KEY_NAME

    key = (Path(args.public_key) if args.public_key is not None
           else Path(args.deploy).parent / KEYS_DIR / PUBLIC_KEY_NAME)
    if not key.is_file():
        raise FleetUpError(f"{key}: no public key to verify the deployment with (pass the key "
                           "provisioned for it: --public-key)")
    return key


def prepare(args: argparse.Namespace) -> Prepared:
    from slimedge.data.container import load_dataset

    public_key = _public_key(args)
    dep = load_deployment(args.deploy, public_key)
    dataset = find_dataset(dep, args.dataset)
    n_split = len(load_dataset(dataset).indices(SPLIT))
    frames = n_split if args.frames is None else int(args.frames)
    if not 1 <= frames <= n_split:
        raise FleetUpError(f"--frames: {frames} is outside 1..{n_split} (the {SPLIT} split of "
                           f"{dataset} has {n_split} objects)")
    for option, value in (("--fps", args.fps), ("--heartbeat", args.heartbeat)):
        if not value > 0:
            raise FleetUpError(f"{option}: must be > 0, got {value}")
    kills = parse_schedule(args.kill, "--kill", device_ids(dep))
    hangs = parse_schedule(args.hang, "--hang", device_ids(dep))
    restarts = parse_schedule(args.restart, "--restart", device_ids(dep))
    check_story(sorted(kills + hangs, key=lambda i: i.at_s), restarts)
    duration = frames / args.fps
    for option, items in (("--kill", kills), ("--hang", hangs), ("--restart", restarts)):
        for inj in items:
            if inj.at_s >= duration:
                raise FleetUpError(f"{option}: {inj.device}@{inj.at_s:g}s is after the last "
                                   f"frame ({frames} frames at {args.fps:g} fps last "
                                   f"{duration:g} s)")
    if args.broker is not None:
        from slimedge.runtime.mqtt import MqttError, parse_broker_url

        try:
            parse_broker_url(args.broker)
        except MqttError as exc:
            raise FleetUpError(f"--broker: {exc}") from exc
    broker_restart = None
    if args.restart_broker is not None:
        if args.broker is not None:
            raise FleetUpError("--restart-broker: only a broker started by fleet up can be "
                               "restarted (drop --broker)")
        broker_restart = parse_time(args.restart_broker, "--restart-broker")
        if broker_restart >= duration:
            raise FleetUpError(f"--restart-broker: {broker_restart:g} s is after the last "
                               f"frame ({duration:g} s)")
    ladder, note = find_ladder(dep, args.ladder)
    reference = make_reference(dep, ladder, note, dataset, frames)
    # The ladder's evaluator is what the planner measured; the deployment's artifacts are
    # what the agents compute. Where they differ (a float16 board), both are reported.
    artifacts = (reference if reference.source == "artifacts" else
                 artifact_reference(dep, dataset, "the deployment's artifacts", frames))
    run_dir = (Path(args.run_dir) if args.run_dir is not None
               else dep.root.parent / RUNS_DIR / time.strftime("%Y%m%d-%H%M%S"))
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FleetUpError(f"{run_dir}: run folder exists and is not empty (give a new "
                           "--run-dir)")
    startup = (args.startup_s if args.startup_s is not None
               else STARTUP_BASE_S + STARTUP_PER_PROCESS_S * (len(dep.devices) + 1))
    if args.controller:
        _check_controller_work(dep.root)
        if not args.grace >= 0:
            raise FleetUpError(f"--grace: must be >= 0, got {args.grace}")
        if args.lead is not None and not args.lead > 0:
            raise FleetUpError(f"--lead: must be > 0, got {args.lead}")
    return Prepared(dep, dataset, frames, float(args.fps), kills, hangs, restarts,
                    broker_restart,
                    parse_time(args.broker_down, "--broker-down"), reference, artifacts, ladder,
                    run_dir,
                    public_key, bool(args.emulate_latency), args.broker, float(startup),
                    float(args.heartbeat), args.slack_ms, args.broker_kind,
                    bool(args.controller), float(args.grace), args.lead)


def _check_controller_work(deploy: Path) -> None:
    """The controller replans from the deployment's work folder: it must be `<work>/deploy`
    with the plan, ladder, dataset and key beside it."""
    from slimedge.fleet.controller_plan import ControllerError, ControllerWork

    if deploy.resolve() != (deploy.resolve().parent / "deploy"):
        raise FleetUpError(f"--controller: {deploy} is not a work folder's deploy/ (the "
                           "controller replans from the plan, ladder and key beside it)")
    try:
        ControllerWork(deploy.resolve().parent)
    except ControllerError as exc:
        raise FleetUpError(f"--controller: {exc}") from exc


# --------------------------------------------------------------------------- commands


def _slimedge(*argv: str) -> list[str]:
    """A `slimedge ...` command line run with this interpreter (the venv's, not PATH's)."""
    return [sys.executable, "-m", "slimedge.cli", *argv]


def agent_argv(p: Prepared, device: str, broker: str, start_ns: int) -> list[str]:
    argv = _slimedge("agent", "run", "--deploy", str(p.dep.root), "--device", device,
                     "--broker", broker, "--public-key", str(p.public_key),
                     "--source", f"replay:{p.dataset}", "--fps", f"{p.fps:g}",
                     "--frames", str(p.frames), "--start-at", str(start_ns),
                     "--heartbeat", f"{p.heartbeat_s:g}",
                     # Model slots per run: each run starts from the deployment, and a
                     # restart inside the run keeps what the device had.
                     "--state", str(p.run_dir / STATE_DIR / device))
    return [*argv, "--emulate-latency"] if p.emulate_latency else argv


def controller_argv(p: Prepared, broker: str) -> list[str]:
    from slimedge.fleet.controller_recovery import CONTROLLER_DEPLOYMENTS, CONTROLLER_LOG

    argv = _slimedge("controller", "run", "--work", str(p.dep.root.resolve().parent),
                     "--broker", broker, "--grace", f"{p.grace_s:g}",
                     "--heartbeat", f"{p.heartbeat_s:g}",
                     "--log", str(p.run_dir / CONTROLLER_LOG),
                     "--deployments", str(p.run_dir / CONTROLLER_DEPLOYMENTS),
                     "--public-key", str(p.public_key))
    return argv if p.lead_s is None else [*argv, "--lead", f"{p.lead_s:g}"]


def aggregator_argv(p: Prepared, broker: str, start_ns: int) -> list[str]:
    argv = _slimedge("aggregator", "run", "--deploy", str(p.dep.root), "--broker", broker,
                     "--public-key", str(p.public_key), "--run-dir", str(p.run_dir),
                     "--dataset", str(p.dataset), "--heartbeat", f"{p.heartbeat_s:g}",
                     "--fps", f"{p.fps:g}", "--frames", str(p.frames),
                     "--start-at", str(start_ns))
    return argv if p.slack_ms is None else [*argv, "--slack-ms", f"{p.slack_ms:g}"]


# --------------------------------------------------------------------------- the run


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM to `fleet up` unwinds like Ctrl-C, so every child is still stopped."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a test calling in a thread): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass
class _Action:
    at_s: float
    kind: str  # kill | hang | restart | broker-restart
    device: str | None = None


def _actions(p: Prepared) -> list[_Action]:
    acts = [_Action(i.at_s, "kill", i.device) for i in p.kills]
    acts += [_Action(i.at_s, "hang", i.device) for i in p.hangs]
    acts += [_Action(i.at_s, "restart", i.device) for i in p.restarts]
    if p.broker_restart_s is not None:
        acts.append(_Action(p.broker_restart_s, "broker-restart"))
    return sorted(acts, key=lambda a: (a.at_s, a.kind == "restart"))


def execute(p: Prepared, say: Any = None) -> dict[str, Any]:
    """Run the fleet; returns the run's record (run.json); the run folder holds the rest.
    Every process is stopped, by its pid, when this returns or raises."""
    from slimedge.fleet.broker import start_broker
    from slimedge.fleet.monitor import FleetMonitor
    from slimedge.runtime.mqtt import parse_broker_url

    say = say or (lambda msg: None)
    p.run_dir.mkdir(parents=True, exist_ok=True)
    devices = device_ids(p.dep)
    broker = monitor = None
    with _sigterm_as_interrupt(), Supervisor(p.run_dir) as sup:
        try:
            if p.broker_url is None:
                broker = start_broker(kind=p.broker_kind, workdir=p.run_dir / "broker")
                url, kind = broker.url, broker.kind
                say(f"broker: {kind} (pid {broker.pid}) at {url}")
            else:
                url, kind = p.broker_url, "external"
                say(f"broker: given, {parse_broker_url(url)}")
            monitor = FleetMonitor(url, p.dep.fleet, p.run_dir).start()
            start_ns = time.time_ns() + int(p.startup_s * 1e9)
            info = {"deployment_id": p.dep.manifest.deployment_id, "deploy": str(p.dep.root),
                    "dataset": str(p.dataset), "frames": p.frames, "fps": p.fps,
                    "start_ns": start_ns, "devices": devices, "fleet": p.dep.fleet,
                    "views_of": {d: list(p.dep.devices[d].views) for d in devices},
                    "kills": [i.__dict__ for i in p.kills],
                    "hangs": [i.__dict__ for i in p.hangs],
                    "restarts": [i.__dict__ for i in p.restarts],
                    "broker_restart_s": p.broker_restart_s, "broker_down_s": p.broker_down_s,
                    "broker": {"kind": kind, "url": str(parse_broker_url(url)),
                               "pid": None if broker is None else broker.pid},
                    "emulate_latency": p.emulate_latency, "heartbeat_s": p.heartbeat_s,
                    "evaluator": {"source": p.reference.source, "note": p.reference.note,
                                  "ladder": None if p.ladder is None else str(p.ladder)},
                    "public_key": str(p.public_key), "controller": p.controller,
                    "grace_s": p.grace_s if p.controller else None}
            write_json(p.run_dir / RUN_FILE, info)
            sup.start(AGGREGATOR, aggregator_argv(p, url, start_ns))
            for device in devices:
                sup.start(device, agent_argv(p, device, url, start_ns))
            if p.controller:
                sup.start(CONTROLLER, controller_argv(p, url))
            say(f"{len(devices)} agents + aggregator started; first frame in "
                f"{(start_ns - time.time_ns()) / 1e9:.1f} s")
            late = monitor.wait_up(devices, start_ns)
            info["not_up_at_first_frame"] = late
            info["all_up_before_first_frame_s"] = (
                None if late else round((start_ns - time.time_ns()) / 1e9, 3))
            write_json(p.run_dir / RUN_FILE, info)
            if late:
                say(f"not up when the first frame was due: {', '.join(late)} (their first "
                    "frames may be lost; a longer --startup-s helps)")
            _drive(p, sup, broker, url, start_ns, say)
            if p.controller:
                # Stopped when the last frame is captured, before the agents finish their
                # replay: their clean exits end the run, they are not devices to plan without.
                last_ns = start_ns + int((p.frames - 1) / p.fps * 1e9)
                while time.time_ns() < last_ns and sup.children[AGGREGATOR].running():
                    time.sleep(0.05)
                sup.stop(CONTROLLER)
            _wait_for_aggregator(p, sup, start_ns)
        finally:
            if monitor is not None:
                monitor.close()
            # Agents first (no more frames), then the aggregator (on SIGTERM it writes its
            # results and metrics), then the broker.
            sup.stop_all(order=[CONTROLLER, *devices, AGGREGATOR])
            if broker is not None:
                broker.stop()
    return info


def _drive(p: Prepared, sup: Supervisor, broker: Any, url: str, start_ns: int,
           say: Any) -> None:
    """Carry out the schedule at its times."""
    injections = p.run_dir / INJECTIONS_FILE
    for act in _actions(p):
        _wait_until(start_ns + int(act.at_s * 1e9), sup)
        if act.kind == "kill":
            t = sup.kill(act.device)
            append_jsonl(injections, {"kind": "kill", "device": act.device, "t_ns": t,
                                      "at_s": act.at_s})
            say(f"t={act.at_s:g}s: SIGKILL {act.device}")
        elif act.kind == "hang":
            t = sup.hang(act.device)
            append_jsonl(injections, {"kind": "hang", "device": act.device, "t_ns": t,
                                      "at_s": act.at_s})
            say(f"t={act.at_s:g}s: SIGSTOP {act.device}")
        elif act.kind == "restart":
            if sup.children[act.device].running():  # hung: gone for good before the new one
                sup.kill(act.device)
            t = time.time_ns()
            sup.start(act.device, agent_argv(p, act.device, url, start_ns))
            append_jsonl(injections, {"kind": "restart", "device": act.device, "t_ns": t,
                                      "at_s": act.at_s})
            say(f"t={act.at_s:g}s: restart {act.device}")
        else:
            t = time.time_ns()
            broker.restart(down_s=p.broker_down_s)
            append_jsonl(injections, {"kind": "broker-restart", "t_ns": t,
                                      "back_ns": time.time_ns(), "at_s": act.at_s})
            say(f"t={act.at_s:g}s: broker restarted (down {p.broker_down_s:g} s)")


def _wait_for_aggregator(p: Prepared, sup: Supervisor, start_ns: int) -> None:
    """The aggregator knows the replay's schedule and exits once the last frame's deadline
    has passed; wait for that (a bounded time: past it, it is stopped like everything else)."""
    child = sup.children[AGGREGATOR]
    limit = start_ns + int((p.duration_s + AGGREGATOR_TAIL_S) * 1e9)
    while child.running() and time.time_ns() < limit:
        time.sleep(0.1)
    if not child.running() and child.popen.returncode != 0:
        log = sup.logs / f"{AGGREGATOR}.log"
        raise FleetUpError(f"the aggregator (pid {child.pid}) exited with code "
                           f"{child.popen.returncode}; its log ({log}):\n{log_tail(log)}")


def _wait_until(t_ns: int, sup: Supervisor) -> None:
    """Sleep until `t_ns`, failing early if the aggregator dies (agents may exit: that is a
    failure the run records, not a reason to stop)."""
    while True:
        for child in sup.exited():
            if child.name == AGGREGATOR:
                log = sup.logs / f"{AGGREGATOR}.log"
                raise FleetUpError(f"the aggregator (pid {child.pid}) exited with code "
                                   f"{child.popen.returncode}; its log ({log}):\n"
                                   f"{log_tail(log)}")
        left = (t_ns - time.time_ns()) / 1e9
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


def fleet_up(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.fleet.summary import summarise

    def say(msg: str) -> None:
        if not args.json:
            print(f"[fleet] {msg}", file=sys.stderr, flush=True)

    p = prepare(args)
    say(f"deployment {p.dep.manifest.deployment_id}: {len(p.dep.devices)} devices, "
        f"{p.frames} frames at {p.fps:g} fps; evaluator from {p.reference.source} "
        f"({p.reference.note})")
    execute(p, say)
    summary = summarise(p.run_dir, p.dep, p.reference, artifacts=p.artifacts)
    say(f"run folder {p.run_dir}")
    return summary



def up_options(deploy: str | os.PathLike, **values: Any) -> argparse.Namespace:
    """The options of `fleet up` as a program passes them (the command's defaults for the
    rest); an unknown name is a TypeError, as for a function."""
    parser = argparse.ArgumentParser()
    add_up_options(parser)
    ns = parser.parse_args(["--deploy", str(deploy)])
    for key, value in values.items():
        if not hasattr(ns, key):
            raise TypeError(f"fleet up has no option {key!r}")
        setattr(ns, key, value)
    ns.json = True
    return ns


def run_into(out: Path, deploy: str | os.PathLike, **values: Any) -> dict[str, Any]:
    """One run written into `out` whole (a failed run leaves the previous one), summarised
    in place: what the demo's fleet stage calls."""
    from slimedge.artifacts import atomic_dir
    from slimedge.fleet.summary import summarise

    with atomic_dir(out) as tmp:
        p = prepare(up_options(deploy, run_dir=tmp, **values))
        execute(p)
    return summarise(out, p.dep, p.reference, artifacts=p.artifacts)


def summarise_again(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Summarise a finished run folder anew (its deployment, dataset and ladder as run.json
    records them), e.g. after the run was interrupted before its summary."""
    import json

    from slimedge.fleet.summary import summarise

    run_dir = Path(run_dir)
    try:
        info = json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FleetUpError(f"{run_dir}: not a readable fleet run folder ({exc})") from exc
    dep = load_deployment(info["deploy"], info["public_key"])
    dataset = Path(info["dataset"])
    ladder = info["evaluator"].get("ladder")
    ladder, note = find_ladder(dep, ladder) if ladder else (None, "no ladder")
    frames = int(info["frames"])
    reference = make_reference(dep, ladder, note, dataset, frames)
    artifacts = (reference if reference.source == "artifacts" else
                 artifact_reference(dep, dataset, "the deployment's artifacts", frames))
    return summarise(run_dir, dep, reference, artifacts=artifacts)
