"""A fleet run folder, read back and summarised.

    run.json            what was run: deployment, frames, fps, start time, schedule, broker
    injections.jsonl    what `fleet up` did to the fleet, when (kill, restart, broker-restart)
    processes.jsonl     every child process start / kill / stop / exit, by pid
    logs/<name>.log     each process's output
    results.sqlite      the aggregator's answer per frame          (written by the aggregator)
    metrics.json        the aggregator's final counters             (written by the aggregator)
    events.jsonl        the aggregator's state changes over time    (written by the aggregator)
    summary.json        this module's summary (what `fleet up --json` prints)
    timeline.png        accuracy, live views and latency over time, failures marked

The summary compares every answered frame with the evaluator on the same live set
(`slimedge.fleet.reference`) and explains each failure: when it was injected, when the
aggregator declared the device dead (in heartbeat periods), which frames fell inside that
window and how they were answered, and the accuracy of each stretch of frames with one live
set, beside the evaluator's on exactly those frames.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.fleet.schedule import FleetUpError
from slimedge.runtime.results_db import RESULTS_DB

RUN_FILE = "run.json"
INJECTIONS_FILE = "injections.jsonl"
SUMMARY_FILE = "summary.json"
TIMELINE_FILE = "timeline.png"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn last line (a process killed mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dict(row)) + "\n")


@dataclass(frozen=True)
class FrameResults:
    """The aggregator's answers, one row per answered frame, sorted by frame."""

    frame: np.ndarray  # int64 (n,)
    pred: np.ndarray  # int64 (n,) class (-1: no view)
    live: np.ndarray  # bool (n, V): the views pooled
    latency_ms: np.ndarray  # float (n,) capture -> answer
    on_time: np.ndarray  # bool (n,)
    predicted_accuracy: np.ndarray  # float (n,) (nan: not given)


def read_results(run_dir: Path, views: int) -> FrameResults:
    """The aggregator's results table (`results`): one row per frame with `frame`, `class`,
    `views` (JSON list of the views pooled), `latency_ms`, `deadline_missed` and
    `predicted_accuracy`. A frame answered twice keeps its first answer."""
    path = run_dir / RESULTS_DB
    if not path.is_file():
        raise FleetUpError(f"{path}: missing: the aggregator wrote no results (see "
                           f"{run_dir / 'logs' / 'aggregator.log'})")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM results ORDER BY frame, rowid").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise FleetUpError(f"{path}: unreadable results database ({exc})") from exc
    seen: set[int] = set()
    keep = []
    for r in rows:
        if int(r["frame"]) not in seen:
            seen.add(int(r["frame"]))
            keep.append(r)
    n = len(keep)
    live = np.zeros((n, views), bool)
    for i, r in enumerate(keep):
        used = [int(v) for v in (json.loads(r["views"]) if r["views"] else [])]
        if any(not 0 <= v < views for v in used):
            raise FleetUpError(f"{path}: frame {r['frame']}: views {used} outside 0..{views - 1}")
        live[i, used] = True
    keys = keep[0].keys() if keep else []

    def column(name: str, default: float) -> np.ndarray:
        if name not in keys:
            return np.full(n, default, np.float64)
        return np.array([default if r[name] is None else r[name] for r in keep], np.float64)

    return FrameResults(
        frame=np.array([int(r["frame"]) for r in keep], np.int64),
        pred=np.array([-1 if r["class"] is None else int(r["class"]) for r in keep], np.int64),
        live=live,
        latency_ms=column("latency_ms", np.nan),
        on_time=column("deadline_missed", 0.0) == 0,
        predicted_accuracy=column("predicted_accuracy", np.nan),
    )


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


@dataclass
class RunFacts:
    """Everything the summary is computed from, aligned on the run's frames 0..frames-1."""

    frames: int
    fps: float
    start_ns: int
    views: int
    labels: np.ndarray  # (frames,) true class of each replayed frame
    answered: np.ndarray  # (frames,) bool
    pred: np.ndarray  # (frames,) -1 where not answered
    ref_pred: np.ndarray  # (frames,) the evaluator's, same live set (-1 where not answered)
    live: np.ndarray  # (frames, V) bool
    on_time: np.ndarray  # (frames,) bool (False where not answered)
    latency_ms: np.ndarray  # (frames,)
    predicted_accuracy: np.ndarray  # (frames,)

    def t_s(self, frame: np.ndarray | int) -> np.ndarray | float:
        return np.asarray(frame) / self.fps

    def since_start(self, t_ns: int) -> float:
        return (int(t_ns) - self.start_ns) / 1e9


def align(res: FrameResults, frames: int, fps: float, start_ns: int, labels: np.ndarray,
          ref_pred: np.ndarray) -> RunFacts:
    """Spread the answered rows (and the evaluator's predictions for them, `ref_pred` in the
    same order) over frames 0..frames-1; answers for frames outside the run are ignored."""
    V = res.live.shape[1]
    inside = (res.frame >= 0) & (res.frame < frames)
    idx = res.frame[inside]
    answered = np.zeros(frames, bool)
    answered[idx] = True
    pred = np.full(frames, -1, np.int64)
    pred[idx] = res.pred[inside]
    ref = np.full(frames, -1, np.int64)
    ref[idx] = np.asarray(ref_pred, np.int64)[inside]
    live = np.zeros((frames, V), bool)
    live[idx] = res.live[inside]
    on_time = np.zeros(frames, bool)
    on_time[idx] = res.on_time[inside]
    lat = np.full(frames, np.nan)
    lat[idx] = res.latency_ms[inside]
    pa = np.full(frames, np.nan)
    pa[idx] = res.predicted_accuracy[inside]
    return RunFacts(frames, fps, start_ns, V, np.asarray(labels[:frames], np.int64), answered,
                    pred, ref, live, on_time, lat, pa)


def stretch(f: RunFacts, sel: np.ndarray) -> dict[str, Any]:
    """Figures of the frames selected by the boolean mask `sel`."""
    ans = sel & f.answered
    n_ans = int(ans.sum())
    lat = f.latency_ms[ans]
    return {
        "frames": int(sel.sum()),
        "answered": n_ans,
        "on_time": int((sel & f.on_time).sum()),
        "lost": int((sel & ~f.answered).sum()),
        "accuracy": _ratio(((f.pred == f.labels) & ans).sum(), n_ans),
        "evaluator_accuracy": _ratio(((f.ref_pred == f.labels) & ans).sum(), n_ans),
        "mismatches": int(((f.pred != f.ref_pred) & ans).sum()),
        "latency_ms_median": round(float(np.median(lat)), 3) if len(lat) else None,
    }


def phases(f: RunFacts) -> list[dict[str, Any]]:
    """Runs of consecutive answered frames pooled from one live set (lost frames do not
    break a run): per run, its live views and its figures beside the evaluator's."""
    out: list[dict[str, Any]] = []
    current: bytes | None = None
    start = 0
    order = np.flatnonzero(f.answered)
    for i in order:
        key = f.live[i].tobytes()
        if key != current:
            if current is not None:
                out.append(_phase(f, start, int(i)))
            current, start = key, int(i)
    if current is not None:
        out.append(_phase(f, start, f.frames))
    return out


def _phase(f: RunFacts, first: int, stop: int) -> dict[str, Any]:
    sel = np.zeros(f.frames, bool)
    sel[first:stop] = True
    views = np.flatnonzero(f.live[first]).tolist()
    return {"first_frame": first, "last_frame": stop - 1,
            "from_s": round(float(f.t_s(first)), 3), "live_views": views, **stretch(f, sel)}


def device_views(views_of: Mapping[str, Sequence[int]], device: str) -> list[int]:
    return [int(v) for v in views_of[device]]


def _state_events(events: Sequence[Mapping[str, Any]], device: str, state: str) -> list[int]:
    """Times (ns) at which the aggregator put `device` into `state`."""
    return sorted(t for t, _ in _state_reasons(events, device, state))


def _state_reasons(events: Sequence[Mapping[str, Any]], device: str, state: str
                   ) -> list[tuple[int, str | None]]:
    out = []
    for e in events:
        if e.get("device") == device and e.get("state") == state:
            t = e.get("t_ns")
            if isinstance(t, int):
                out.append((t, e.get("reason")))
    return sorted(out, key=lambda x: x[0])


def first_after(times: Sequence[int], t: int) -> int | None:
    later = [x for x in times if x >= t]
    return later[0] if later else None


def detections(f: RunFacts, injections: Sequence[Mapping[str, Any]],
               events: Sequence[Mapping[str, Any]], views_of: Mapping[str, Sequence[int]],
               heartbeat_s: float) -> list[dict[str, Any]]:
    """Per killed (or hung) device: kill, suspicion and death times (s after the first frame), the
    detection delay in heartbeat periods, the first frame pooled without the device (the
    switch), and the frames captured between kill and detection with how they fared."""
    out = []
    for inj in injections:
        if inj.get("kind") not in ("kill", "hang"):
            continue
        device, t_kill = str(inj["device"]), int(inj["t_ns"])
        dead = first_after(_state_events(events, device, "dead"), t_kill)
        suspected = first_after(_state_events(events, device, "suspected"), t_kill)
        views = device_views(views_of, device)
        killed_s = f.since_start(t_kill)
        # The frame captured just before the kill may not have left the device yet: frames
        # from one period before the kill on can miss it.
        exposed = np.asarray(f.t_s(np.arange(f.frames))) > killed_s - 1.0 / f.fps
        row: dict[str, Any] = {
            "device": device, "views": views, "killed_s": round(killed_s, 3),
            "signal": "SIGKILL" if inj["kind"] == "kill" else "SIGSTOP",
            "suspected_s": None if suspected is None else round(f.since_start(suspected), 3),
            "detected_s": None if dead is None else round(f.since_start(dead), 3),
        }
        if dead is not None:
            row["detected_by"] = dict(_state_reasons(events, device, "dead")).get(dead)
            delay = (dead - t_kill) / 1e9
            row["detection_delay_s"] = round(delay, 3)
            row["heartbeat_periods"] = round(delay / heartbeat_s, 2)
            t = np.asarray(f.t_s(np.arange(f.frames)))
            window = exposed & (t <= f.since_start(dead))
            w = stretch(f, window)
            without = window & f.answered & ~f.live[:, views].any(axis=1)
            w["answered_without_device"] = int(without.sum())
            row["window"] = w
            # Every frame captured after the detection: answered by the survivors alone.
            after = t > f.since_start(dead)
            row["after_detection"] = stretch(f, after)
            row["after_detection"]["answered_with_device"] = int(
                (after & f.answered & f.live[:, views].any(axis=1)).sum())
        gone = np.flatnonzero(f.answered & exposed
                              & ~f.live[:, views].any(axis=1))
        row["switch_frame"] = int(gone[0]) if len(gone) else None
        row["switch_s"] = round(float(f.t_s(int(gone[0]))), 3) if len(gone) else None
        out.append(row)
    return out


def rejoins(f: RunFacts, injections: Sequence[Mapping[str, Any]],
            events: Sequence[Mapping[str, Any]], views_of: Mapping[str, Sequence[int]]
            ) -> list[dict[str, Any]]:
    """Per restarted device: when the aggregator saw it alive again and the first frame whose
    pooling used its views again."""
    out = []
    for inj in injections:
        if inj.get("kind") != "restart":
            continue
        device, t0 = str(inj["device"]), int(inj["t_ns"])
        alive = first_after(_state_events(events, device, "alive"), t0)
        views = device_views(views_of, device)
        t = np.asarray(f.t_s(np.arange(f.frames)))
        used = np.flatnonzero(f.answered & (t >= f.since_start(t0))
                              & f.live[:, views].all(axis=1))
        out.append({
            "device": device, "restarted_s": round(f.since_start(t0), 3),
            "alive_s": None if alive is None else round(f.since_start(alive), 3),
            "used_again_frame": int(used[0]) if len(used) else None,
            "used_again_s": round(float(t[used[0]]), 3) if len(used) else None,
            "frames_using_it_after": int(len(used)),
            # A replay restarts at frame 0: the new process sends the frames before its
            # first live one again, and the aggregator refuses those (duplicate or late).
            "old_frames_resent": None if not len(used) else int(used[0]) * len(views),
        })
    return out
