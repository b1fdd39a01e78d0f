"""The ladder's TFLite Micro feature pass, one process against every usable core.

Runs one level's int8 file in TFLite Micro over every view of the val and test splits (what
`slimedge.ladder.build` caches as "int8-tflm"), with `--workers 1` (the sequential pass, the
baseline) and with the worker count the ladder picks (every usable core), checks the two
results are byte for byte equal, and first splits one image's time into input quantization,
set_input, invoke and get_output over a sample. Prints one table (median of `--repeats`
seconds, ratio) with the CPU, usable cores, load average, versions and the file's hash;
`--json` for the numbers.

    nice -n 10 .venv/bin/python tools/bench_tflm_pass.py LEVEL_DIR DATASET_DIR [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from slimedge import provenance  # noqa: E402
from slimedge.artifacts import sha256_file  # noqa: E402
from slimedge.data.container import load_dataset  # noqa: E402
from slimedge.ladder.store import CACHED_SPLITS  # noqa: E402
from slimedge.ladder.tflm_pass import MIN_PARALLEL_IMAGES, tflm_features  # noqa: E402
from slimedge.parallel import available_cpus, resolve_workers  # noqa: E402
from slimedge.profile.tflm import measure_arena  # noqa: E402
from slimedge.runtime.branch import model_input  # noqa: E402
from slimedge.runtime.mcu import TflmRunner  # noqa: E402


def per_image_split(path: Path, arena: int, images: np.ndarray) -> dict[str, float]:
    """Milliseconds per image of each step of `TflmRunner.run`, over `images`."""
    r = TflmRunner(path, arena)
    interp = r._interp  # the steps of run(), timed one by one
    t = dict.fromkeys(("quantize", "set_input", "invoke", "get_output"), 0.0)
    for im in images:
        t0 = time.perf_counter()
        x = model_input(im[None], r.input_dtype, r._in_quant)
        t1 = time.perf_counter()
        interp.set_input(x, 0)
        t2 = time.perf_counter()
        interp.invoke()
        t3 = time.perf_counter()
        np.asarray(interp.get_output(0)).copy()
        t4 = time.perf_counter()
        for k, a, b in (("quantize", t0, t1), ("set_input", t1, t2), ("invoke", t2, t3),
                        ("get_output", t3, t4)):
            t[k] += b - a
    return {k: 1e3 * v / len(images) for k, v in t.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("level_dir")
    p.add_argument("dataset")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sample", type=int, default=240, help="images for the per-step split")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    path = Path(args.level_dir) / "branch_int8.tflite"
    ds = load_dataset(args.dataset)
    images = np.concatenate([np.asarray(ds.images[ds.indices(s)]) for s in CACHED_SPLITS])
    images = images.reshape((-1,) + images.shape[2:])
    need = measure_arena(path)
    arena = max(2 * need, need + (64 << 10))  # as the ladder build sizes it
    parallel = resolve_workers(None, len(images), min_parallel=MIN_PARALLEL_IMAGES)
    steps = per_image_split(path, arena, images[: args.sample])
    times: dict[int, list[float]] = {1: [], parallel: []}
    results: dict[int, np.ndarray] = {}
    for _ in range(args.repeats):
        for w in times:
            t0 = time.perf_counter()
            results[w] = tflm_features(path, arena, images, workers=w)
            times[w].append(time.perf_counter() - t0)
    identical = bool(np.array_equal(results[1], results[parallel]))
    med = {w: statistics.median(v) for w, v in times.items()}
    out = {"model": str(path), "model_sha256": sha256_file(path), "images": len(images),
           "image_shape": list(images.shape[1:]), "cpu": provenance.cpu_name(),
           "usable_cpus": available_cpus(), "loadavg_before": os.getloadavg(),
           "versions": provenance.versions(), "repeats": args.repeats,
           "per_image_ms": steps, "seconds": {str(w): v for w, v in times.items()},
           "median_s": {str(w): m for w, m in med.items()},
           "speedup": med[1] / med[parallel], "bit_identical": identical}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0 if identical else 1
    total = sum(steps.values())
    print(f"{path} (sha256 {out['model_sha256'][:12]}), {len(images)} images "
          f"{tuple(images.shape[1:])}, CPU {out['cpu']}, {out['usable_cpus']} usable cores, "
          f"load average {' '.join(f'{x:.1f}' for x in out['loadavg_before'])}")
    print(f"versions: {', '.join(f'{k} {v}' for k, v in out['versions'].items())}")
    print("per image: " + ", ".join(f"{k} {v:.3f} ms ({v / total:.1%})"
                                     for k, v in steps.items()))
    print("| TFLite Micro pass | median s | runs s | ratio |")
    print("|---|---|---|---|")
    for w in times:
        print(f"| {w} worker{'s' if w > 1 else ''} | {med[w]:.1f} | "
              f"{' '.join(f'{x:.1f}' for x in times[w])} | {med[1] / med[w]:.2f}x |")
    print(f"bit-identical: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
