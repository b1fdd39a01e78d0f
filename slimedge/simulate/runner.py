"""The sweep on Dask: scenarios in chunks, one Parquet file per finished chunk, resumable.

A chunk is scenarios [start, stop) of one generator under the sweep's cost models; its file
`chunks/<generator>-<cost models>-<start>-<stop>.parquet` is written by the driver when the
chunk's task returns (a temporary file renamed over the name, so a file that exists is
complete). A rerun into the same folder skips every chunk whose file exists: after an
interrupt nothing finished is recomputed. `sweep.json` holds what the chunks depend on (the
ladder's digest, the seed, the chunk size); a folder holding another sweep is refused.
`runs.jsonl` gets one line per run, interrupted ones included (what it computed, its wall
time, workers, CPU), so a sweep finished over several runs still says what it cost.

Workers: a `LocalCluster` with one single-threaded process per core (dashboard off) by
default, or the scheduler at `scheduler`. Tasks carry the scenario range and the seed (so
`client.map`'s deduplication never merges two chunks) and each future is dropped once its
rows are written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimedge.simulate import COST_MODELS, GENERATORS, SimulateError
from slimedge.simulate.state import ladder_digest

CHUNK = 5  # scenarios per task and per Parquet file
SWEEP_FILE = "sweep.json"
RUNS_FILE = "runs.jsonl"
CHUNKS_DIR = "chunks"
SWEEP_VERSION = 2  # 2: plans enumerate boxes up to SWEEP_ENUMERATE_BUDGET; plan_proven
CONNECT_TIMEOUT = "10s"  # to reach a --scheduler


@dataclass(frozen=True)
class Chunk:
    generator: str
    start: int
    stop: int
    cost_models: tuple[str, ...]

    @property
    def name(self) -> str:
        return (f"{self.generator}-{'+'.join(self.cost_models)}-{self.start:06d}-"
                f"{self.stop:06d}.parquet")

    @property
    def scenarios(self) -> int:
        return self.stop - self.start


@dataclass
class SweepRun:
    out: Path
    chunks: list[Chunk]
    computed: list[Chunk] = field(default_factory=list)
    reused: list[Chunk] = field(default_factory=list)
    wall_s: float = 0.0
    workers: int = 0

    def paths(self) -> list[Path]:
        return [self.out / CHUNKS_DIR / c.name for c in self.chunks]


def plan_chunks(n: int, generators: Sequence[str], cost_models: Sequence[str],
                chunk: int = CHUNK) -> list[Chunk]:
    """Chunk boundaries at multiples of `chunk`, so a larger N reuses the smaller run's."""
    return [Chunk(g, s, min(s + chunk, n), tuple(cost_models))
            for g in generators for s in range(0, n, chunk)]


def check_request(n: int, generators: Sequence[str], cost_models: Sequence[str]) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SimulateError(f"--scenarios: expected a whole number >= 1, got {n!r}")
    for g in generators:
        if g not in GENERATORS:
            raise SimulateError(f"--generator: unknown generator {g!r} (known: "
                                f"{', '.join(GENERATORS)}, all)")
    for cm in cost_models:
        if cm not in COST_MODELS:
            raise SimulateError(f"--cost-model: unknown cost model {cm!r} (known: "
                                f"{', '.join(COST_MODELS)}, both)")


def _check_folder(out: Path, settings: dict[str, Any]) -> None:
    import json

    from slimedge.artifacts import write_json

    path = out / SWEEP_FILE
    if path.is_file():
        try:
            held = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SimulateError(f"--out {out}: {path} cannot be read ({exc})") from None
        diff = [k for k in settings if held.get(k) != settings[k]]
        if diff:
            raise SimulateError(
                f"--out {out}: holds a sweep with other settings ({', '.join(diff)}: "
                + "; ".join(f"{held.get(k)!r} there, {settings[k]!r} now" for k in diff)
                + "); give another --out to start a new sweep")
        return
    if out.exists() and not out.is_dir():
        raise SimulateError(f"--out {out}: exists and is not a folder")
    write_json(path, settings)


def log_run(out: Path, run: SweepRun, *, started: float, scheduler: str | None,
            completed: bool) -> None:
    """Append the run's line to `runs.jsonl` (appended and flushed: earlier lines are kept)."""
    import datetime
    import json

    from slimedge.provenance import cpu_name

    line = {"started_utc": datetime.datetime.fromtimestamp(started, datetime.UTC)
            .isoformat(timespec="seconds"),
            "wall_s": round(run.wall_s, 3),
            "computed_scenarios": sum(c.scenarios for c in run.computed),
            "reused_scenarios": sum(c.scenarios for c in run.reused),
            "workers": run.workers, "scheduler": scheduler or "local", "cpu": cpu_name(),
            "completed": completed}
    with open(out / RUNS_FILE, "a") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_runs(out: Path) -> tuple[list[dict[str, Any]], int]:
    """The lines of `runs.jsonl` and how many could not be read (skipped, not fatal: the log
    describes the sweep, the chunks are the results)."""
    import json

    path = out / RUNS_FILE
    runs: list[dict[str, Any]] = []
    bad = 0
    if not path.is_file():
        return runs, bad
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
            float(line["wall_s"])
            int(line["computed_scenarios"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
            continue
        runs.append(line)
    return runs, bad


def write_chunk(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as one Parquet file, atomically (temporary sibling, then `os.replace`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from slimedge.artifacts import atomic_file

    table = pa.Table.from_pylist(rows)
    with atomic_file(path, "wb") as fh:
        pq.write_table(table, fh)


@contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client of the scheduler at `scheduler`, or of a LocalCluster started here."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise SimulateError("slimedge simulate needs dask.distributed (the host extra: pip "
                            "install 'slimedge[host]')") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SimulateError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        try:
            yield client
        finally:
            client.close()
        return
    from slimedge.provenance import available_cpus

    n = workers or available_cpus()  # one process per core this process may run on
    # dashboard off; the scheduler's health/metrics HTTP server on a free loopback port
    # (with no address it tries 8787, which another cluster on the machine may hold)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None,
                           scheduler_kwargs={"dashboard": False,
                                             "dashboard_address": "127.0.0.1:0"})
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _where(c: Chunk, seed: int) -> str:
    return (f"{c.generator} scenarios {c.start}-{c.stop - 1} (seed {int(seed)}, cost models "
            f"{', '.join(c.cost_models)})")


def run_sweep(ladder: str | os.PathLike, n: int, *, out: str | os.PathLike,
              generators: Sequence[str] = GENERATORS, cost_models: Sequence[str] = COST_MODELS,
              scheduler: str | None = None, workers: int | None = None, seed: int = 0,
              chunk: int = CHUNK, progress: bool = True,
              on_chunk: Callable[[Chunk], None] | None = None) -> SweepRun:
    """Every missing chunk computed on Dask and written; returns what was computed/reused."""
    from slimedge.simulate.evaluate import run_chunk

    check_request(n, generators, cost_models)
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise SimulateError(f"--workers: expected a whole number >= 1, got {workers!r}")
    ladder = str(Path(ladder).resolve())
    out = Path(out)
    digest = ladder_digest(ladder)
    _check_folder(out, {"version": SWEEP_VERSION, "ladder_manifest_sha256": digest,
                        "seed": int(seed), "chunk": int(chunk)})
    (out / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
    chunks = plan_chunks(n, generators, cost_models, chunk)
    run = SweepRun(out, chunks)
    todo = [c for c in chunks if not (out / CHUNKS_DIR / c.name).is_file()]
    run.reused = [c for c in chunks if c not in todo]
    started, t0 = time.time(), time.perf_counter()
    completed = False
    from tqdm import tqdm

    bar = tqdm(total=sum(c.scenarios for c in chunks), initial=sum(c.scenarios
                                                                   for c in run.reused),
               desc="simulate", unit="scenario", disable=not progress)
    try:
        if todo:
            from dask.distributed import as_completed

            with dask_client(scheduler, workers) as client:
                run.workers = len(client.scheduler_info().get("workers", {}))
                futures = {client.submit(run_chunk, ladder, c.generator, c.start, c.stop,
                                         int(seed), c.cost_models, pure=False,
                                         key=f"simulate-{digest[:12]}-{int(seed)}-{c.name}"): c
                           for c in todo}
                for fut in as_completed(list(futures)):
                    c = futures.pop(fut)
                    try:
                        rows = fut.result()
                    except SimulateError as exc:
                        raise SimulateError(f"{_where(c, seed)}: {exc}") from None
                    except Exception as exc:  # a bug in a task: name the chunk, keep the rest
                        raise SimulateError(f"{_where(c, seed)}: {type(exc).__name__}: {exc} "
                                            "(finished chunks are kept: rerun the same command "
                                            "to resume)") from exc
                    del fut  # the rows leave the worker's memory once written
                    write_chunk(out / CHUNKS_DIR / c.name, rows)
                    run.computed.append(c)
                    bar.update(c.scenarios)
                    if on_chunk is not None:
                        on_chunk(c)
        completed = True
    finally:
        bar.close()
        run.wall_s = time.perf_counter() - t0
        log_run(out, run, started=started, scheduler=scheduler, completed=completed)
    return run
