"""Device-side smoke check: the `device` install works with TensorFlow unimportable.

    # once, where TensorFlow is installed: a tiny int8 branch + Keras reference outputs
    python tools/device_smoke.py make-model DIR
    # on the device side (no TensorFlow): imports, LiteRT branch, messages, C++ pooling
    python tools/device_smoke.py check [--model-dir DIR]

`check` installs an import hook that makes tensorflow, keras, tf_keras and tensorflow_*
unimportable before anything else is imported, then fails if any device-side step needs
them or pulls them in. Without --model-dir it skips the branch model and says so.
Exit status 0 = every step passed.
"""

from __future__ import annotations

import argparse
import importlib.abc
import sys
from pathlib import Path

BLOCKED = ("tensorflow", "keras", "tf_keras")


class SmokeError(AssertionError):
    """A device-side step that did not work."""


def _require(ok: bool, msg: str) -> None:
    # Not `assert`: the check must hold under `python -O` too.
    if not ok:
        raise SmokeError(msg)


def _is_blocked(name: str) -> bool:
    top = name.partition(".")[0]
    return top in BLOCKED or top.startswith("tensorflow_")


class BlockTensorFlow(importlib.abc.MetaPathFinder):
    """Makes TensorFlow and Keras unimportable, as on a device that never installed them."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001
        if _is_blocked(fullname):
            raise ImportError(f"{fullname} is blocked: the device side must not need it")
        return None


def make_branch_model(out_dir: Path, *, seed: int = 0, size: int = 16, dim: int = 8,
                      n_images: int = 8,
                      flavors: tuple[str, ...] = ("int8", "f32")) -> dict[str, Path]:
    """A tiny conv branch converted to `.tflite`, plus reference data.

    Writes branch_<flavor>.tflite for each flavor ("int8": full integer with int8 input and
    output; "uint8": the same with uint8 input and output; "f32": float) and reference.npz
    (uint8 images (N, size, size, 1) and the Keras float outputs for them, inputs scaled to
    [0, 1]). Needs TensorFlow; deterministic from `seed`.
    """
    import os
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((size, size, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(dim),
    ])
    rng = np.random.default_rng(seed)
    # Smooth random images (a blurred blob + noise), closer to camera frames than pure noise.
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n_images):
        cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.1, 0.4)]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = 200 * blob + rng.normal(0, 12, blob.shape) + 20
        images.append(np.clip(img, 0, 255).astype(np.uint8)[..., None])
    images = np.stack(images)
    x = images.astype(np.float32) / 255.0
    reference = model.predict(x, verbose=0)

    def representative():
        for i in range(len(x)):
            yield [x[i : i + 1]]

    def convert(flavor: str) -> bytes:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if flavor in ("int8", "uint8"):
            io_type = tf.int8 if flavor == "int8" else tf.uint8
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = io_type
            conv.inference_output_type = io_type
        elif flavor != "f32":
            raise ValueError(f"unknown flavor {flavor!r} (int8, uint8, f32)")
        with warnings.catch_warnings():
            # The converter asks for input statistics it does not need with a
            # representative dataset.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return conv.convert()

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for flavor in flavors:
        paths[flavor] = out_dir / f"branch_{flavor}.tflite"
        paths[flavor].write_bytes(convert(flavor))
    paths["reference"] = out_dir / "reference.npz"
    np.savez(paths["reference"], images=images, keras=reference.astype(np.float32))
    return paths


def _check_branch(model_dir: Path) -> str:
    import numpy as np

    from slimedge.runtime.branch import BranchRunner

    ref = np.load(model_dir / "reference.npz")
    images, keras_out = ref["images"], ref["keras"]
    runner = BranchRunner(model_dir / "branch_int8.tflite", num_threads=1)
    batch = runner.run(images)
    _require(batch.features.dtype == np.int8 and batch.features.shape == keras_out.shape,
             f"int8 branch output {batch.features.dtype} {batch.features.shape}, "
             f"Keras {keras_out.shape}")
    one = runner.run(images[0])
    _require(np.array_equal(one.features, batch.features[0]), "single image != batch row 0")
    # int8 end to end: input and weight rounding plus a few output steps.
    err = np.abs(batch.dequantized() - keras_out).max()
    tol = 4 * batch.scale + 0.01 * np.abs(keras_out).max()
    _require(err <= tol, f"int8 branch differs from Keras by {err:.4g} (tolerance {tol:.4g})")
    return f"branch int8 ok (D={runner.output_dim}, max |LiteRT - Keras| = {err:.4g} " \
           f"<= {tol:.4g}, output scale {batch.scale:.4g})"


def check(model_dir: Path | None) -> list[str]:
    """Runs every device-side step with TensorFlow blocked; returns one line per step."""
    already = sorted(m for m in sys.modules if _is_blocked(m))
    if already:
        raise SmokeError(f"blocked modules were imported before the check: {already}")
    sys.meta_path.insert(0, BlockTensorFlow())
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        raise SmokeError("the TensorFlow block does not work")

    import numpy as np

    import slimedge
    import slimedge.runtime.branch  # noqa: F401
    from slimedge import _core
    from slimedge.runtime import frames

    where = Path(slimedge.__file__).parent
    report = [f"imports ok (slimedge {slimedge.__version__} from {where}, TensorFlow blocked)"]
    rng = np.random.default_rng(0)
    if model_dir is not None:
        report.append(_check_branch(model_dir))
    else:
        report.append("branch model skipped: no --model-dir given")

    # Four views' int8 features -> messages -> bytes -> messages -> C++ pooling.
    V, D = 4, 8
    q = rng.integers(-128, 128, (V, D), dtype=np.int8)
    scales = rng.uniform(0.01, 0.1, V).astype(np.float32)
    zps = rng.integers(-10, 10, V)
    sent = [frames.FeatureMessage(view=v, seq=7, timestamp_ns=1_700_000_000_000_000_000 + v,
                                  device=f"board-{v}", features=q[v], scale=float(scales[v]),
                                  zero_point=int(zps[v])) for v in range(V)]
    got = [frames.decode(frames.encode(m), source=f"view {m.view}") for m in sent]
    _require(got == sent, "message round trip changed a message")
    live = np.array([1, 0, 1, 1], bool)
    weights = _core.redistribute(np.ones(V, np.float32), live, "renormalize")
    pooled, empty = _core.pool(np.stack([m.features for m in got]), live, weights,
                               mode="weighted", scale=np.array([m.scale for m in got]),
                               zero_point=np.array([m.zero_point for m in got]))
    x = np.stack([m.dequantized() for m in got])
    want = (weights[live, None] * x[live]).sum(0) / weights[live].sum()
    _require(not empty and np.allclose(pooled, want, rtol=1e-5, atol=1e-6), "pooling mismatch")
    report.append(f"messages + pooling ok ({V} views, D={D}, view 1 dead)")

    # The device agent: its modules (paho-mqtt, verification, TFLite Micro runner, sources)
    # and the command line that starts it.
    import slimedge.runtime.agent  # noqa: F401
    from slimedge import cli

    args = cli.build_parser(only="agent").parse_args(
        ["agent", "run", "--deploy", "d", "--device", "cam00", "--broker", "mqtt://h:1883"])
    _require(args.handler.__module__ == "slimedge.runtime.commands", "agent parser mismatch")
    report.append("agent modules + `slimedge agent run` command line ok")

    leaked = sorted(m for m in sys.modules if _is_blocked(m))
    _require(not leaked, f"TensorFlow/Keras modules were imported: {leaked}")
    report.append("no TensorFlow or Keras module imported")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-model", help="write a tiny branch .tflite (needs TensorFlow)")
    mk.add_argument("out_dir", type=Path)
    ck = sub.add_parser("check", help="device-side smoke check with TensorFlow blocked")
    ck.add_argument("--model-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "make-model":
        for kind, path in make_branch_model(args.out_dir).items():
            print(f"{kind}: {path}")
        return 0
    for line in check(args.model_dir):
        print(f"device smoke: {line}")
    print("device smoke: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
