"""Crash safety of applying an update: a real process applying it is SIGKILLed at five points
(during the download, after staging, after verification, during the swap before the pointer
is replaced, right after the replace). After each, `recover()` in a new process view serves a
valid model that loads and runs in LiteRT: the old one before the swap, the new one after,
never none. The interrupted update then resumes and applies.

The applying process runs the device side only, with TensorFlow made unimportable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slimedge.export import signing
from slimedge.export.manifest import DeploymentManifest
from slimedge.fleet.updates import build_update
from slimedge.runtime import update_messages as wire
from slimedge.runtime.branch import BranchRunner
from slimedge.runtime.slots import TMP_PREFIX, UpdateSlots
from slimedge.runtime.update import load_trust, parse_utc
from tests.update_fixtures import PI_DEVICE, make_deployment

ROOT = Path(__file__).resolve().parents[1]
BOARD = "rpi4b"
NOW = parse_utc("2025-02-02T00:00:00Z")
CHUNK = 500

# The applying device: offer + chunks from files (as received over the wire), stage, verify,
# self-test, commit. The checkpoint hook SIGKILLs the process at the named point
# ("download" fires after each chunk is stored; it kills at the second one).
CHILD = r"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import device_smoke
sys.meta_path.insert(0, device_smoke.BlockTensorFlow())
from slimedge.runtime import update_messages as wire
from slimedge.runtime.selftest import self_test
from slimedge.runtime.slots import UpdateSlots
from slimedge.runtime.update import load_trust

state, inbox, public, device, board, point, now = sys.argv[2:9]
seen = {"download": 0}

def checkpoint(name):
    if name == "download":
        seen["download"] += 1
        hit = point == "download" and seen["download"] == 2
    else:
        hit = name == point
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)

slots = UpdateSlots(state, load_trust(device, board, public), clock=lambda: float(now),
                    self_test=self_test, checkpoint=checkpoint)
slots.recover()
sequence = None
for msg in sorted(Path(inbox).iterdir()):
    m = wire.decode(msg.read_bytes())
    if isinstance(m, wire.Offer):
        if slots.offer(m.manifest, m.signature) is None:
            print(f"already running {m.sequence}", flush=True)
            sys.exit(0)
        sequence = m.sequence
    else:
        slots.receive_chunk(m.sequence, m.offset, m.data, total=m.total,
                            payload_id=m.payload_id)
slots.stage_and_verify(sequence)
info = slots.commit()
leaked = [n for n in sys.modules if n.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
print(f"committed {info.sequence} leaked={leaked}", flush=True)
"""

POINTS_OLD = ("download", "staged", "verified", "swap")
POINTS_NEW = ("swapped",)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("crash")
    private, public = signing.generate_keys(base / "keys")
    old = make_deployment(base / "old", private, seed=1, created="2025-01-01T00:00:00Z",
                          deployment_id="fleet-old")
    new = make_deployment(base / "new", private, seed=2, created="2025-02-01T00:00:00Z",
                          deployment_id="fleet-new", level=0.5)
    up = build_update(new, PI_DEVICE, signing.load_private_key(private), sequence=5,
                      now=NOW - 60)
    inbox = base / "inbox"  # the messages in arrival order: the offer, then the chunks
    inbox.mkdir()
    (inbox / "000-offer").write_bytes(wire.encode_offer(up.offer(CHUNK)))
    chunks = up.chunks(CHUNK)
    assert len(chunks) >= 4
    for i, c in enumerate(chunks):
        (inbox / f"{i + 1:03d}-chunk").write_bytes(wire.encode_chunk(c))
    manifest = DeploymentManifest.from_json((old / "manifest.json").read_bytes())
    return {"public": public, "old": old, "manifest": manifest, "inbox": inbox, "up": up}


def provisioned(setup: dict, state: Path) -> UpdateSlots:
    slots = UpdateSlots(state, load_trust(PI_DEVICE, BOARD, setup["public"]))
    slots.provision_deployment(setup["old"], setup["manifest"], PI_DEVICE)
    return slots


def run_child(setup: dict, state: Path, point: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT / "tools"), str(state), str(setup["inbox"]),
         str(setup["public"]), PI_DEVICE, BOARD, point, str(NOW)],
        capture_output=True, text=True, cwd=ROOT, timeout=300)


def served_after_restart(setup: dict, state: Path) -> tuple[str, int]:
    """What a restarted device serves: recover(), then the model run in LiteRT."""
    slots = UpdateSlots(state, load_trust(PI_DEVICE, BOARD, setup["public"]))
    info = slots.recover()
    path, _ = slots.current()
    out = BranchRunner(path).run(np.full((16, 16, 1), 128, np.uint8))
    assert out.features.shape == (8,) and np.all(np.isfinite(out.dequantized()))
    assert not [p for p in state.rglob(f"{TMP_PREFIX}*")], "recover left temporaries"
    return info.model_sha256, info.sequence


@pytest.mark.parametrize("point", POINTS_OLD + POINTS_NEW)
def test_kill_at_each_point_comes_back_with_a_valid_model(setup, tmp_path, point):
    state = tmp_path / "state"
    slots = provisioned(setup, state)
    old_sha = slots.current()[1].model_sha256
    new_sha = setup["up"].manifest.model_sha256

    done = run_child(setup, state, point)
    assert done.returncode == -signal.SIGKILL, (point, done.returncode, done.stderr[-2000:])

    expected = (old_sha, 0) if point in POINTS_OLD else (new_sha, 5)
    assert served_after_restart(setup, state) == expected
    if point == "download":  # what arrived before the kill is kept: the transfer resumes
        kept = UpdateSlots(state, load_trust(PI_DEVICE, BOARD, setup["public"]))
        kept.recover()
        gaps = kept.missing(5)
        assert gaps and sum(n for _, n in gaps) == setup["up"].manifest.bytes - 2 * CHUNK

    # The same device restarted with the update still on offer: it applies it (or, after the
    # swap, finds it already running).
    again = run_child(setup, state, "none")
    assert again.returncode == 0, again.stderr[-2000:]
    said = "committed 5 leaked=[]" if point in POINTS_OLD else "already running 5"
    assert said in again.stdout
    assert served_after_restart(setup, state) == (new_sha, 5)


def test_device_side_applies_with_tensorflow_blocked(setup, tmp_path):
    state = tmp_path / "state"
    provisioned(setup, state)
    done = run_child(setup, state, "none")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "committed 5 leaked=[]" in done.stdout


def test_killed_while_a_chunk_file_is_half_written(setup, tmp_path):
    """A chunk's temporary file (what a kill inside a write leaves) is removed on recover and
    not counted as received."""
    state = tmp_path / "state"
    slots = provisioned(setup, state)
    slots.clock = lambda: NOW
    up = setup["up"]
    slots.offer(up.manifest_bytes, up.signature)
    chunks = slots.root / "staging" / "5" / "chunks"
    chunks.mkdir(parents=True)
    (chunks / f"{TMP_PREFIX}{0:012d}-{CHUNK:09d}").write_bytes(b"\0" * 10)
    fresh = UpdateSlots(state, slots.trust, clock=lambda: NOW)
    fresh.recover()
    assert fresh.missing(5) == [[0, up.manifest.bytes]]
    assert os.listdir(chunks) == []
