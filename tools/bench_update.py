"""Per-device apply time of a signed update pushed over MQTT (`slimedge push`), at full link
speed and through each board's own link speed (`--emulate-link`: BLE for the nRF52840).

    python tools/bench_update.py --old DEPLOY_A --new DEPLOY_B --key PRIVATE_PEM [--json]

Both deployments must be signed with the key. A broker (Mosquitto when installed) and one
device process per device are started; each device holds A/B slots provisioned with OLD and
applies updates the way an agent does (`UpdateLink`: verify, self-test in LiteRT / TFLite
Micro within the board's arena, swap between two frames, acknowledge). Each round pushes NEW,
then OLD back as a signed rollback order; `--repeats` rounds per link mode. Apply time =
push start -> the device's `applied` acknowledgment, measured by the pushing host (`host s`)
and on the device from its first update message to the swap (`device s`); medians.

    python tools/bench_update.py device ...   (the device process; started by the bench)

With `--agents DATASET` the devices are the real agents instead (`slimedge agent run`, one
process per device, replaying the dataset's test split at `--fps`): NEW is pushed once in
the middle of the replay, and a subscriber checks every device's frames: none lost, the
model hash switching from OLD's to NEW's at one frame and never back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _device(argv: list[str]) -> int:
    """One device: serves its slot's model, applies updates between its 'frames'."""
    from slimedge.runtime import topics
    from slimedge.runtime.mqtt import MqttClient
    from slimedge.runtime.selftest import self_test
    from slimedge.runtime.slots import UpdateSlots
    from slimedge.runtime.update import load_trust
    from slimedge.runtime.update_receiver import UpdateLink, UpdateReceiver

    url, fleet, device, board, state, public, stop = argv
    slots = UpdateSlots(state, load_trust(device, board, public), self_test=self_test)
    slots.recover()
    client = MqttClient(url, name=device).start()
    link = UpdateLink(client, fleet, UpdateReceiver(slots)).start()
    last = 0.0
    while not os.path.exists(stop):
        time.sleep(0.02)  # one frame at 50 fps
        link.swap_if_ready()
        if time.monotonic() - last > 0.5:
            info = slots.current()[1]
            client.publish(topics.heartbeat(fleet, device), json.dumps(
                {"device": device, "model_hash": info.model_sha256,
                 "update_sequence": info.sequence}))
            last = time.monotonic()
    link.stop()
    client.stop()
    return 0






def _versions() -> dict[str, str]:
    from slimedge import provenance

    return provenance.versions(extra=("paho-mqtt", "cryptography"))


def _cpu() -> str:
    from slimedge import provenance

    return f"{provenance.cpu_name()} ({os.cpu_count()} cores)"


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def bench(args: argparse.Namespace) -> dict:
    from slimedge.devices import load_catalog
    from slimedge.export import signing
    from slimedge.export.manifest import DeploymentManifest
    from slimedge.fleet.broker import start_broker
    from slimedge.fleet.push import run_push
    from slimedge.runtime import topics
    from slimedge.runtime.slots import UpdateSlots
    from slimedge.runtime.update import load_trust

    old, new = Path(args.old), Path(args.new)
    m_old = DeploymentManifest.from_json((old / "manifest.json").read_bytes())
    m_new = DeploymentManifest.from_json((new / "manifest.json").read_bytes())
    fleet = topics.fleet_name(m_new.deployment_id, m_new.created)
    catalog = load_catalog()
    work = Path(tempfile.mkdtemp(prefix="bench-update-"))
    public = work / "public_key.pem"
    public.write_bytes(signing.public_pem(signing.load_private_key(args.key).public_key()))
    devices = [d.device for d in m_new.devices]
    broker = start_broker(workdir=work / "broker")
    procs = []
    times: dict[str, dict[str, list[float]]] = {d: {} for d in devices}
    failures: list[str] = []
    payload: dict[str, int] = {}
    try:
        for d in m_new.devices:
            state = work / "state" / d.device
            UpdateSlots(state, load_trust(d.device, d.board, public)).provision_deployment(
                old, m_old, d.device)
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "device", broker.url, fleet, d.device, d.board,
                 str(state), str(public), str(work / "stop")], cwd=ROOT))
        time.sleep(2.0)
        for r in range(args.repeats):  # modes alternate, so a load drift hits both alike
            for mode in ("full", "link"):
                for deploy, rollback in ((new, False), (old, True)):
                    s = run_push(deploy, broker.url, key=args.key, fleet=fleet,
                                 timeout=args.timeout, listen=1.0, push_all=True,
                                 rollback=rollback, emulate_link=mode == "link",
                                 chunk_bytes=args.chunk_bytes)
                    for dev, o in s["devices"].items():
                        if o["status"] != "applied":
                            failures.append(f"{mode} round {r} {deploy.name} {dev}: "
                                            f"{o['status']} {o['reason']} {o['message']}")
                            continue
                        if deploy == new:
                            payload[dev] = o["bytes"]
                        times[dev].setdefault(f"{mode}_host", []).append(o["seconds"])
                        times[dev].setdefault(f"{mode}_device", []).append(o["device_seconds"])
    finally:
        (work / "stop").touch()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.close()
    rows = []
    for d in m_new.devices:
        board = catalog[d.board]
        t = times[d.device]
        full, link = _median(t.get("full_host", [])), _median(t.get("link_host", []))
        rows.append({
            "device": d.device, "board": d.board, "runtime": d.runtime,
            "link": f"{board.link.medium} {board.link.bandwidth_bps / 1e3:g} kbit/s",
            "bytes": payload.get(d.device), "model_sha256": d.sha256[:12],
            "host_s": full, "device_s": _median(t.get("full_device", [])),
            "link_host_s": link, "link_device_s": _median(t.get("link_device", [])),
            "ratio": round(link / full, 2) if full and link else None,
        })
    return {"rows": rows, "failures": failures, "repeats": args.repeats,
            "pushes_per_mode": 2 * args.repeats, "broker": broker.kind, "cpu": _cpu(),
            "versions": _versions(), "old": m_old.deployment_id, "new": m_new.deployment_id,
            "chunk_bytes": args.chunk_bytes}


class _Frames:
    """Every device's feature messages: frame id -> model hash, as a subscriber gets them."""

    def __init__(self, url: str, fleet: str) -> None:
        import threading

        from slimedge.runtime import topics
        from slimedge.runtime.mqtt import MqttClient

        self.seen: dict[str, dict[int, str]] = {}
        self.copies: dict[str, int] = {}
        self.client = MqttClient(url, name="bench-frames", inbound_max=1_000_000,
                                 subscriptions=[(topics.features_all(fleet), 1)]).start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from slimedge.runtime import frames, topics

        while not self._stop.is_set():
            msg = self.client.get(0.1)
            if msg is None:
                continue
            _, device, _ = topics.device_of(msg.topic)
            m = frames.decode(msg.payload)
            got = self.seen.setdefault(device, {})
            self.copies[device] = self.copies.get(device, 0) + (m.seq in got)
            got[m.seq] = m.model_hash

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.stop()


def bench_agents(args: argparse.Namespace) -> dict:
    from slimedge.export import signing
    from slimedge.export.manifest import DeploymentManifest
    from slimedge.fleet.broker import start_broker
    from slimedge.fleet.push import run_push
    from slimedge.runtime import topics

    old, new = Path(args.old), Path(args.new)
    m_old = DeploymentManifest.from_json((old / "manifest.json").read_bytes())
    m_new = DeploymentManifest.from_json((new / "manifest.json").read_bytes())
    fleet = topics.fleet_name(m_new.deployment_id, m_new.created)
    work = Path(tempfile.mkdtemp(prefix="bench-update-agents-"))
    public = work / "public_key.pem"
    public.write_bytes(signing.public_pem(signing.load_private_key(args.key).public_key()))
    from slimedge.data.container import SPLITS, load_dataset

    n_frames = args.frames or len(load_dataset(args.agents).indices(SPLITS[2]))
    broker = start_broker(workdir=work / "broker")
    runs = []
    try:
        for emulate in (False, True):
            frames_seen = _Frames(broker.url, fleet)
            start_ns = time.time_ns() + int(8e9)  # time for every agent to load its model
            procs = {d.device: subprocess.Popen(
                [*args.agent_cmd.split(), "--deploy", str(old), "--device", d.device,
                 "--broker", broker.url, "--public-key", str(public), "--source",
                 f"replay:{args.agents}", "--fps", str(args.fps), "--frames", str(n_frames),
                 "--start-at", str(start_ns), "--heartbeat", "0.5", "--json",
                 "--state", str(work / f"state-{int(emulate)}" / d.device)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for d in m_old.devices}
            # the push starts a third into the replay
            time.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9) + n_frames / args.fps / 3)
            pushed = run_push(new, broker.url, key=args.key, fleet=fleet, listen=1.5,
                              timeout=args.timeout, emulate_link=emulate,
                              chunk_bytes=args.chunk_bytes)
            outs = {d: p.communicate(timeout=n_frames / args.fps + 120)
                    for d, p in procs.items()}
            time.sleep(1.0)
            frames_seen.close()
            runs.append(_agent_rows(m_old, m_new, pushed, outs, procs, frames_seen, args,
                                    emulate))
    finally:
        broker.close()
    return {"mode": "agents", "runs": runs, "fps": args.fps, "frames": n_frames,
            "broker": broker.kind, "cpu": _cpu(), "versions": _versions(),
            "old": m_old.deployment_id, "new": m_new.deployment_id,
            "chunk_bytes": args.chunk_bytes,
            "failures": [f for r in runs for f in r["failures"]]}


def _agent_rows(m_old, m_new, pushed, outs, procs, frames_seen, args, emulate) -> dict:  # noqa: ANN001
    rows, failures = [], []
    for d in m_new.devices:
        out, err = outs[d.device]
        summary = {}
        if procs[d.device].returncode == 0 and out.strip():
            summary = json.loads(out.strip().splitlines()[-1])
        else:
            failures.append(f"agent {d.device} exited {procs[d.device].returncode}: "
                            f"{err.strip().splitlines()[-1:]}")
        got = frames_seen.seen.get(d.device, {})
        hashes = [got[i] for i in sorted(got)]
        old_sha, new_sha = m_old.device(d.device).sha256, d.sha256
        switch = next((i for i in sorted(got) if got[i] == new_sha), None)
        mixed = sum(1 for i in sorted(got) if switch is not None and i >= switch
                    and got[i] != new_sha)
        push = pushed["devices"][d.device]
        if push["status"] != "applied" and old_sha != new_sha:
            failures.append(f"{d.device}: {push['status']} {push['reason']} {push['message']}")
        rows.append({
            "device": d.device, "board": d.board, "frames": len(got),
            "lost": (summary["frames"] - len(got)) if summary else None,
            "dropped": summary.get("dropped"),
            "switch_frame": switch, "old_after_switch": mixed,
            "hashes": sorted(set(hashes)) == sorted({old_sha, new_sha}) or None,
            "status": push["status"], "host_s": push["seconds"],
            "device_s": push["device_seconds"],
        })
    return {"emulate_link": emulate, "sequence": pushed["sequence"], "rows": rows,
            "failures": failures}


def _agents_table(result: dict) -> str:
    lines = [f"update mid-replay on real agents: {result['new']} over {result['old']}, "
             f"{result['frames']} frames at {result['fps']:g} fps, broker {result['broker']}"]
    for run in result["runs"]:
        lines.append(f"-- link {'emulated (each board)' if run['emulate_link'] else 'full'}"
                     f" speed, sequence {run['sequence']}")
        lines.append(f"{'device':7} {'board':15} {'frames':>6} {'lost':>4} {'dropped':>7} "
                     f"{'switch@':>7} {'old after':>9} {'status':10} {'host s':>7} {'dev s':>7}")
        for r in run["rows"]:
            def f(x):  # noqa: ANN001, ANN202
                return f"{x:7.3f}" if isinstance(x, float) else f"{'-':>7}"
            lines.append(f"{r['device']:7} {r['board']:15} {r['frames']:6d} {str(r['lost']):>4} "
                         f"{str(r['dropped']):>7} {str(r['switch_frame']):>7} "
                         f"{r['old_after_switch']:9d} {r['status']:10} {f(r['host_s'])} "
                         f"{f(r['device_s'])}")
    lines.append("switch@: first frame with the new model's hash; old after: frames after it "
                 "still with the old one")
    for fail in result["failures"]:
        lines.append(f"FAILED: {fail}")
    lines.append(f"cpu: {result['cpu']}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    return "\n".join(lines)


def _table(result: dict) -> str:
    lines = [f"update apply time, {result['new']} <-> {result['old']} (rollback orders), "
             f"median of {result['pushes_per_mode']} pushes per mode, chunks of "
             f"{result['chunk_bytes']} B, broker {result['broker']}",
             f"{'device':7} {'board':15} {'runtime':16} {'link':22} {'bytes':>7} "
             f"{'host s':>7} {'dev s':>7} {'link s':>7} {'dev s':>7} {'ratio':>6}"]
    for r in result["rows"]:
        def f(x):  # noqa: ANN001, ANN202
            return f"{x:7.3f}" if x is not None else "      -"
        lines.append(f"{r['device']:7} {r['board']:15} {r['runtime']:16} {r['link']:22} "
                     f"{r['bytes'] or 0:7d} {f(r['host_s'])} {f(r['device_s'])} "
                     f"{f(r['link_host_s'])} {f(r['link_device_s'])} "
                     f"{(r['ratio'] or 0):6.2f}")
    lines.append("bytes: payload of the NEW update (model; for MCU boards with the firmware "
                 "bundle); host s: push start -> applied ack; dev s: first update message -> "
                 "swap, on the device; link: --emulate-link (each board's link bandwidth)")
    for fail in result["failures"]:
        lines.append(f"NOT APPLIED: {fail}")
    lines.append(f"cpu: {result['cpu']}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    lines.append("models (new): " + ", ".join(f"{r['device']} {r['model_sha256']}"
                                               for r in result["rows"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "device":
        return _device(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="deployment the devices start with")
    p.add_argument("--new", required=True, help="deployment pushed to them")
    p.add_argument("--key", required=True, help="private key both deployments are signed with")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--chunk-bytes", type=int, default=4096)
    p.add_argument("--agents", default=None, metavar="DATASET",
                   help="real agents replaying DATASET's test split (see the module doc)")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--frames", type=int, default=None,
                   help="frames per agent (default: the whole test split)")
    p.add_argument("--agent-cmd", default=f"{sys.executable} -m slimedge.runtime.agent",
                   help="the agent command line (before its options)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = bench_agents(args) if args.agents else bench(args)
    text = _agents_table(result) if args.agents else _table(result)
    print(json.dumps(result) if args.json else text)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
