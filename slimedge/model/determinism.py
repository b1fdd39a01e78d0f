"""Same seed, same machine, same model bytes.

TensorFlow is deterministic only when asked: op determinism on (no op picks a
run-dependent algorithm or reduction order) and fixed thread-pool sizes (a reduction split
over a different number of threads adds in a different order). The pools can be sized only
before TensorFlow starts them, so `make_deterministic` runs before a training's first op; in
a process where they already run (an earlier stage, a test session) they keep their sizes,
and the record says which sizes were in effect.

Across CPUs the bytes still differ: oneDNN and Eigen pick kernels by instruction set (AVX2,
AVX-512, AMX), and those kernels round differently.
"""

from __future__ import annotations

from typing import Any

from slimedge.model.pooling import ModelConfigError
from slimedge.provenance import available_cpus


def make_deterministic(threads: int | None = None) -> dict[str, Any]:
    """Op determinism on; intra- and inter-op pools of `threads` (None: the CPUs this process
    may use). Returns what is in effect: {"intra_op", "inter_op", "requested", "fixed",
    "op_determinism"}."""
    import tensorflow as tf

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ModelConfigError(f"threads: expected None or an integer >= 1, got {threads!r}")
    wanted = threads or available_cpus()
    fixed = True
    for setter in (tf.config.threading.set_intra_op_parallelism_threads,
                   tf.config.threading.set_inter_op_parallelism_threads):
        try:
            setter(wanted)
        except RuntimeError:  # pools already started in this process: sizes stay as they are
            fixed = False
    tf.config.experimental.enable_op_determinism()
    # 0 means TensorFlow's default, one thread per CPU it may use.
    intra = tf.config.threading.get_intra_op_parallelism_threads() or available_cpus()
    inter = tf.config.threading.get_inter_op_parallelism_threads() or available_cpus()
    return {"intra_op": int(intra), "inter_op": int(inter), "requested": wanted,
            "fixed": fixed and intra == inter == wanted, "op_determinism": True}
