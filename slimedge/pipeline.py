"""A work folder of stages: each stage writes one fixed sub-path and is skipped when its inputs
(parameters + the fingerprints of what it reads) did not change since its last success.

State lives in `<work>/stages.json`: per stage, the input fingerprint, its status and a record
of what it produced (e.g. a content hash) that downstream stages fold into their own
fingerprints.

Two ways a stage can end without its output:
- a defect (any other SlimEdgeError): StageError, the run stops; the previous output and
  state are left untouched, so fixing the cause and rerunning is cheap;
- its goal cannot be met for reasons in the data (one of the stage's `unmet` errors, e.g. an
  infeasible plan): the stage is marked "unmet" with the reason, and every stage that `needs`
  it is marked "blocked" instead of run. The old output of both is removed: it answered other
  inputs, and nothing downstream (nor a user's script) may take it for this run's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.artifacts import write_json
from slimedge.errors import SlimEdgeError, StageError

STATE_FILE = "stages.json"

# The sub-paths of a work folder, fixed: users' scripts rely on them.
WORK_LAYOUT = {
    "dataset": "dataset",
    "model": "model",
    "ladder": "ladder",
    "importance": "importance.json",
    "plan": "plan.json",
    "deploy": "deploy",
    "fleet": "fleet",
    "report": "report",
}


def fingerprint(obj: Any) -> str:
    """Stable hash of JSON-able inputs."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


OK, UNMET, BLOCKED = "ok", "unmet", "blocked"  # a stage's status in the state file


@dataclass
class Stage:
    name: str
    output: str  # sub-path of the work folder
    inputs: dict[str, Any]  # everything the result depends on (params, upstream records)
    run: Callable[[Path], dict[str, Any]]  # writes `output` atomically; returns its record
    needs: tuple[str, ...] = ()  # stages whose output this one reads
    # Errors that mean "the data cannot meet this stage's goal", not a defect.
    unmet: tuple[type[SlimEdgeError], ...] = ()


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "skipped" (up to date) | "unmet" | "blocked"
    seconds: float
    record: dict[str, Any]
    reason: str | None = None  # why an unmet or blocked stage has no output
    detail: dict[str, Any] | None = None  # an unmet error's machine-readable summary

    @property
    def ok(self) -> bool:
        return self.status in ("ran", "skipped")


class WorkFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._state_path = self.root / STATE_FILE
        self.state: dict[str, Any] = self._read_state()

    def _read_state(self) -> dict[str, Any]:
        if not self._state_path.exists():
            return {}
        try:
            state = json.loads(self._state_path.read_text())
        except json.JSONDecodeError:
            # A damaged state only costs a rerun: every stage is redone and rewritten.
            return {}
        return state if isinstance(state, dict) else {}

    def path(self, key: str) -> Path:
        return self.root / WORK_LAYOUT.get(key, key)

    def record(self, name: str) -> dict[str, Any]:
        return self.state.get(name, {}).get("record", {})

    def status(self, name: str) -> str | None:
        """The stage's last status: "ok", "unmet", "blocked", or None (never run)."""
        entry = self.state.get(name)
        if entry is None:
            return None
        return entry.get("status", OK)  # state files before statuses held successes only

    def reason(self, name: str) -> str | None:
        """Why an unmet or blocked stage has no output."""
        return self.state.get(name, {}).get("reason")

    def up_to_date(self, stage: Stage) -> bool:
        prev = self.state.get(stage.name)
        if prev is None or prev.get("fingerprint") != fingerprint(stage.inputs):
            return False
        if self.status(stage.name) == UNMET:
            return True  # the same inputs give the same answer: no output, same reason
        return self.status(stage.name) == OK and (self.root / stage.output).exists()

    def run(self, stage: Stage, *, force: bool = False) -> StageOutcome:
        missing = [n for n in stage.needs if self.status(n) != OK]
        if missing:
            # The cause is told once, by the stage that has it; this names the chain.
            reason = "; ".join(f"needs {n}, which is {self.status(n) or 'not run'}"
                               for n in missing)
            return self._not_done(stage, BLOCKED, reason)
        if not force and self.up_to_date(stage):
            prev = self.state[stage.name]
            status = "skipped" if self.status(stage.name) == OK else UNMET
            return StageOutcome(stage.name, status, 0.0, self.record(stage.name),
                                prev.get("reason"), prev.get("detail"))
        t0 = time.perf_counter()
        try:
            record = stage.run(self.root / stage.output)
        except stage.unmet as exc:
            return self._not_done(stage, UNMET, str(exc), getattr(exc, "summary", None),
                                  time.perf_counter() - t0)
        except SlimEdgeError as exc:
            raise StageError(f"stage '{stage.name}' failed: {exc}") from exc
        seconds = time.perf_counter() - t0
        self._save(stage, {"status": OK, "record": record, "seconds": round(seconds, 3)})
        return StageOutcome(stage.name, "ran", seconds, record)

    def _not_done(self, stage: Stage, status: str, reason: str,
                  detail: dict[str, Any] | None = None, seconds: float = 0.0) -> StageOutcome:
        _remove(self.root / stage.output)
        if detail is not None:  # e.g. NumPy numbers in an error's summary
            detail = json.loads(json.dumps(detail, default=str))
        self._save(stage, {"status": status, "reason": reason, "detail": detail,
                           "record": {}, "seconds": round(seconds, 3)})
        return StageOutcome(stage.name, status, seconds, {}, reason, detail)

    def _save(self, stage: Stage, entry: dict[str, Any]) -> None:
        self.state[stage.name] = {"fingerprint": fingerprint(stage.inputs),
                                  "output": stage.output, **entry,
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(self._state_path, self.state)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
