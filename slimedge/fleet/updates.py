"""Host side of an update: from a signed deployment folder, one signed update per device.

The deployment is verified first (signature with the host key, every file's sha256), so an
update is only ever built from files that the deployment's signature covers. Each device's
payload is its model artifact; for a TFLite Micro board, its firmware bundle's headers follow
the model in the same payload (the bundle's `_model.cc`, the same model bytes as C source, is
left out: it made an MCU's update about 6x the model and the device never reads it). The
manifest states what the device's self-test will check (tensor shapes, quantization, arena
budget), read from the model here with the same runner the device uses.

The fleet sequence number only grows: `SequenceCounter` keeps the last one issued in a small
file beside the signing key, so every update signed with one key gets a new number.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError
from slimedge.runtime.slots import slot_files
from slimedge.runtime.update import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    PayloadFile,
    TensorSpec,
    UpdateManifest,
    utc,
)
from slimedge.runtime.update_messages import Chunk, Offer, split_payload

SEQUENCE_FILE = "update_sequence.json"
MODEL_ARRAY_SUFFIX = "_model.cc"  # slimedge.export.firmware: the model as a C byte array
PAYLOAD_NAME = "payload.bin"
DEFAULT_EXPIRY_S = 7 * 24 * 3600


class UpdateBuildError(SlimEdgeError):
    """An update that cannot be built from a deployment (names the folder, device or file)."""


@dataclass(frozen=True)
class DeviceUpdate:
    """One device's signed update, ready to publish or write."""

    manifest: UpdateManifest
    manifest_bytes: bytes
    signature: bytes
    payload: bytes

    @property
    def device(self) -> str:
        return self.manifest.device

    @property
    def payload_id(self) -> bytes:
        return bytes.fromhex(self.manifest.sha256)[:8]

    def offer(self, chunk_bytes: int) -> Offer:
        return Offer(self.manifest.sequence, chunk_bytes, self.manifest_bytes, self.signature)

    def chunks(self, chunk_bytes: int) -> list[Chunk]:
        return split_payload(self.manifest.sequence, self.payload_id, self.payload,
                             chunk_bytes)

    def write(self, folder: str | os.PathLike[str]) -> Path:
        """update.json, update.sig and payload.bin in `folder` (for inspection or transfer)."""
        from slimedge.artifacts import atomic_file

        out = Path(folder)
        for name, data in ((PAYLOAD_NAME, self.payload), (MANIFEST_NAME, self.manifest_bytes),
                           (SIGNATURE_NAME, self.signature)):
            with atomic_file(out / name, "wb") as fh:
                fh.write(data)
        return out


class SequenceCounter:
    """The last fleet sequence issued, in a JSON file; `next()` returns a number above it and
    above every `at_least` given (e.g. the sequences devices report running)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def last(self) -> int:
        if not self.path.exists():
            return 0
        try:
            value = json.loads(self.path.read_text())["last"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UpdateBuildError(f"{self.path}: unreadable sequence file ({exc}); it holds "
                                   f'{{"last": N}}, the last update sequence issued') from None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UpdateBuildError(f"{self.path}: last: expected an integer >= 0, got {value!r}")
        return value

    def next(self, at_least: int = 0) -> int:
        from slimedge.artifacts import write_json

        seq = max(self.last(), at_least) + 1
        write_json(self.path, {"last": seq})
        return seq


def _tensor_specs(model: Path, device: str) -> tuple[TensorSpec, TensorSpec]:
    """Input and output of a branch model, as the device's runner reads them."""
    from slimedge.runtime.branch import BranchError, BranchRunner

    try:
        r = BranchRunner(model)
    except BranchError as exc:
        raise UpdateBuildError(f"device {device}: {exc}") from None
    inp = TensorSpec((1, *r.image_shape), str(r.input_dtype))
    if r.output_quantization is None:
        out = TensorSpec((1, r.output_dim), "float32")
    else:
        scale, zp = r.output_quantization
        out = TensorSpec((1, r.output_dim), "int8", float(scale), int(zp))
    return inp, out


def build_update(deploy_dir: str | os.PathLike[str], device: str, private_key: Any, *,
                 sequence: int, manifest: Any = None, now: float | None = None,
                 expires_in_s: float = DEFAULT_EXPIRY_S, rollback: bool = False,
                 commit_at_frame: int | None = None) -> DeviceUpdate:
    """Device `device`'s update from a deployment folder, signed with `private_key` (an
    Ed25519 private key object). `manifest`: the deployment's parsed manifest when the
    caller verified it already (`build_updates` does); read and verified here otherwise."""
    from slimedge.export import signing

    root = Path(deploy_dir)
    if manifest is None:
        manifest = verify_for_push(root, private_key)
    entry = manifest.device(device)
    now = time.time() if now is None else now
    if expires_in_s <= 0:
        raise UpdateBuildError(f"expiry must be in the future, got {expires_in_s} s")
    if sequence < 1:
        raise UpdateBuildError(f"sequence must be >= 1, got {sequence}")
    model = root / entry.artifact
    # The bundle's `<name>_model.cc` is the model's bytes again, as C text (~6x the model):
    # a firmware build input, not something the device reads; the payload carries the model
    # once, with the bundle's headers (arena size, op list the firmware was built against).
    sources = slot_files(root, entry.artifact, [f.path for f in entry.firmware
                                                if not f.path.endswith(MODEL_ARRAY_SUFFIX)])
    files, parts, offset = [], [], 0
    for rel, path in sources:
        data = path.read_bytes()
        files.append(PayloadFile(rel, offset, len(data), hashlib.sha256(data).hexdigest()))
        parts.append(data)
        offset += len(data)
    payload = b"".join(parts)
    if files[0].sha256 != entry.sha256:
        raise UpdateBuildError(f"{model}: sha256 {files[0].sha256} differs from the signed "
                               f"deployment's {entry.sha256} for device {device}")
    inp, out = _tensor_specs(model, device)
    m = UpdateManifest(
        device=entry.device, board=entry.board, runtime=entry.runtime,
        deployment_id=manifest.deployment_id, deployment_created=manifest.created,
        sequence=int(sequence), rollback=bool(rollback), commit_at_frame=commit_at_frame,
        created=utc(now), expires=utc(now + expires_in_s),
        signing_key=signing.fingerprint(private_key.public_key()),
        level=float(entry.level), level_index=int(entry.level_index),
        views=tuple(int(v) for v in entry.views), model_format=entry.format,
        sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload), files=tuple(files),
        arena_budget_bytes=entry.memory_budget_bytes if entry.is_mcu else None,
        tflm_arena_bytes=entry.tflm_arena_bytes, input=inp, output=out,
    )
    data = m.to_bytes()
    m = UpdateManifest.from_bytes(data, source=f"update for {device}")  # what devices accept
    return DeviceUpdate(m, data, signing.sign(private_key, data), payload)


def verify_for_push(deploy_dir: Path, private_key: Any) -> Any:
    """The deployment's manifest, after checking its signature with the public half of the
    key that will sign the updates and every file's hash (models are not loaded here)."""
    import tempfile

    from slimedge.export import signing
    from slimedge.export.verify import verify_deployment

    # verify_deployment takes a key file; the key we sign with is the one that must verify.
    with tempfile.TemporaryDirectory(prefix="slimedge-push-") as tmp:
        key_file = Path(tmp) / "public_key.pem"
        key_file.write_bytes(signing.public_pem(private_key.public_key()))
        report = verify_deployment(deploy_dir, key_file, load_artifacts=False)
    if not report.ok:
        raise UpdateBuildError(f"{deploy_dir}: the deployment does not verify with the push "
                               f"key: " + "; ".join(report.failures))
    return report.manifest


def build_updates(deploy_dir: str | os.PathLike[str], private_key_path: str | os.PathLike[str],
                  *, sequence: int, devices: list[str] | None = None,
                  now: float | None = None, expires_in_s: float = DEFAULT_EXPIRY_S,
                  rollback: bool = False,
                  commit_at_frame: int | None = None) -> list[DeviceUpdate]:
    """One update per device of the deployment (or of `devices`), all with `sequence`."""
    from slimedge.export import ExportError, signing

    root = Path(deploy_dir)
    try:
        key = signing.load_private_key(private_key_path)
    except ExportError as exc:
        raise UpdateBuildError(str(exc)) from None
    manifest = verify_for_push(root, key)
    names = [d.device for d in manifest.devices] if devices is None else list(devices)
    unknown = [n for n in names if n not in {d.device for d in manifest.devices}]
    if unknown:
        raise UpdateBuildError(f"{root}: device(s) {', '.join(unknown)} not in deployment "
                               f"{manifest.deployment_id} (devices: "
                               f"{', '.join(d.device for d in manifest.devices)})")
    return [build_update(root, n, key, sequence=sequence, manifest=manifest, now=now,
                         expires_in_s=expires_in_s, rollback=rollback,
                         commit_at_frame=commit_at_frame) for n in names]


def resign(update: DeviceUpdate, private_key: Any, **changes: Any) -> DeviceUpdate:
    """The same payload under a manifest with `changes`, signed with `private_key`: what a
    host re-issuing an update (new sequence, new expiry) does."""
    from slimedge.export import signing

    m = replace(update.manifest, **changes)
    data = m.to_bytes()
    return DeviceUpdate(m, data, signing.sign(private_key, data), update.payload)


@dataclass(frozen=True)
class AggregatorUpdate:
    """The aggregator's part of a fleet-wide switch: its signed order and payload (the new
    deployment's signed manifest and aggregator files), ready to publish."""

    order: Any  # slimedge.runtime.aggregator_update.AggregatorOrder
    order_bytes: bytes
    signature: bytes
    payload: bytes

    @property
    def sequence(self) -> int:
        return int(self.order.sequence)

    def offer(self, chunk_bytes: int) -> Offer:
        return Offer(self.sequence, chunk_bytes, self.order_bytes, self.signature)

    def chunks(self, chunk_bytes: int) -> list[Chunk]:
        return split_payload(self.sequence, bytes.fromhex(self.order.sha256)[:8], self.payload,
                             chunk_bytes)


def build_aggregator_update(deploy_dir: str | os.PathLike[str],
                            private_key_path: str | os.PathLike[str], *, sequence: int,
                            commit_at_frame: int, now: float | None = None,
                            expires_in_s: float = DEFAULT_EXPIRY_S) -> AggregatorUpdate:
    """The aggregator's signed order to serve deployment `deploy_dir` from frame
    `commit_at_frame` on. The deployment is verified with the key first (as for devices)."""
    from slimedge.export import ExportError, signing
    from slimedge.export.manifest import MANIFEST_NAME
    from slimedge.export.manifest import SIGNATURE_NAME as DEPLOY_SIGNATURE
    from slimedge.runtime.aggregator_update import AggregatorOrder
    from slimedge.runtime.topics import fleet_name

    root = Path(deploy_dir)
    try:
        key = signing.load_private_key(private_key_path)
    except ExportError as exc:
        raise UpdateBuildError(str(exc)) from None
    if sequence < 1:
        raise UpdateBuildError(f"sequence must be >= 1, got {sequence}")
    if commit_at_frame < 0:
        raise UpdateBuildError(f"commit_at_frame must be a frame id >= 0, got {commit_at_frame}")
    if expires_in_s <= 0:
        raise UpdateBuildError(f"expiry must be in the future, got {expires_in_s} s")
    manifest = verify_for_push(root, key)
    paths = [MANIFEST_NAME, DEPLOY_SIGNATURE] + [f.path for _, f in manifest.aggregator.files()]
    files, parts, offset = [], [], 0
    for rel in paths:
        data = (root / rel).read_bytes()
        files.append(PayloadFile(rel, offset, len(data), hashlib.sha256(data).hexdigest()))
        parts.append(data)
        offset += len(data)
    payload = b"".join(parts)
    now = time.time() if now is None else now
    order = AggregatorOrder(
        fleet=fleet_name(manifest.deployment_id, manifest.created),
        deployment_id=manifest.deployment_id, deployment_created=manifest.created,
        sequence=int(sequence), commit_at_frame=int(commit_at_frame), created=utc(now),
        expires=utc(now + expires_in_s), signing_key=signing.fingerprint(key.public_key()),
        sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload), files=tuple(files))
    data = order.to_bytes()
    order = AggregatorOrder.from_bytes(data, source="aggregator order")  # what it accepts
    return AggregatorUpdate(order, data, signing.sign(key, data), payload)
