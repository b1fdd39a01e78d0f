#!/usr/bin/env python3
"""Benchmark: why pruning does or does not speed up an int8 branch under LiteRT on this host.

Up to three tables, XNNPACK (LiteRT's default delegate) beside the builtin kernels in the
same run:

1. One 3x3 int8 convolution at 24x24 for a grid of input/output channel counts: how the time
   follows the MACs. On hosts where XNNPACK's int8 kernels work in wide output-channel tiles
   (e.g. AMX on recent Xeons: 64 channels a tile), the time is a step function of the output
   channels and flat below the tile width, whatever the MACs.
2. With ``--ladder``: a ladder level's branch cut after each layer and converted on its own,
   so the cumulative time shows which layers cost what at level 0 and at the given level.
3. With ``--widths``: the vgg branch at each width multiplier (48x48x1 input, seeded random
   weights: timing does not depend on training), unpruned and pruned to level 0.5 (L1), so
   the speed-up of level 0.5 shows where the channel counts cross the tile width.

Timings are medians of ``--invokes`` invokes, one thread; each model is converted to a full
int8 TFLite with random calibration data (timing does not depend on the scales).

    tools/bench_int8_conv.py [--ladder LADDER --level 5] [--widths 1,2,4] [--invokes 300]
                             [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from importlib.metadata import version

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from slimedge import provenance  # noqa: E402

CIN = (16, 32, 64)
COUT = (8, 16, 32, 64, 96, 128, 256)
SIDE = 24


def _int8_tflite(model, input_shape: tuple[int, ...]) -> bytes:
    from slimedge.convert import to_tflite

    calibration = np.random.default_rng(0).random((8,) + input_shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_tflite(model, "int8", calibration)


def _median_ms(buf: bytes, kernels: str, invokes: int) -> float:
    from slimedge.profile.litert import measure_latency

    return measure_latency(buf, repeats=invokes, warmup=20, kernels=kernels).median_ms


def channel_grid(invokes: int) -> list[dict]:
    import keras

    rows = []
    for cin in CIN:
        for cout in COUT:
            inp = keras.Input((SIDE, SIDE, cin))
            out = keras.layers.Conv2D(cout, 3, padding="same")(inp)
            buf = _int8_tflite(keras.Model(inp, out), (SIDE, SIDE, cin))
            rows.append({"cin": cin, "cout": cout, "macs": SIDE * SIDE * 9 * cin * cout,
                         "xnnpack_ms": _median_ms(buf, "xnnpack", invokes),
                         "builtin_ms": _median_ms(buf, "builtin", invokes)})
    return rows


def by_layer(ladder: str, level: int, invokes: int) -> dict:
    import keras

    from slimedge.ladder.store import level_dir, read_manifest

    manifest = read_manifest(ladder)
    if not 0 <= level < len(manifest["levels"]):
        raise SystemExit(f"--level: {level} is not a level index of {ladder} "
                         f"(0..{len(manifest['levels']) - 1})")
    models = {i: keras.saving.load_model(level_dir(ladder, i) / "branch.keras", compile=False)
              for i in (0, level)}
    shape = tuple(int(s) for s in models[0].input_shape[1:])
    # Cut after every layer that ends a block (activations, pools, the feature layer).
    cuts = [layer.name for layer in models[0].layers[1:]
            if not isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization,
                                      keras.layers.DepthwiseConv2D, keras.layers.Dense))
            or layer is models[0].layers[-1]]
    rows = []
    for cut in cuts:
        row: dict = {"cut": cut}
        for i in (0, level):
            m = models[i]
            buf = _int8_tflite(keras.Model(m.input, m.get_layer(cut).output), shape)
            row[f"L{i}_channels"] = int(m.get_layer(cut).output.shape[-1])
            row[f"L{i}_xnnpack_ms"] = _median_ms(buf, "xnnpack", invokes)
            row[f"L{i}_builtin_ms"] = _median_ms(buf, "builtin", invokes)
        rows.append(row)
    return {"ladder": ladder, "model_hash": manifest["model_hash"], "level": level,
            "level_value": manifest["levels"][level]["level"], "rows": rows}


def by_width(widths: list[float], invokes: int, level: float = 0.5) -> list[dict]:
    from slimedge.model.backbones import build_branch
    from slimedge.prune.levels import original_channels, prune_to_level

    shape = (48, 48, 1)
    rows = []
    for width in widths:
        branch = build_branch("vgg", input_shape=shape, feature_dim=128, width=width, seed=0)
        pruned = prune_to_level(branch, level, original_channels(branch), "l1").model
        row: dict = {"width": width, "level": level}
        for tag, m in (("L0", branch), ("pruned", pruned)):
            buf = _int8_tflite(m, shape)
            convs = [layer for layer in m.layers if layer.__class__.__name__ == "Conv2D"]
            row[f"{tag}_channels"] = [int(c.filters) for c in convs]
            row[f"{tag}_xnnpack_ms"] = _median_ms(buf, "xnnpack", invokes)
            row[f"{tag}_builtin_ms"] = _median_ms(buf, "builtin", invokes)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ladder", default=None)
    ap.add_argument("--level", type=int, default=5, help="level index compared with level 0")
    ap.add_argument("--widths", default=None,
                    help="comma-separated vgg width multipliers for table 3, e.g. 1,2,4")
    ap.add_argument("--invokes", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    # Arguments are checked before the (slow) grid runs.
    widths: list[float] = []
    if args.widths:
        try:
            widths = [float(w) for w in args.widths.split(",")]
        except ValueError:
            widths = []
        if not widths or min(widths) <= 0:
            raise SystemExit(f"--widths: expected positive numbers like 1,2,4, got "
                             f"{args.widths!r}")
    if args.ladder:
        from slimedge.errors import SlimEdgeError
        from slimedge.ladder.store import read_manifest

        try:
            n_levels = len(read_manifest(args.ladder)["levels"])
        except SlimEdgeError as exc:
            raise SystemExit(str(exc)) from None
        if not 0 < args.level < n_levels:
            raise SystemExit(f"--level: {args.level} is not a pruned level index of "
                             f"{args.ladder} (1..{n_levels - 1})")

    out = {"versions": {"ai-edge-litert": version("ai-edge-litert"),
                        "tensorflow": version("tensorflow-cpu") if _has("tensorflow-cpu")
                        else version("tensorflow"), "python": platform.python_version(),
                        "machine": platform.machine()},
           "cpu_flags": provenance.cpu_flags(), "grid": channel_grid(args.invokes)}
    if args.ladder:
        out["by_layer"] = by_layer(args.ladder, args.level, args.invokes)
    if args.widths:
        out["by_width"] = by_width(widths, args.invokes)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"one 3x3 int8 conv at {SIDE}x{SIDE}, 1 thread, median of {args.invokes} invokes")
    print(f"{'cin':>4}{'cout':>6}{'MACs':>12}{'xnnpack ms':>12}{'builtin ms':>12}"
          f"{'builtin / xnnpack':>19}")
    for r in out["grid"]:
        print(f"{r['cin']:>4}{r['cout']:>6}{r['macs']:>12,}{r['xnnpack_ms']:>12.4f}"
              f"{r['builtin_ms']:>12.4f}{r['builtin_ms'] / r['xnnpack_ms']:>18.2f}x")
    if args.ladder:
        b = out["by_layer"]
        lv = b["level"]
        print(f"\nbranch cut after each block, cumulative ms; ladder model {b['model_hash'][:12]}, "
              f"level 0 vs level {b['level_value']} (index {lv})")
        tag = f"L{lv}"
        print(f"{'cut after':<16}{'ch L0':>6}{'ch ' + tag:>7}{'xnn L0':>9}{'xnn ' + tag:>9}"
              f"{'builtin L0':>12}{'builtin ' + tag:>12}")
        for r in b["rows"]:
            print(f"{r['cut']:<16}{r['L0_channels']:>6}{r[f'L{lv}_channels']:>7}"
                  f"{r['L0_xnnpack_ms']:>9.4f}{r[f'L{lv}_xnnpack_ms']:>9.4f}"
                  f"{r['L0_builtin_ms']:>12.4f}{r[f'L{lv}_builtin_ms']:>12.4f}")
    if args.widths:
        print("\nvgg branch by width (random weights), level 0 vs 0.5 (L1), ms per invoke")
        print(f"{'width':>6}  {'conv channels L0 -> 0.5':<42}{'xnn L0':>8}{'xnn 0.5':>9}{'x':>6}"
              f"{'builtin L0':>12}{'builtin 0.5':>12}{'x':>6}")
        for r in out["by_width"]:
            chans = " -> ".join("/".join(map(str, r[f"{t}_channels"])) for t in ("L0", "pruned"))
            print(f"{r['width']:>6g}  {chans:<42}{r['L0_xnnpack_ms']:>8.4f}"
                  f"{r['pruned_xnnpack_ms']:>9.4f}"
                  f"{r['L0_xnnpack_ms'] / r['pruned_xnnpack_ms']:>6.2f}"
                  f"{r['L0_builtin_ms']:>12.4f}{r['pruned_builtin_ms']:>12.4f}"
                  f"{r['L0_builtin_ms'] / r['pruned_builtin_ms']:>6.2f}")
    v = out["versions"]
    print(f"\nversions: ai-edge-litert {v['ai-edge-litert']}, tensorflow {v['tensorflow']}, "
          f"python {v['python']}, machine {v['machine']}; cpu int8 features: "
          f"{' '.join(out['cpu_flags']) or 'none listed'}")
    return 0


def _has(dist: str) -> bool:
    try:
        version(dist)
        return True
    except Exception:
        return False




if __name__ == "__main__":
    sys.exit(main())
