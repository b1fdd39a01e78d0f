"""A thread-safe bounded FIFO that drops its OLDEST item when full and counts the drops.

Used wherever a producer must never block and memory must never grow: the MQTT client's
inbound hand-off (network thread -> worker) and the agent's outbox (inference -> link).
For live frames the newest one is worth the most, so the oldest goes first.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["DropOldestQueue"]


class DropOldestQueue(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize: expected an integer >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.dropped = 0  # items pushed out unread because the queue was full

    def put(self, item: T) -> bool:
        """Append `item`; returns False when an older item had to be dropped to make room."""
        with self._cond:
            kept_all = True
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
                kept_all = False
            self._items.append(item)
            self._cond.notify()
            return kept_all

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, waiting up to `timeout` seconds (None: forever); None if none came."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return None
            return self._items.popleft()

    def get_nowait(self) -> T | None:
        with self._cond:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
