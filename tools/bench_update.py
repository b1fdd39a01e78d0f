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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("slimedge", "ai-edge-litert", "tflite-micro", "paho-mqtt", "cryptography"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
            "bytes": d.bytes, "model_sha256": d.sha256[:12],
            "host_s": full, "device_s": _median(t.get("full_device", [])),
            "link_host_s": link, "link_device_s": _median(t.get("link_device", [])),
            "ratio": round(link / full, 2) if full and link else None,
        })
    return {"rows": rows, "failures": failures, "repeats": args.repeats,
            "pushes_per_mode": 2 * args.repeats, "broker": broker.kind, "cpu": _cpu(),
            "versions": _versions(), "old": m_old.deployment_id, "new": m_new.deployment_id,
            "chunk_bytes": args.chunk_bytes}


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
                     f"{r['bytes']:7d} {f(r['host_s'])} {f(r['device_s'])} "
                     f"{f(r['link_host_s'])} {f(r['link_device_s'])} "
                     f"{(r['ratio'] or 0):6.2f}")
    lines.append("host s: push start -> applied ack; dev s: first update message -> swap, on "
                 "the device; link: --emulate-link (each board's link bandwidth)")
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
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--chunk-bytes", type=int, default=4096)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = bench(args)
    print(json.dumps(result) if args.json else _table(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
