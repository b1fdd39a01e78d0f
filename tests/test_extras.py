"""The install extras: the host runs the local fleet (`fleet up`, the demo's fleet stage), so
everything a device needs must come with the host install too (the README's first command
installs `.[host]` alone)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_host_extra_has_everything_the_device_extra_has():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    missing = _names(extras["device"]) - _names(extras["host"])
    assert not missing, f"pyproject.toml: host extra lacks {sorted(missing)} (device has them)"
