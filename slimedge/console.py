"""What a person sees while a long command runs, and where everything else goes.

The person sees our own lines and progress bars. Everything else goes to a log file:
Python warnings, `logging` records (absl included), and what native libraries write to file
descriptors 1 and 2 (TensorFlow's C++ logs, LiteRT's "INFO: Created TensorFlow Lite XNNPACK
delegate", the converter's "fully_quantize: 0, ..." lines). Native code writes straight to the
descriptors, so replacing `sys.stderr` is not enough: `Console.capture` points the descriptors
themselves at the log (`os.dup2`) and keeps a duplicate of the original stderr for the person.

On a terminal, progress bars redraw in place. Anywhere else (a CI log, `2> file`), every redraw
would become a line, so progress is thinned to one line every `interval` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

PROGRESS_INTERVAL_S = 10.0  # a non-terminal gets at most one progress line this often
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ThrottledProgress(io.TextIOBase):
    """A text stream for a non-terminal: full lines pass through; text that redraws in place
    (a segment that began after a carriage return, as a progress bar's does) is written as a
    line when it is flushed (a bar flushes each redraw), at most once every `interval` seconds.
    A redraw is shown when it is drawn or not at all: the text a later one replaces is stale."""

    def __init__(self, target: TextIO, interval: float = PROGRESS_INTERVAL_S) -> None:
        super().__init__()
        self._target = target
        self._interval = float(interval)
        self._last = time.monotonic()  # no progress line in a stage's first interval
        self._pending = ""
        self._redraw = False  # the pending segment began after "\r"

    @property
    def encoding(self) -> str:  # progress bars pick their characters by this
        return getattr(self._target, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for piece in re.split(r"([\r\n])", text):
            if piece in ("\r", "\n"):
                if not self._redraw:
                    line = _ANSI.sub("", self._pending).rstrip()
                    if line.strip():
                        self._emit(line)
                self._pending, self._redraw = "", piece == "\r"
            else:
                self._pending += piece
        return len(text)

    def flush(self) -> None:
        now = time.monotonic()
        text = _ANSI.sub("", self._pending).strip()
        if self._redraw and text and now - self._last >= self._interval:
            self._emit(text)
            self._last = now
            self._pending = ""
        self._target.flush()

    def _emit(self, line: str) -> None:
        self._target.write(line + "\n")
        self._target.flush()

    def restart(self) -> None:
        """Start a new interval (a new stage): no leftover redraw is printed late."""
        self._pending, self._redraw, self._last = "", False, time.monotonic()


class Console:
    """The person's end of a run: `say` a line, `capture` a stage's third-party output."""

    def __init__(self, stream: TextIO | None = None, *,
                 interval: float = PROGRESS_INTERVAL_S) -> None:
        stream = sys.stderr if stream is None else stream
        self._own: TextIO | None = None
        fd = _fileno(stream)
        if fd is not None:
            # A duplicate of the descriptor keeps reaching the person while `capture` points
            # the original one at a log.
            stream.flush()
            self._own = os.fdopen(os.dup(fd), "w", buffering=1,
                                  encoding=getattr(stream, "encoding", None) or "utf-8",
                                  errors="replace")
            stream = self._own
        self.tty = bool(stream.isatty())
        self.stream: TextIO = stream if self.tty else ThrottledProgress(stream, interval)
        self._direct = stream  # our own lines, never thinned

    def begin(self, text: str) -> None:
        """On a terminal, what is starting, on a line the next bar or `say` overwrites."""
        if self.tty:
            self._direct.write(text)
            self._direct.flush()

    def say(self, line: str) -> None:
        """One line for the person (on a terminal, over whatever a bar left on its line)."""
        self._direct.write(("\r\x1b[K" if self.tty else "") + line + "\n")
        self._direct.flush()

    @contextlib.contextmanager
    def capture(self, log_path: str | os.PathLike, *, stdout: bool = False) -> Iterator[Path]:
        """Send third-party output to `log_path` (appended) while the block runs.

        `sys.stderr` becomes the person's stream (progress bars, our own messages); file
        descriptor 2, Python warnings and logging records go to the log. With `stdout`, file
        descriptor 1 and `sys.stdout` go to the log too (a command whose stdout is not its
        answer while the block runs).
        """
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(self.stream, ThrottledProgress):
            self.stream.restart()
        with open(log_path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
            log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} ==\n")
            with contextlib.ExitStack() as stack:
                stack.enter_context(_descriptor_to(2, log))
                if stdout:
                    stack.enter_context(_descriptor_to(1, log))
                    stack.enter_context(contextlib.redirect_stdout(log))
                stack.enter_context(contextlib.redirect_stderr(self.stream))
                stack.enter_context(_warnings_to(log))
                stack.enter_context(_logging_to(log))
                yield log_path

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return None


def _flush_c_stdio() -> None:
    """Native code's buffered stdio must reach the descriptor it was written for."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _descriptor_to(fd: int, log: TextIO) -> Iterator[None]:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    _flush_c_stdio()
    log.flush()
    saved = os.dup(fd)
    try:
        os.dup2(log.fileno(), fd)
        yield
    finally:
        for stream in (sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        _flush_c_stdio()
        os.dup2(saved, fd)
        os.close(saved)


@contextlib.contextmanager
def _warnings_to(log: TextIO) -> Iterator[None]:
    with warnings.catch_warnings():
        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _logging_to(log: TextIO) -> Iterator[None]:
    """Every record that reaches the root logger (absl's and TensorFlow's Python loggers
    propagate there) goes to the log, and only there, while the block runs."""
    root = logging.getLogger()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    saved = root.handlers[:]
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved


def text_table(headers: list[str], rows: list[list[str]], *, right: tuple[int, ...] = (),
               indent: str = "") -> str:
    """Rows of strings in aligned columns under their headers (columns in `right` aligned right,
    for numbers); the last column is not padded, so a long name or note may run on."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w)
               for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return (indent + "  ".join(out)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])
