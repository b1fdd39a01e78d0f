#!/usr/bin/env python3
"""Benchmark: the aggregator's throughput and added latency per frame, C++ pooling vs NumPy.

The real `Aggregator` of a deployment (its head in LiteRT, its contingency rule) is fed
pre-encoded version 2 feature messages, 12 views per frame, through `handle()`, as the MQTT
service loop feeds it (a `tick()` every 5 ms of simulated time, a heartbeat from every device
twice per simulated second), pinned to one CPU core. Per case:

- throughput: frames answered per second over all frames (decode, checks, alignment,
  pooling, head, per message of every view), per second of this thread's CPU time (the work)
  and of wall time (which on a shared host also counts waiting for the core);
- added latency: the time of the `handle()` call of a frame's last view, the one that
  answers it (decode + align + pool + classify), median and p99 over frames;
- pool only: the pooling call per frame alone (CPU time).

Cases: pooling by the C++ core (what the aggregator runs) and by the NumPy reference of the
core (tests/reference_aggregate.py, swapped in for this run only). Medians over repeats.
Targets: >= 2,000 frames/s and <= 1 ms added per frame.

    python tools/bench_runtime.py --deploy slimedge-work/deploy [--frames 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_aggregate import pool_reference  # noqa: E402

import slimedge  # noqa: E402
from slimedge import _core, provenance  # noqa: E402
from slimedge.artifacts import sha256_file  # noqa: E402
from slimedge.export import agreement  # noqa: E402
from slimedge.runtime import frames, topics  # noqa: E402
from slimedge.runtime.aggregator import Aggregator  # noqa: E402
from slimedge.runtime.aggregator_deployment import load_aggregator_deployment  # noqa: E402
from slimedge.runtime.aggregator_service import TICK_NS  # noqa: E402
from slimedge.runtime.head import HeadRunner  # noqa: E402

TARGET_FPS = 2000.0
TARGET_ADDED_MS = 1.0
T0 = 1_800_000_000 * 1_000_000_000
FRAME_NS = 1_000_000  # simulated time between frames: 1 ms



def numpy_pool(features, mask, weights=None, *, mode="max", scale=None, zero_point=None):
    """The NumPy reference with the core's call signature (batch of one or more frames)."""
    x = np.asarray(features)
    single = x.ndim == 2
    pooled, empty = pool_reference(x[None] if single else x, mask, weights, mode, scale,
                                   zero_point)
    return (pooled[0], bool(empty[0])) if single else (pooled, empty)


def messages(dep, n_frames: int, seed: int) -> list[list[tuple[str, bytes]]]:
    """Per frame, every view's (topic, payload): seeded random features of the dtype its
    device's artifact outputs."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n_frames):
        per = []
        for v in range(dep.views):
            dev = dep.view_device[v]
            spec = dep.devices[dev]
            if spec.dtype == np.int8:
                x, q = rng.integers(-128, 128, dep.feature_dim, dtype=np.int8), (0.05, -128)
            else:  # a float-format device (float16, dynamic): float32 features
                x, q = rng.random(dep.feature_dim, dtype=np.float32), (None, None)
            m = frames.FeatureMessage(
                v, f, T0 + f * FRAME_NS, dev, x, *q, deployment_id=dep.deployment_id,
                level=spec.level, model_hash=spec.model_hash)
            per.append((topics.features(dep.fleet, dev), frames.encode(m)))
        out.append(per)
    return out


def heartbeats(dep, seq: int) -> list[tuple[str, bytes]]:
    return [(topics.heartbeat(dep.fleet, d), json.dumps({
        "device": d, "seq": seq, "boot": 1, "sent_ns": 0, "period_s": 1.0, "last_frame": None,
        "deployment_id": dep.deployment_id, "model_hash": s.model_hash, "update_sequence": 0,
        "dropped": 0, "runtime": "litert-cpu"}).encode()) for d, s in dep.devices.items()]


def run_once(dep, head, msgs) -> dict[str, float]:
    agg = Aggregator(dep, head, now_ns=T0)
    added, added_cpu, answered, seq, next_tick = [], [], 0, 0, 0
    beat_every = 500  # frames: twice per simulated second
    clock, cpu = time.perf_counter_ns, time.thread_time_ns
    t_start, c_start = clock(), cpu()
    for f, per in enumerate(msgs):
        now = T0 + f * FRAME_NS
        if f % beat_every == 0:
            for topic, payload in heartbeats(dep, seq):
                agg.handle(topic, payload, now)
            seq += 1
        if now >= next_tick:  # as the service loop: a tick every 5 ms
            agg.tick(now)
            next_tick = now + TICK_NS
        for topic, payload in per:
            t0, c0 = clock(), cpu()
            got = agg.handle(topic, payload, now)
            if got:
                added_cpu.append(cpu() - c0)
                added.append(clock() - t0)
                answered += len(got)
    wall, busy = (clock() - t_start) / 1e9, (cpu() - c_start) / 1e9
    if answered != len(msgs) or sum(agg.rejected.values()):
        raise SystemExit(f"bench: {answered} of {len(msgs)} frames answered, refused: "
                         f"{dict(agg.rejected)}")
    a, c = np.array(added) / 1e6, np.array(added_cpu) / 1e6
    return {"fps_cpu": answered / busy, "fps_wall": answered / wall,
            "added_p50_ms": float(np.percentile(c, 50)),
            "added_p99_ms": float(np.percentile(c, 99)),
            "added_p99_wall_ms": float(np.percentile(a, 99))}


def pool_only_us(pool, dep, repeats: int, seed: int) -> float:
    """CPU microseconds per pooling call of one frame (max pooling, every view live)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (dep.views, dep.feature_dim), dtype=np.int8)
    live = np.ones(dep.views, bool)
    scale = np.full(dep.views, 0.05, np.float32)
    zp = np.full(dep.views, -128, np.int32)
    n = 2000
    times = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        for _ in range(n):
            pool(x, live, None, mode="max", scale=scale, zero_point=zp)
        times.append((time.thread_time_ns() - t0) / n / 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploy", required=True, help="deployment directory (slimedge export)")
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the first "
                    "this process may use)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    load = [round(x, 2) for x in os.getloadavg()]
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    dep = load_aggregator_deployment(args.deploy)
    head = HeadRunner(dep.head_path, dep.feature_dim, dep.n_classes)
    msgs = messages(dep, args.frames, args.seed)
    run_once(dep, head, msgs[:200])  # warm up

    cases = {}
    for name, pool in (("C++ core", _core.pool), ("NumPy reference", numpy_pool)):
        agreement._core = SimpleNamespace(pool=pool)  # what pool_views calls, for this case
        try:
            runs = [run_once(dep, head, msgs) for _ in range(args.repeats)]
        finally:
            agreement._core = _core
        cases[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        cases[name]["pool_us"] = pool_only_us(pool, dep, args.repeats, args.seed)
    cpp, ref = cases["C++ core"], cases["NumPy reference"]
    result = {
        "case": {"frames": args.frames, "views": dep.views, "feature_dim": dep.feature_dim,
                 "dtypes": sorted({str(s.dtype) for s in dep.devices.values()}),
                 "pool_mode": dep.head["pooling"], "repeats": args.repeats, "core": cpu,
                 "threads": 1},
        "cases": cases,
        "ratio": {"fps": cpp["fps_cpu"] / ref["fps_cpu"],
                  "pool": ref["pool_us"] / cpp["pool_us"]},
        "targets": {"fps": TARGET_FPS, "added_ms": TARGET_ADDED_MS,
                    "met_cpu": (cpp["fps_cpu"] >= TARGET_FPS
                                and cpp["added_p99_ms"] <= TARGET_ADDED_MS),
                    "met_wall": (cpp["fps_wall"] >= TARGET_FPS
                                 and cpp["added_p99_wall_ms"] <= TARGET_ADDED_MS)},
        "provenance": {
            "cpu": provenance.cpu_name(), "load_average": load, "deployment_id": dep.deployment_id,
            "head_sha256": sha256_file(dep.head_path),
            "device_model_sha256": sorted({s.model_hash[:16] for s in dep.devices.values()}),
            "slimedge": slimedge.__version__, "numpy": np.__version__,
            "ai_edge_litert": provenance.versions().get("ai-edge-litert", "not installed"),
            "python": provenance.versions()["python"],
        },
    }
    if args.json:
        print(json.dumps(result))
        return 0
    p = result["provenance"]
    kinds = "/".join(sorted({str(s.dtype) for s in dep.devices.values()}))
    print(f"aggregator: {dep.views} views x D={dep.feature_dim} {kinds}, {dep.head['pooling']} "
          f"pooling, {args.frames} frames, median of {args.repeats}, 1 core (cpu {cpu})")
    print("CPU time of this thread (the work) and wall time (with any wait for the core; "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} when run)")
    print(f"{'pooling':<17}{'frames/s':>10}{'added p50':>11}{'added p99':>11}{'pool us':>9}"
          f"{'frames/s':>10}{'added p99':>11}")
    print(f"{'':<17}{'CPU':>10}{'CPU ms':>11}{'CPU ms':>11}{'CPU':>9}{'wall':>10}{'wall ms':>11}")
    for name, c in cases.items():
        print(f"{name:<17}{c['fps_cpu']:>10.0f}{c['added_p50_ms']:>11.3f}"
              f"{c['added_p99_ms']:>11.3f}{c['pool_us']:>9.2f}{c['fps_wall']:>10.0f}"
              f"{c['added_p99_wall_ms']:>11.3f}")
    t = result["targets"]
    print(f"C++ / NumPy: {result['ratio']['fps']:.2f}x frames/s, {result['ratio']['pool']:.1f}x "
          f"pooling; targets >= {TARGET_FPS:.0f} frames/s and <= {TARGET_ADDED_MS} ms added "
          f"(p99): CPU time {'met' if t['met_cpu'] else 'NOT met'}, wall time "
          f"{'met' if t['met_wall'] else 'NOT met'}")
    print(f"cpu: {p['cpu']}; deployment {p['deployment_id']}, head sha256 "
          f"{p['head_sha256'][:16]}, device models {', '.join(p['device_model_sha256'])}")
    print(f"versions: slimedge {p['slimedge']}, numpy {p['numpy']}, ai-edge-litert "
          f"{p['ai_edge_litert']}, python {p['python']}")
    return 0




if __name__ == "__main__":
    sys.exit(main())
