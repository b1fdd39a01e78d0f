"""LiteRT measurements of a .tflite model on this host: latency (median of repeats, one
thread) and the tensor sizes that bound its activation memory."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from slimedge.errors import SlimEdgeError


class LiteRTError(SlimEdgeError):
    """A model LiteRT cannot load or run."""


KERNELS: tuple[str, ...] = ("xnnpack", "builtin", "reference")


def interpreter(model: bytes | str | os.PathLike, num_threads: int = 1,
                kernels: str = "xnnpack"):
    """A LiteRT interpreter with tensors allocated. ``kernels``: "xnnpack" (LiteRT's default,
    the XNNPACK delegate: what a Linux board runs), "builtin" (the optimized builtin kernels,
    no delegate) or "reference" (the reference kernels, bit-exact with TFLite Micro; XNNPACK
    may differ by 1 LSB)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolvers = {"xnnpack": OpResolverType.AUTO,
                 "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                 "reference": OpResolverType.BUILTIN_REF}
    if kernels not in resolvers:
        raise LiteRTError(f"kernels: unknown kernel set {kernels!r} (expected one of "
                          f"{list(KERNELS)})")
    kwargs = {"num_threads": num_threads, "experimental_op_resolver_type": resolvers[kernels]}
    try:
        if isinstance(model, bytes | bytearray):
            it = Interpreter(model_content=bytes(model), **kwargs)
        else:
            it = Interpreter(model_path=str(model), **kwargs)
        it.allocate_tensors()
    except Exception as exc:
        name = "model bytes" if isinstance(model, bytes | bytearray) else str(model)
        raise LiteRTError(f"{name}: LiteRT cannot load it: {exc}") from exc
    return it


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int


def measure_latency(
    model: bytes | str | os.PathLike, *, repeats: int = 50, warmup: int = 5, seed: int = 0,
    kernels: str = "xnnpack",
) -> Latency:
    """Median single-thread invoke time of one input (random, of the model's input type)."""
    it = interpreter(model, num_threads=1, kernels=kernels)
    d = it.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if np.issubdtype(d["dtype"], np.integer):
        info = np.iinfo(d["dtype"])
        x = rng.integers(info.min, info.max + 1, d["shape"], dtype=d["dtype"])
    else:
        x = rng.random(d["shape"], dtype=np.float32).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    for _ in range(warmup):
        it.invoke()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    q = np.percentile(times, [10, 90])
    return Latency(statistics.median(times), float(q[0]), float(q[1]), repeats)


def _graph_ops(it) -> list[dict]:
    """The model's own operators (LiteRT's op list, less the delegate nodes it adds)."""
    return [op for op in it._get_ops_details() if op["op_name"] != "DELEGATE"]


def peak_activation_bytes(model: bytes | str | os.PathLike) -> int:
    """Largest sum of one operator's activation inputs + outputs (weights excluded): a lower
    bound on the activation memory any runtime needs for this graph."""
    it = interpreter(model)
    ops = _graph_ops(it)
    sizes = {
        t["index"]: int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
        for t in it.get_tensor_details()
    }
    # Activations are the graph inputs and whatever an op produces; everything else is a weight.
    activations = {int(d["index"]) for d in it.get_input_details()}
    for op in ops:
        activations.update(int(i) for i in op["outputs"])
    peak = 0
    for op in ops:
        tensors = {int(i) for i in list(op["inputs"]) + list(op["outputs"])}
        peak = max(peak, sum(sizes[i] for i in tensors if i in activations))
    return peak


def constant_bytes(model: bytes | str | os.PathLike) -> int:
    """Bytes of the model's constant tensors (weights, biases, after conversion's folding):
    the weight memory a runtime holds, measured from the file."""
    it = interpreter(model)
    produced = {int(d["index"]) for d in it.get_input_details()}
    for op in _graph_ops(it):
        produced.update(int(i) for i in op["outputs"])
    total = 0
    for t in it.get_tensor_details():
        if int(t["index"]) not in produced and t["name"] and len(t["shape"]) > 0:
            total += int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
    return total
