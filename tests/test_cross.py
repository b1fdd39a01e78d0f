"""The standalone C++ aggregator against slimedge._core: same input, byte-identical report.

Builds `slimedge_aggregate` for the build machine with CMake (seconds), then feeds it files
written by slimedge.runtime.frames. The ARM builds are checked the same way under qemu by
`tools/cross_test.sh` and by ctest in the aarch64/armhf presets.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from slimedge.runtime import frames

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT / "cpp" / "tools" / "testdata"


def _load_fixture_maker():
    spec = importlib.util.spec_from_file_location("make_fixtures", TESTDATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    build = tmp_path_factory.mktemp("aggregate-build")
    configure = [cmake, "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 "-DSLIMEDGE_BUILD_TESTS=OFF", "-DSLIMEDGE_BUILD_PYTHON=OFF",
                 "-DSLIMEDGE_BUILD_TOOLS=ON"]
    for cmd in (configure, [cmake, "--build", str(build), "--target", "slimedge_aggregate"]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return build / "slimedge_aggregate"


def _run(program: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(program), str(path)], capture_output=True, text=True)


def test_fixtures_are_up_to_date():
    """The committed inputs and expected reports are what make_fixtures.py writes now."""
    for name, data in _load_fixture_maker().files().items():
        path = TESTDATA / name
        assert path.is_file(), f"{path} missing: run python {TESTDATA / 'make_fixtures.py'}"
        assert path.read_bytes() == data, f"{path} is stale: run make_fixtures.py"


@pytest.mark.parametrize("case", ["weighted_table", "max_renormalize", "mean_table"])
def test_program_prints_the_expected_report(program, case):
    done = _run(program, TESTDATA / f"{case}.bin")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (TESTDATA / f"{case}.expected.txt").read_text()


def test_program_matches_core_on_random_inputs(program, tmp_path):
    rng = np.random.default_rng(1)
    for i in range(12):
        B, V, D = (int(n) for n in rng.integers(1, [6, 10, 40]))
        mode = ("max", "mean", "weighted")[i % 3]
        policy = ("renormalize", "table")[(i // 3) % 2]
        live = rng.random((B, V)) < 0.6
        table = {}
        if policy == "table":
            for row in live:
                dead = int(sum(1 << v for v in range(V) if not row[v]))
                table[dead] = np.where(row, rng.uniform(0, 1, V), 0).astype(np.float32)
        path = tmp_path / f"{i}.bin"
        inp = frames.write_aggregate_input(
            path, rng.integers(-128, 128, (B, V, D), dtype=np.int8),
            rng.uniform(1e-3, 1.0, V).astype(np.float32), rng.integers(-128, 128, V), live,
            rng.uniform(0, 4, V).astype(np.float32), mode=mode, policy=policy, table=table)
        done = _run(program, path)
        assert done.returncode == 0, done.stderr
        assert done.stdout == frames.aggregate_report(inp), f"case {i} ({mode}, {policy})"


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d[:20], "truncated: field 'table_rows' needs 4 bytes at offset 20"),
        (lambda d: d[:-1], "truncated: .* ends inside field 'features'"),
        (lambda d: d + b"\x00\x00", "wrong size: .* 2 unexpected bytes"),
        (lambda d: b"SEFM" + d[4:], "field 'magic'"),
        (lambda d: d[:4] + b"\x09\x00" + d[6:], "field 'version': .* version 9"),
        (lambda d: d[:12] + b"\x00" + d[13:], "field 'V'"),
        (lambda d: d[:16] + b"\x05" + d[17:], "describes"),
        (lambda d: b"", "truncated: field 'magic'"),
    ],
)
def test_program_rejects_bad_files(program, tmp_path, corrupt, message):
    good = tmp_path / "good.bin"
    frames.write_aggregate_input(good, np.zeros((2, 3, 4), np.int8), [0.1, 0.2, 0.3],
                                 [0, 1, 2], [1, 0, 1], [1, 1, 1], mode="weighted")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(corrupt(good.read_bytes()))
    done = _run(program, bad)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"slimedge_aggregate: error: {bad}: "), done.stderr
    assert re.search(message, done.stderr), done.stderr


def test_program_usage(program):
    assert _run(program, Path("--help")).returncode == 0
    done = subprocess.run([str(program)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: slimedge_aggregate INPUT" in done.stderr
