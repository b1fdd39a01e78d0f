"""The quiet console: third-party output (native writes to fd 1/2, Python warnings, logging)
goes to the stage's log; our own lines and progress reach the person; a non-terminal gets
progress at most once per interval."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from slimedge.console import Console, ThrottledProgress, text_table


def test_capture_sends_native_writes_warnings_and_logging_to_the_log(tmp_path):
    person = io.StringIO()
    handlers = logging.getLogger().handlers[:]
    console = Console(person, interval=3600)
    log = tmp_path / "logs" / "stage.log"
    with console.capture(log, stdout=True):
        os.write(2, b"I0000 native log on fd 2\n")
        os.write(1, b"fully_quantize: 0, native print on fd 1\n")
        warnings.warn("tf.lite interpreter is deprecated", UserWarning, stacklevel=1)
        logging.getLogger("absl").warning("absl says hello")
        print("epoch 1: loss 0.5")  # a stage's own stdout is log material in the demo
        print("our own progress line", file=sys.stderr)
    console.say("[1/2] stage      ran")
    text = log.read_text()
    for expected in ("I0000 native log on fd 2", "fully_quantize: 0", "interpreter is deprecated",
                     "absl says hello", "epoch 1: loss 0.5"):
        assert expected in text
    shown = person.getvalue()
    assert shown == "our own progress line\n[1/2] stage      ran\n"
    # Everything is back where it was.
    assert logging.getLogger().handlers == handlers
    with pytest.warns(UserWarning, match="after"):
        warnings.warn("after", UserWarning, stacklevel=1)


def test_descriptors_are_restored_after_an_error(tmp_path):
    log = tmp_path / "x.log"
    before = os.fstat(2).st_ino, os.fstat(1).st_ino
    with pytest.raises(RuntimeError, match="stage broke"):
        with Console(io.StringIO()).capture(log, stdout=True):
            raise RuntimeError("stage broke")
    assert (os.fstat(2).st_ino, os.fstat(1).st_ino) == before


def test_non_terminal_progress_is_thinned_and_lines_pass():
    out = io.StringIO()
    stream = ThrottledProgress(out, interval=3600)
    for i in range(50):
        stream.write(f"\repoch 1: {i * 2}%|##   | {i}/50")
        stream.flush()
    stream.write("\n[export] a line of our own\n")
    stream.write("\r\x1b[A  fine-tune 3/7\x1b[A\r")
    stream.flush()
    assert out.getvalue() == "[export] a line of our own\n"

    # Each redraw as it is flushed (a bar flushes every redraw); a redraw never flushed is
    # stale once the next one replaces it.
    out = io.StringIO()
    every = ThrottledProgress(out, interval=0)
    for text in ("\rbar 1/3", "\rbar 2/3", "\rbar 3/3\n"):
        every.write(text)
        every.flush()
    every.write("\rnever flushed\rbar \x1b[Adone")
    every.flush()
    assert out.getvalue().splitlines() == ["bar 1/3", "bar 2/3", "bar done"]
    assert not every.isatty()


def test_real_progress_bar_in_a_non_terminal_prints_a_few_lines():
    from tqdm import tqdm

    out = io.StringIO()
    console = Console(out, interval=3600)
    for _ in tqdm(range(500), file=console.stream, mininterval=0):
        pass
    assert not console.tty
    # 500 redraws, none within the interval; the bar's closing line is a full line.
    assert len(out.getvalue().splitlines()) <= 1


def test_litert_and_converter_messages_go_to_the_log(tmp_path):
    """The real thing, in a fresh process (LiteRT announces its XNNPACK delegate once per
    process): a quantizing conversion and an interpreter, under capture."""
    script = textwrap.dedent(f"""
        import numpy as np
        from slimedge.console import Console
        console = Console()
        with console.capture({str(tmp_path / "stage.log")!r}, stdout=True):
            import keras
            from slimedge.convert import to_tflite
            model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                      keras.layers.Flatten(), keras.layers.Dense(2)])
            rng = np.random.default_rng(0)
            blob = to_tflite(model, "int8", rng.random((8, 8, 8, 1), dtype=np.float32))
            from ai_edge_litert.interpreter import Interpreter
            interp = Interpreter(model_content=blob)
            interp.allocate_tensors()
            interp.invoke()
        console.say("done")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "done\n" and proc.stdout == ""
    log = (tmp_path / "stage.log").read_text()
    assert "XNNPACK delegate" in log


def test_text_table_aligns_columns():
    table = text_table(["id", "MiB", "name"], [["a", "1.5", "first"], ["bbb", "12", "second"]],
                       right=(1,))
    assert table.splitlines() == ["id   MiB  name", "a    1.5  first", "bbb   12  second"]
