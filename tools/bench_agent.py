#!/usr/bin/env python3
"""Benchmark: a device agent's cost per frame beyond its inference, as real processes.

For each chosen device of a deployment (default: the first LiteRT and the first TFLite Micro
device) it runs `slimedge agent run` against a local Mosquitto (the embedded broker when none
is installed) for --frames frames at --fps, --repeats times, and reads:
- inference: the branch's run time per frame (the agent's own median);
- in-process overhead: encoding the v2 feature message + queueing it + handing it to the MQTT
  client (the agent's medians), i.e. what the agent adds on the device;
- capture -> received: from the frame's capture time to a subscriber on the same machine
  receiving it (median), which adds the broker hop; minus inference = everything but inference.
Medians over frames, then the median over repeats. Prints a table (CPU, versions, model
hashes); `--json` prints one object.

    python tools/bench_agent.py --deploy WORK/deploy [--public-key WORK/keys/public_key.pem]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from slimedge import provenance
from slimedge.export.manifest import MANIFEST_NAME, DeploymentManifest
from slimedge.fleet.broker import start_broker
from slimedge.runtime import frames, topics
from slimedge.runtime.mqtt import MqttClient


def run_once(deploy: Path, key: Path, device: str, url: str, fleet: str, n: int,
             fps: float) -> dict:
    lat_ms: list[float] = []
    watch = MqttClient(url, name="bench", subscriptions=[(topics.features(fleet, device), 0)])
    watch.start()
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            m = watch.get(0.05)
            if m is not None:
                f = frames.decode(m.payload)
                lat_ms.append((m.received_ns - f.timestamp_ns) / 1e6)

    t = threading.Thread(target=collect)
    t.start()
    done = subprocess.run(
        [sys.executable, "-m", "slimedge.cli", "agent", "run", "--deploy", str(deploy),
         "--device", device, "--broker", url, "--public-key", str(key), "--frames", str(n),
         "--fps", f"{fps:g}", "--json", "--log-level", "WARNING", "--heartbeat", "1"],
        capture_output=True, text=True, timeout=600)
    time.sleep(0.3)
    stop.set()
    t.join()
    watch.stop()
    if done.returncode != 0:
        raise SystemExit(f"agent {device} failed: {done.stderr[-1000:]}")
    s = json.loads(done.stdout.splitlines()[-1])
    return {"runtime": s["runtime"], "inference_ms": s["inference_ms_median"],
            "overhead_ms": s["overhead_ms_median"] + s["publish_ms_median"],
            "e2e_ms": statistics.median(lat_ms), "received": len(lat_ms),
            "published": s["published"], "model_hash": s["model_hash"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploy", required=True, type=Path)
    ap.add_argument("--public-key", type=Path, default=None,
                    help="default: <deploy>/../keys/public_key.pem")
    ap.add_argument("--devices", default=None, help="comma-separated device ids")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--fps", type=float, default=50.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    key = args.public_key or args.deploy.parent / "keys" / "public_key.pem"
    m = DeploymentManifest.from_json((args.deploy / MANIFEST_NAME).read_bytes())
    fleet = topics.fleet_name(m.deployment_id, m.created)
    if args.devices:
        devices = args.devices.split(",")
    else:
        devices = [next(d.device for d in m.devices if not d.is_mcu),
                   next(d.device for d in m.devices if d.is_mcu)]
    rows = []
    with start_broker() as broker:
        for dev in devices:
            runs = [run_once(args.deploy, key, dev, broker.url, fleet, args.frames, args.fps)
                    for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in runs)
                   for k in ("inference_ms", "overhead_ms", "e2e_ms")}
            rows.append({"device": dev, "board": m.device(dev).board,
                         "runtime": runs[0]["runtime"], **med,
                         "beyond_inference_ms": med["e2e_ms"] - med["inference_ms"],
                         "overhead_per_inference": med["overhead_ms"] / med["inference_ms"],
                         "frames": args.frames, "received_min": min(r["received"]
                                                                     for r in runs),
                         "model_hash": runs[0]["model_hash"]})
        broker_kind = broker.kind
    result = {
        "case": {"deployment_id": m.deployment_id, "frames": args.frames, "fps": args.fps,
                 "repeats": args.repeats, "broker": broker_kind},
        "devices": rows,
        "cpu": provenance.cpu_name(),
        "versions": provenance.versions(extra=("paho-mqtt",)),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"agent per frame: {args.frames} frames at {args.fps:g} fps, median of "
          f"{args.repeats} runs, broker {broker_kind}, CPU {result['cpu']}")
    print(f"{'device':<8}{'runtime':<12}{'infer ms':>9}{'agent ms':>10}{'ratio':>8}"
          f"{'capture->recv ms':>18}{'beyond infer ms':>17}  model")
    for r in rows:
        print(f"{r['device']:<8}{r['runtime']:<12}{r['inference_ms']:>9.3f}"
              f"{r['overhead_ms']:>10.3f}{r['overhead_per_inference']:>7.2f}x"
              f"{r['e2e_ms']:>18.3f}{r['beyond_inference_ms']:>17.3f}  {r['model_hash'][:16]}")
    print("agent ms = encode v2 message + queue + hand to the MQTT client (in the agent); "
          "ratio = agent ms / inference ms")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
