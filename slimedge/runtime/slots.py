"""A device's model on disk: two slots (A/B), a pointer to the one it serves, and a staging
area where an update is downloaded. Built so a crash or power loss at any instant comes back
with a valid model, the old one or the new one, never none.

    <state>/current.json            {"slot": "a", "floor": 7}: the pointer, replaced whole;
                                    floor = the highest sequence ever served (replays stay
                                    refused after the device is provisioned again)
    <state>/a/  <state>/b/          slot.json (what the slot holds, with every file's sha256),
                                    the payload files (model.tflite, firmware/...),
                                    update.json + update.sig (absent for the provisioned slot)
    <state>/staging/<sequence>/     offer.bin (signed manifest), chunks/<offset> (one file each)

Why it is safe:
- Chunks and slots are written to temporary names, fsynced, then renamed: a name that exists
  holds complete bytes. A new slot is built beside the inactive one and renamed in; the
  serving slot is never written.
- The swap is one `os.replace` of the pointer file (fsynced before, directory fsynced after):
  before it the old slot is served, after it the new one; both are complete on disk.
- `recover()` on start removes temporaries and half-built slots and checks the served slot's
  files against their sha256 before returning it.

API for the agent: `open(deploy_dir, manifest, device)` once at start (recovers the state;
provisions the deployment when the state is empty or the deployment is newer), `current()`,
then per update `offer()`, `receive_chunk()`, `missing()`, `stage_and_verify()`
(all refusals raise UpdateRefusedError, the served model untouched), and `commit()` between two
frames. `checkpoint` is called at named points ("download", "staged", "verified", "swap",
"swapped") so a test can kill the process exactly there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from slimedge.runtime.update import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    TAMPERED,
    TRUNCATED,
    Running,
    Trust,
    UpdateError,
    UpdateManifest,
    UpdateRefusedError,
    check_offer,
    is_running,
)

POINTER = "current.json"
SLOT_INFO = "slot.json"
SLOTS = ("a", "b")
STAGING = "staging"
OFFER_FILE = "offer.bin"
TMP_PREFIX = ".tmp-"
MAX_PAYLOAD_BYTES = 256 << 20  # refuses chunks that claim more: a device's disk is small
MAX_UNOFFERED = 2  # sequences whose chunks are kept before their signed offer arrived
_IO = 1 << 16


@dataclass(frozen=True)
class SlotInfo:
    """What one slot holds: the facts a running device reports and checks updates against."""

    slot: str
    sequence: int
    deployment_id: str
    deployment_created: str
    level: float
    model: str  # path inside the slot
    files: tuple[tuple[str, str, int], ...]  # (path, sha256, bytes); files[0] is the model
    manifest: UpdateManifest | None  # None for the provisioned slot

    @property
    def model_sha256(self) -> str:
        return self.files[0][1]

    @property
    def running(self) -> Running:
        return Running(self.sequence, self.deployment_id, self.deployment_created,
                       self.model_sha256)

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "deployment_id": self.deployment_id,
                "deployment_created": self.deployment_created, "level": self.level,
                "model": self.model,
                "files": [{"path": p, "sha256": s, "bytes": n} for p, s, n in self.files]}


@dataclass(frozen=True)
class Staged:
    """An update written to the inactive slot, verified and self-tested, not yet served."""

    slot: str
    manifest: UpdateManifest
    self_test: str
    info: SlotInfo
    model_path: Path  # where the staged model lies (what to load before `commit()`)


def slot_files(deploy_dir: str | os.PathLike[str], artifact: str,
               firmware: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """(name in a slot, file in the deployment) of one device: its model under the artifact's
    own name first, then its firmware bundle files under firmware/. The same names make up an
    update's payload, so a provisioned slot and an updated one look alike."""
    root = Path(deploy_dir)
    out = [(PurePosixPath(artifact).name, root / artifact)]
    out += [(f"firmware/{PurePosixPath(f).name}", root / f) for f in firmware]
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(target: Path, data: bytes) -> None:
    """`data` at `target`, all or nothing, on disk when this returns."""
    tmp = target.with_name(f"{TMP_PREFIX}{target.name}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_IO):
            h.update(block)
    return h.hexdigest()


class UpdateSlots:
    """The A/B slots of one device in `state_dir` (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike[str], trust: Trust, *,
                 clock: Callable[[], float] = time.time,
                 self_test: Callable[[Path, UpdateManifest], str] | None = None,
                 checkpoint: Callable[[str], None] | None = None) -> None:
        self.root = Path(state_dir)
        self.trust = trust
        self.clock = clock
        self._self_test = self_test
        self._checkpoint = checkpoint or (lambda point: None)
        self._current: SlotInfo | None = None
        self._staged: Staged | None = None
        # The highest sequence this device ever served, kept in the pointer file: a device
        # provisioned again with a newer image still refuses the old updates it had passed.
        self._floor = 0

    # ------------------------------------------------------------------ start

    def provision(self, files: list[tuple[str, Path]], *, deployment_id: str,
                  deployment_created: str, level: float) -> SlotInfo:
        """Serve a verified deployment's files (model first) as sequence 0: into slot a on the
        first start, into the inactive slot when provisioned again (then swapped in as an
        update is, the replay floor kept)."""
        if not files:
            raise UpdateError("provision: no files (the model comes first)")
        self.root.mkdir(parents=True, exist_ok=True)
        if self._current is None and (self.root / POINTER).exists():
            self.recover()  # provisioned before: the new files go to the inactive slot
        target = "a" if self._current is None else self._inactive()
        build = self._fresh_build_dir()
        entries = []
        for rel, src in files:
            dst = build / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            with open(dst, "rb+") as fh:
                os.fsync(fh.fileno())
            entries.append((rel, _sha256(dst), dst.stat().st_size))
        info = SlotInfo(target, 0, deployment_id, deployment_created, float(level),
                        files[0][0], tuple(entries), None)
        self._finish_slot(build, target, info, None)
        self._point(target)
        self._current = info
        return info

    def open(self, deploy_dir: str | os.PathLike[str], manifest: Any,
             device: str) -> SlotInfo:
        """At agent start: what to serve. The state's model (recovered from a crash), unless
        `deploy_dir` holds a newer deployment (created later: the device was given a new
        image), which is then provisioned; a state never provisioned is provisioned."""
        from slimedge.runtime.update import parse_utc

        if (self.root / POINTER).exists() or any((self.root / s).is_dir() for s in SLOTS):
            current = self.recover()
            if parse_utc(manifest.created) <= parse_utc(current.deployment_created):
                return current
        return self.provision_deployment(deploy_dir, manifest, device)

    def provision_deployment(self, deploy_dir: str | os.PathLike[str], manifest: Any,
                             device: str) -> SlotInfo:
        """`provision` from a deployment folder the caller has verified (`manifest`: its
        DeploymentManifest)."""
        entry = manifest.device(device)
        files = slot_files(deploy_dir, entry.artifact, [f.path for f in entry.firmware])
        return self.provision(files, deployment_id=manifest.deployment_id,
                              deployment_created=manifest.created, level=entry.level)

    def recover(self) -> SlotInfo:
        """Clean what a crash left half done and return the slot to serve (its files checked
        against their sha256). UpdateError when no valid model exists (not provisioned)."""
        if not self.root.is_dir():
            raise UpdateError(f"{self.root}: no update state (provision the device first)")
        for p in self.root.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        staging = self.root / STAGING
        if staging.is_dir():
            for p in staging.rglob(f"{TMP_PREFIX}*"):
                p.unlink()
        self._staged = None
        pointed, self._floor = self._read_pointer()
        valid = {s: self._load_slot(s) for s in SLOTS}
        if pointed is not None and valid.get(pointed) is not None:
            current = valid[pointed]
        else:
            # The pointer is missing or names a broken slot (only a damaged disk does that):
            # serve the valid slot with the highest sequence and point at it again.
            candidates = [v for v in valid.values() if v is not None]
            if not candidates:
                raise UpdateError(f"{self.root}: no slot holds a valid model "
                                  f"(pointer {pointed!r}); provision the device again")
            current = max(candidates, key=lambda v: v.sequence)
            self._point(current.slot, current.sequence)
        for s in SLOTS:  # a slot left half-built by a crash is removed, a complete one kept
            if s != current.slot and valid[s] is None and (self.root / s).exists():
                shutil.rmtree(self.root / s)
        self._current = current
        self._drop_staging(at_most=max(current.sequence, self._floor))
        return current

    def current(self) -> tuple[Path, SlotInfo]:
        """(model path, slot info) of the model to serve."""
        info = self._current if self._current is not None else self.recover()
        return self.root / info.slot / info.model, info

    # ------------------------------------------------------------------ download

    def offer(self, manifest_bytes: bytes, signature: bytes) -> UpdateManifest | None:
        """Check a signed offer against this device before any payload is kept; store it in
        staging. None when it is exactly the update already served (nothing to do)."""
        running = self.running()
        if is_running(manifest_bytes, signature, self.trust, running):
            return None
        m = check_offer(manifest_bytes, signature, self.trust, running, self.clock())
        folder = self._staging(m.sequence)
        offer = folder / OFFER_FILE
        blob = len(manifest_bytes).to_bytes(4, "little") + manifest_bytes + signature
        if not offer.exists() or offer.read_bytes() != blob:
            _write_durable(offer, blob)
        for off, n in self._chunk_ranges(m.sequence):  # kept before the offer, but too long
            if off + n > m.bytes:
                (folder / "chunks" / f"{off:012d}-{n:09d}").unlink()
        self._drop_staging(below=m.sequence)
        return m

    def offered(self, sequence: int) -> tuple[UpdateManifest, bytes, bytes] | None:
        """(manifest, manifest bytes, signature) of a stored offer, None without one."""
        path = self.root / STAGING / str(sequence) / OFFER_FILE
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        n = int.from_bytes(blob[:4], "little")
        data, sig = blob[4:4 + n], blob[4 + n:]
        return UpdateManifest.from_bytes(data, source=str(path)), data, sig

    def receive_chunk(self, sequence: int, offset: int, data: bytes, *, total: int,
                      payload_id: bytes = b"") -> bool:
        """Keep the bytes [offset, offset + len(data)) of update `sequence`'s payload. Chunks
        may come before the offer and in any order. False when the chunk is ignored: for an
        update not above the served one, or not matching the stored offer (size, payload id)."""
        if sequence <= self.running().sequence or not data:
            return False
        if total > MAX_PAYLOAD_BYTES or offset < 0 or offset + len(data) > total:
            return False
        stored = self.offered(sequence)
        if stored is not None:
            m = stored[0]
            if total != m.bytes or (payload_id and payload_id != bytes.fromhex(m.sha256)[:8]):
                return False
        if stored is None and not self._limit_unoffered(sequence):
            return False
        chunks = self._staging(sequence) / "chunks"
        chunks.mkdir(exist_ok=True)
        name = chunks / f"{offset:012d}-{len(data):09d}"
        if not name.exists():
            _write_durable(name, data)
        self._checkpoint("download")
        return True

    def missing(self, sequence: int) -> list[list[int]]:
        """The byte ranges [offset, length] of update `sequence` not received yet (after its
        offer; without the offer the size is unknown and [[0, 0]] is returned)."""
        stored = self.offered(sequence)
        if stored is None:
            return [[0, 0]]
        gaps, pos = [], 0
        for off, n in self._chunk_ranges(sequence):
            if off > pos:
                gaps.append([pos, off - pos])
            pos = max(pos, off + n)
        if pos < stored[0].bytes:
            gaps.append([pos, stored[0].bytes - pos])
        return gaps

    # ------------------------------------------------------------------ stage, verify, swap

    def stage_and_verify(self, sequence: int) -> Staged:
        """Assemble update `sequence` into the inactive slot, check its size and sha256 (the
        payload's and every file's), self-test it; UpdateRefusedError otherwise, the served slot
        untouched either way. The offer is checked again (time has passed: expiry)."""
        stored = self.offered(sequence)
        if stored is None:
            raise UpdateRefusedError(TRUNCATED, f"update {sequence}: no offer received (only "
                                     f"chunks): the signed manifest is missing")
        _, data, sig = stored
        m = check_offer(data, sig, self.trust, self.running(), self.clock())
        gaps = self.missing(sequence)
        if gaps:
            got = m.bytes - sum(n for _, n in gaps)
            raise UpdateRefusedError(TRUNCATED, f"update {sequence}: received {got} of {m.bytes} "
                                     f"bytes; missing [offset, length] ranges {gaps[:8]}")
        self._checkpoint("staged")
        target = self._inactive()
        build = self._fresh_build_dir()
        try:
            entries = self._assemble(sequence, m, build)
            summary = "not self-tested (no self-test configured)"
            if self._self_test is not None:
                summary = self._self_test(build / m.model.path, m)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        slot = SlotInfo(target, m.sequence, m.deployment_id, m.deployment_created, m.level,
                        m.model.path, entries, m)
        self._finish_slot(build, target, slot, (data, sig))
        self._staged = Staged(target, m, summary, slot,
                              self.root / target / m.model.path)
        self._checkpoint("verified")
        return self._staged

    @property
    def staged(self) -> Staged | None:
        return self._staged

    def commit(self) -> SlotInfo:
        """Serve the staged update: one atomic replace of the pointer. The previous slot stays
        on disk. Call it between two frames."""
        if self._staged is None:
            raise UpdateError("commit: nothing staged (stage_and_verify first)")
        staged, self._staged = self._staged, None
        info = self._load_slot(staged.slot)
        if info is None or info.sequence != staged.manifest.sequence:
            raise UpdateError(f"commit: slot {staged.slot} no longer holds update "
                              f"{staged.manifest.sequence}")
        self._point(staged.slot, info.sequence, checkpoints=True)
        self._current = info
        self._drop_staging(at_most=self._floor)
        return info

    def drop(self, sequence: int) -> None:
        """Forget what was downloaded of update `sequence` (after it was refused)."""
        shutil.rmtree(self.root / STAGING / str(sequence), ignore_errors=True)

    def discard_staged(self) -> None:
        """Forget a staged update (the slot stays as the inactive one until overwritten)."""
        self._staged = None

    # ------------------------------------------------------------------ internals

    def running(self) -> Running:
        """What updates are checked against: the served slot, with the sequence raised to the
        highest one ever served (the replay floor)."""
        _, info = self.current()
        r = info.running
        return Running(max(r.sequence, self._floor), r.deployment_id, r.deployment_created,
                       r.model_sha256)

    def _inactive(self) -> str:
        _, info = self.current()
        return "b" if info.slot == "a" else "a"

    def _point(self, slot: str, sequence: int = 0, *, checkpoints: bool = False) -> None:
        """Replace the pointer file in one `os.replace` (fsynced before, directory after)."""
        self._floor = max(self._floor, sequence)
        pointer = self.root / POINTER
        tmp = pointer.with_name(f"{TMP_PREFIX}{POINTER}")
        with open(tmp, "wb") as fh:
            fh.write(json.dumps({"slot": slot, "floor": self._floor}).encode())
            fh.flush()
            os.fsync(fh.fileno())
        if checkpoints:
            self._checkpoint("swap")
        os.replace(tmp, pointer)
        if checkpoints:
            self._checkpoint("swapped")
        _fsync_dir(self.root)

    def _read_pointer(self) -> tuple[str | None, int]:
        """(slot, replay floor) of the pointer file; (None, 0) when it is missing or bad."""
        try:
            raw = json.loads((self.root / POINTER).read_bytes())
            slot, floor = raw.get("slot"), int(raw.get("floor", 0))
        except (OSError, ValueError, AttributeError, TypeError):
            return None, 0
        return (slot if slot in SLOTS else None), max(floor, 0)

    def _load_slot(self, slot: str) -> SlotInfo | None:
        """The slot's info when every file it lists is present with its sha256; else None."""
        folder = self.root / slot
        try:
            raw = json.loads((folder / SLOT_INFO).read_bytes())
            files = tuple((str(f["path"]), str(f["sha256"]), int(f["bytes"]))
                          for f in raw["files"])
            manifest = None
            if (folder / MANIFEST_NAME).exists():
                manifest = UpdateManifest.from_bytes((folder / MANIFEST_NAME).read_bytes())
            info = SlotInfo(slot, int(raw["sequence"]), str(raw["deployment_id"]),
                            str(raw["deployment_created"]), float(raw["level"]),
                            str(raw["model"]), files, manifest)
        except (OSError, ValueError, KeyError, TypeError, UpdateError):
            return None
        for rel, sha, n in files:
            path = folder / rel
            if not path.is_file() or path.stat().st_size != n or _sha256(path) != sha:
                return None
        return info

    def _fresh_build_dir(self) -> Path:
        build = self.root / f"{TMP_PREFIX}slot"
        if build.exists():
            shutil.rmtree(build)
        build.mkdir(parents=True)
        return build

    def _finish_slot(self, build: Path, slot: str, info: SlotInfo,
                     signed: tuple[bytes, bytes] | None) -> None:
        """Write the slot's own records into `build`, then put it in place of `slot`."""
        if signed is not None:
            _write_durable(build / MANIFEST_NAME, signed[0])
            _write_durable(build / SIGNATURE_NAME, signed[1])
        _write_durable(build / SLOT_INFO, json.dumps(info.to_dict(), indent=2).encode())
        for d in sorted({p.parent for p in build.rglob("*")} | {build}, reverse=True):
            _fsync_dir(d)
        target = self.root / slot
        if target.exists():  # never the served slot: callers pass the inactive one
            shutil.rmtree(target)
        os.replace(build, target)
        _fsync_dir(self.root)

    def _staging(self, sequence: int) -> Path:
        folder = self.root / STAGING / str(sequence)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _drop_staging(self, *, below: int | None = None, at_most: int | None = None) -> None:
        staging = self.root / STAGING
        if not staging.is_dir():
            return
        limit = below - 1 if below is not None else at_most
        for p in staging.iterdir():
            if not p.name.isdigit() or limit is None or int(p.name) <= limit:
                shutil.rmtree(p, ignore_errors=True)

    def _limit_unoffered(self, sequence: int) -> bool:
        """Chunks that came without an offer are unauthenticated: keep those of at most
        MAX_UNOFFERED sequences (the highest), so junk cannot fill the disk. A legitimate
        update whose early chunks were dropped asks for them again after its offer."""
        staging = self.root / STAGING
        if not staging.is_dir():
            return True
        unoffered = {int(p.name) for p in staging.iterdir()
                     if p.name.isdigit() and not (p / OFFER_FILE).exists()} | {sequence}
        dropped = sorted(unoffered)[:-MAX_UNOFFERED]
        for seq in dropped:
            shutil.rmtree(staging / str(seq), ignore_errors=True)
        return sequence not in dropped

    def _chunk_ranges(self, sequence: int) -> list[tuple[int, int]]:
        folder = self.root / STAGING / str(sequence) / "chunks"
        if not folder.is_dir():
            return []
        out = []
        for p in folder.iterdir():
            off, _, n = p.name.partition("-")
            if off.isdigit() and n.isdigit():
                out.append((int(off), int(n)))
        return sorted(out)

    def _assemble(self, sequence: int, m: UpdateManifest,
                  build: Path) -> tuple[tuple[str, str, int], ...]:
        """Stream the chunks in offset order into the payload's files, hashing as it goes."""
        folder = self.root / STAGING / str(sequence) / "chunks"
        whole = hashlib.sha256()
        outs = []
        for f in m.files:
            path = build / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            outs.append((f, open(path, "wb"), hashlib.sha256()))
        pos = 0
        try:
            for off, n in self._chunk_ranges(sequence):
                if off + n <= pos:
                    continue  # a duplicate range (resent chunk of another size)
                data = (folder / f"{off:012d}-{n:09d}").read_bytes()
                if len(data) != n:
                    raise UpdateRefusedError(TRUNCATED, f"update {sequence}: chunk at {off} has "
                                             f"{len(data)} bytes, expected {n}")
                data = data[pos - off:]
                whole.update(data)
                start = pos
                for f, fh, h in outs:
                    lo, hi = max(start, f.offset), min(start + len(data), f.offset + f.bytes)
                    if lo < hi:
                        piece = data[lo - start:hi - start]
                        fh.write(piece)
                        h.update(piece)
                pos += len(data)
            for _, fh, _ in outs:
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            for _, fh, _ in outs:
                fh.close()
        if pos != m.bytes:
            raise UpdateRefusedError(TRUNCATED, f"update {sequence}: assembled {pos} bytes, the "
                                     f"manifest says {m.bytes}")
        if whole.hexdigest() != m.sha256:
            raise UpdateRefusedError(TAMPERED, f"update {sequence}: payload sha256 "
                                     f"{whole.hexdigest()} differs from the signed {m.sha256}: "
                                     f"changed after signing or in transit")
        entries = []
        for f, _, h in outs:
            if h.hexdigest() != f.sha256:
                raise UpdateRefusedError(TAMPERED, f"update {sequence}: {f.path} sha256 "
                                         f"{h.hexdigest()} differs from the signed {f.sha256}")
            entries.append((f.path, f.sha256, f.bytes))
        return tuple(entries)
