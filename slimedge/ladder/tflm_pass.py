"""The ladder's TFLite Micro feature pass, spread over the cores.

TFLite Micro runs one image per invoke, and the invoke is nearly all of the pass (about 98% of
it on the demo's branch: the input quantization and the Python binding are the rest), so the
only large saving that keeps the features exactly TFLite Micro's is running images in several
processes at once. Each worker process holds its own interpreter of the same file and arena;
an invoke depends on nothing but its input (the branch has no state between invokes), and the
chunks come back in input order, so the result is byte for byte the sequential one.

This module imports only the device-side runner (no TensorFlow): a spawned worker starts light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.ladder.store import LadderError
from slimedge.parallel import map_ordered, resolve_workers

# Below this many images a pass runs in the calling process: starting spawned workers costs
# seconds, more than a small pass (the tiny test ladder's) takes.
MIN_PARALLEL_IMAGES = 1000
# Chunks per worker: several, so a worker slowed by other load does not hold up the pass.
CHUNKS_PER_WORKER = 4

# A worker's interpreter, kept between the chunks it is given: (path, arena) -> runner.
_RUNNERS: dict[tuple[str, int], Any] = {}


def _runner(model_path: str, arena_bytes: int) -> Any:
    from slimedge.runtime.mcu import TflmRunner

    key = (model_path, arena_bytes)
    if key not in _RUNNERS:
        _RUNNERS.clear()  # one model per pass: never hold an interpreter of a finished one
        _RUNNERS[key] = TflmRunner(model_path, arena_bytes)
    return _RUNNERS[key]


def _run_chunk(task: tuple[str, int, np.ndarray]) -> np.ndarray:
    """Worker side: the features of one chunk of images, image by image."""
    model_path, arena_bytes, images = task
    runner = _runner(model_path, arena_bytes)
    return np.stack([runner.run(im).features for im in images])


def tflm_features(model_path: str | os.PathLike, arena_bytes: int, images: np.ndarray, *,
                  workers: int | None = None, runner: Any = None) -> np.ndarray:
    """TFLite Micro's features of every uint8 image `(N, H, W, C)`, `(N, D)` int8, each image
    its own invoke, as a microcontroller runs it.

    `workers`: processes (None: every usable core for a pass of at least
    `MIN_PARALLEL_IMAGES` images, else one). `runner`: an already loaded `TflmRunner` of the
    same file, used when the pass runs in this process.
    """
    images = np.asarray(images)
    n = resolve_workers(workers, len(images), min_parallel=MIN_PARALLEL_IMAGES,
                        error=LadderError)
    path = str(Path(model_path))
    if n <= 1 or len(images) < 2:
        if runner is None:
            from slimedge.runtime.mcu import TflmRunner

            runner = TflmRunner(path, arena_bytes)
        return np.stack([runner.run(im).features for im in images])
    n_chunks = min(len(images), n * CHUNKS_PER_WORKER)
    bounds = np.linspace(0, len(images), n_chunks + 1).round().astype(int)
    tasks = [(path, int(arena_bytes), images[a:b])
             for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return np.concatenate(list(map_ordered(_run_chunk, tasks, workers=n, progress=False,
                                           desc="tflm features", unit="chunk")))
