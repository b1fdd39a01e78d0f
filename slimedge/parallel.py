"""An ordered parallel map over spawned processes, with a progress bar: how the data stages
(generator, ModelNet loader, mesh importer) spread work over the cores."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

from slimedge.errors import SlimEdgeError

T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None, n_tasks: int, *, min_parallel: int = 64,
                    cap: int = 16, error: type[SlimEdgeError] = SlimEdgeError) -> int:
    """Processes to use: an explicit count is honoured; None means all cores (at most `cap`)
    for jobs of at least `min_parallel` tasks, else one. A bad count raises `error`."""
    if workers is not None:
        if int(workers) < 1:
            raise error(f"workers: must be at least 1, got {workers}")
        return int(workers)
    if n_tasks < min_parallel:
        return 1
    return max(1, min(available_cpus(), cap))


def map_ordered(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    progress: bool,
    desc: str,
    unit: str = "obj",
    chunksize: int = 1,
) -> Iterator[R]:
    """Yield fn(item) for every item, in input order, over `workers` processes.

    Processes are spawned, not forked, so a parent that already holds threads (TensorFlow) is
    safe; as with any spawned pool, a script that asks for workers > 1 must run its work under
    `if __name__ == "__main__":`. On the first error the pending work is cancelled and the
    error re-raised as is.
    """
    bar = tqdm(total=len(items), desc=desc, unit=unit, file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update(1)
            return
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx)
        try:
            for result in pool.map(fn, items, chunksize=max(1, chunksize)):
                yield result
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    finally:
        bar.close()
