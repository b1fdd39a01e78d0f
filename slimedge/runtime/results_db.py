"""The run folder's results database (`results.sqlite`): one row per answered frame.

Table `results` (one row per answer, in answer order):

    frame INTEGER              frame id (object index in the replayed split)
    class INTEGER              predicted class
    class_name TEXT            its name (NULL when the deployment names none)
    confidence REAL            softmax probability of that class
    views TEXT                 JSON list of the views pooled
    n_views INTEGER            how many
    live_set TEXT              JSON list of the views of devices not dead at the answer
    missing TEXT               JSON list of live views that did not arrive in time
    dead_mask INTEGER          bitmask of the views not pooled
    weights_from TEXT          head | table | renormalize
    in_table INTEGER           1 if the contingency table covers the pooled live set
    predicted_accuracy REAL    the plan's accuracy for that live set (NULL if unknown)
    capture_ns, deadline_ns, answered_ns INTEGER   Unix ns
    latency_ms REAL            capture -> answer
    added_ms REAL              last view's arrival -> answer (> 0: answered at the deadline)
    compute_ms REAL            the call that answered it: decode, align, pool, classify
    deadline_missed INTEGER    1 if answered after its deadline
    label INTEGER              true class of a replayed frame (NULL without --dataset)
    correct INTEGER            1/0 (NULL without a label)
    deployment_id TEXT         the deployment whose device models and head made the answer
                               (a fleet-wide switch changes it at one frame id)

Table `meta` (key TEXT PRIMARY KEY, value TEXT): deployment_id, fleet, views, started_ns.

Rows are committed in batches (`flush`), so a reader sees whole rows only; WAL mode lets
`fleet up` read while the aggregator writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError

__all__ = ["COLUMNS", "RESULTS_DB", "ResultsDB", "ResultsDBError"]

RESULTS_DB = "results.sqlite"
COLUMNS = (
    ("frame", "INTEGER NOT NULL"), ("class", "INTEGER"), ("class_name", "TEXT"),
    ("confidence", "REAL"), ("views", "TEXT NOT NULL"), ("n_views", "INTEGER NOT NULL"),
    ("live_set", "TEXT NOT NULL"), ("missing", "TEXT NOT NULL"),
    ("dead_mask", "INTEGER NOT NULL"), ("weights_from", "TEXT NOT NULL"),
    ("in_table", "INTEGER NOT NULL"), ("predicted_accuracy", "REAL"),
    ("capture_ns", "INTEGER NOT NULL"), ("deadline_ns", "INTEGER NOT NULL"),
    ("answered_ns", "INTEGER NOT NULL"), ("latency_ms", "REAL NOT NULL"),
    ("added_ms", "REAL NOT NULL"), ("compute_ms", "REAL NOT NULL"),
    ("deadline_missed", "INTEGER NOT NULL"),
    ("label", "INTEGER"), ("correct", "INTEGER"), ("deployment_id", "TEXT"),
)
_INSERT = (f"INSERT INTO results ({', '.join(f'[{c}]' for c, _ in COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in COLUMNS)})")


class ResultsDBError(SlimEdgeError):
    """A results database that cannot be created or written; names the file."""


class ResultsDB:
    def __init__(self, path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
        self.path = Path(path)
        try:
            self._con = sqlite3.connect(self.path, check_same_thread=False)
            self._con.execute("PRAGMA journal_mode=WAL")
            cols = ", ".join(f"[{c}] {t}" for c, t in COLUMNS)
            self._con.execute(f"CREATE TABLE IF NOT EXISTS results ({cols})")
            self._con.execute("CREATE INDEX IF NOT EXISTS results_frame ON results(frame)")
            self._con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                              "value TEXT)")
            self._con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in meta.items()])
            self._con.commit()
        except sqlite3.Error as e:
            raise ResultsDBError(f"{self.path}: cannot create the results database ({e})") \
                from None
        self._rows: list[tuple[Any, ...]] = []
        self.written = 0

    def add(self, result: Any) -> None:
        """Queue one `aggregator.FrameResult` (written at the next `flush`)."""
        r = result
        self._rows.append((
            r.frame, r.cls, r.class_name, r.confidence, json.dumps(list(r.views)),
            len(r.views), json.dumps(list(r.live_set)), json.dumps(list(r.missing)),
            r.dead_mask, r.weights_from, int(r.in_table), r.predicted_accuracy,
            r.capture_ns, r.deadline_ns, r.answered_ns, r.latency_ms, r.added_ms, r.compute_ms,
            int(r.deadline_missed), r.label, None if r.correct is None else int(r.correct),
            r.deployment_id))

    def add_all(self, results: Iterable[Any]) -> None:
        for r in results:
            self.add(r)

    def flush(self) -> int:
        if not self._rows:
            return 0
        rows, self._rows = self._rows, []
        try:
            with self._con:
                self._con.executemany(_INSERT, rows)
        except sqlite3.Error as e:
            raise ResultsDBError(f"{self.path}: cannot write results ({e})") from None
        self.written += len(rows)
        return len(rows)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._con.close()
