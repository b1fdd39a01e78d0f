"""A work folder of stages: each stage writes one fixed sub-path and is skipped when its inputs
(parameters + the fingerprints of what it reads) did not change since its last success.

State lives in `<work>/stages.json`: per stage, the input fingerprint and a record of what it
produced (e.g. a content hash) that downstream stages fold into their own fingerprints.
A failing stage raises StageError and leaves its previous output and state untouched.
"""

from __future__ import annotations

import hashlib
import json
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
    "report": "report",
}


def fingerprint(obj: Any) -> str:
    """Stable hash of JSON-able inputs."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Stage:
    name: str
    output: str  # sub-path of the work folder
    inputs: dict[str, Any]  # everything the result depends on (params, upstream records)
    run: Callable[[Path], dict[str, Any]]  # writes `output` atomically; returns its record


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran" | "skipped"
    seconds: float
    record: dict[str, Any]


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

    def up_to_date(self, stage: Stage) -> bool:
        prev = self.state.get(stage.name)
        return (
            prev is not None
            and prev.get("fingerprint") == fingerprint(stage.inputs)
            and (self.root / stage.output).exists()
        )

    def run(self, stage: Stage, *, force: bool = False) -> StageOutcome:
        if not force and self.up_to_date(stage):
            return StageOutcome(stage.name, "skipped", 0.0, self.record(stage.name))
        t0 = time.perf_counter()
        try:
            record = stage.run(self.root / stage.output)
        except SlimEdgeError as exc:
            raise StageError(f"stage '{stage.name}' failed: {exc}") from exc
        seconds = time.perf_counter() - t0
        self.state[stage.name] = {
            "fingerprint": fingerprint(stage.inputs),
            "output": stage.output,
            "record": record,
            "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(self._state_path, self.state)
        return StageOutcome(stage.name, "ran", seconds, record)
