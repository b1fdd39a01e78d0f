"""Frame alignment: collect each frame's views by frame id until the frame is due.

A frame opens when its first view arrives; its deadline is that view's capture time plus the
window (the plan's predicted latency + slack). It is due at the deadline, or earlier as soon as
every expected view has arrived. Once answered, a frame id is remembered for a while so a view
arriving afterwards is refused as a duplicate (its view was used) or late (it was not), never
reopening the frame.

A frame belongs to one deployment (`PendingFrame.deployment`, given with its first view): a view
of another deployment is refused, so no frame is ever pooled across two models. `expected` (the
views a frame waits for) may be a function of the frame id, since frames on either side of a
fleet-wide switch wait for the views of their own deployment.

Memory is bounded: at most `max_pending` open frames and `remember` answered ones; a view whose
capture time lies more than `horizon_ns` in the future is refused (a wrong clock or a forged
timestamp would otherwise hold a frame open indefinitely).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slimedge.errors import SlimEdgeError

__all__ = ["Expected", "FrameAligner", "PendingFrame", "RefusedViewError"]

Expected = frozenset[int] | Callable[[int], frozenset[int]]  # views a frame waits for


class RefusedViewError(SlimEdgeError):
    """A view the aligner does not take; `reason` is the rejection counter it belongs to."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class PendingFrame:
    frame: int
    capture_ns: int
    deadline_ns: int
    views: dict[int, Any] = field(default_factory=dict)  # view -> decoded feature message
    arrived_ns: dict[int, int] = field(default_factory=dict)  # view -> receive time
    deployment: str | None = None  # the deployment every view of this frame belongs to

    @property
    def last_arrival_ns(self) -> int:
        return max(self.arrived_ns.values())


class FrameAligner:
    def __init__(self, window_ns: int, *, horizon_ns: int = 60_000_000_000,
                 max_pending: int = 4096, remember: int = 8192) -> None:
        if window_ns <= 0:
            raise SlimEdgeError(f"alignment window: expected > 0 ns, got {window_ns}")
        self.window_ns = int(window_ns)
        self.horizon_ns = int(horizon_ns)
        self.max_pending = max_pending
        self.remember = remember
        self.pending: dict[int, PendingFrame] = {}
        self.max_opened = -1  # the highest frame id ever opened
        # answered frame id -> (capture ns, views used), oldest first
        self._answered: OrderedDict[int, tuple[int, frozenset[int]]] = OrderedDict()

    def add(self, frame: int, view: int, capture_ns: int, message: Any,
            now_ns: int, *, window_ns: int | None = None,
            deployment: str | None = None) -> PendingFrame:
        """File one view of one frame; RefusedViewError(reason) if it cannot be used.
        `window_ns`: this frame's window when it opens (default the aligner's);
        `deployment`: the deployment the view belongs to (a frame never mixes two)."""
        window = self.window_ns if window_ns is None else int(window_ns)
        if capture_ns - now_ns > self.horizon_ns:
            raise RefusedViewError("bad_timestamp", f"frame {frame} view {view}: capture time "
                                   f"{(capture_ns - now_ns) / 1e9:.1f} s in the future")
        done = self._answered.get(frame)
        if done is not None and abs(capture_ns - done[0]) < window:
            if view in done[1]:
                raise RefusedViewError("duplicate", f"frame {frame} view {view}: already used")
            raise RefusedViewError("late", f"frame {frame} view {view}: arrived after the "
                                   "frame was answered")
        p = self.pending.get(frame)
        if p is None:
            deadline = capture_ns + window
            if now_ns > deadline:
                raise RefusedViewError("late", f"frame {frame} view {view}: arrived "
                                       f"{(now_ns - deadline) / 1e6:.1f} ms after its deadline")
            if len(self.pending) >= self.max_pending:
                raise RefusedViewError("overload", f"frame {frame}: {self.max_pending} frames "
                                       "already open")
            p = self.pending[frame] = PendingFrame(frame, capture_ns, deadline,
                                                   deployment=deployment)
            self.max_opened = max(self.max_opened, frame)
        elif p.deployment != deployment:
            raise RefusedViewError("wrong_deployment", f"frame {frame} view {view}: of "
                                   f"deployment {deployment!r}, the frame pools "
                                   f"{p.deployment!r}: never two models in one frame")
        elif view in p.views:
            raise RefusedViewError("duplicate", f"frame {frame} view {view}: already received")
        elif now_ns > p.deadline_ns:
            raise RefusedViewError("late", f"frame {frame} view {view}: arrived after its deadline")
        p.views[view] = message
        p.arrived_ns[view] = now_ns
        return p

    def complete(self, p: PendingFrame, expected: Expected) -> bool:
        want = expected(p.frame) if callable(expected) else expected
        return len(p.views) >= len(want) and want <= p.views.keys()

    def due(self, now_ns: int, expected: Expected) -> list[PendingFrame]:
        """Frames to answer now (deadline reached or every expected view in), by frame id."""
        ready = [p for p in self.pending.values()
                 if now_ns >= p.deadline_ns or self.complete(p, expected)]
        return sorted(ready, key=lambda p: p.frame)

    def close(self, p: PendingFrame) -> None:
        """Answered: forget its features, remember its id and the views used."""
        self.pending.pop(p.frame, None)
        self._answered[p.frame] = (p.capture_ns, frozenset(p.views))
        self._answered.move_to_end(p.frame)
        while len(self._answered) > self.remember:
            self._answered.popitem(last=False)
