"""Verify a deployment directory: what a device agent runs before it loads its model.

No TensorFlow: `cryptography` for the signature, `hashlib` for the files, LiteRT to load each
`.tflite`, and (host-side tooling, when installed) the TFLite Micro interpreter for MCUs.

Checks, in order; a failed signature stops there, since nothing in an unsigned manifest can be
trusted:

1. the Ed25519 signature in `manifest.sig` over the exact bytes of `manifest.json`, with the
   public key given by the caller, else `public_key.pem` shipped in the deployment. A shipped
   key proves integrity only (whoever can rewrite the deployment can replace the key too);
   origin is proven only by a key the device got out of band. The report says which was used.
2. the manifest's format (every field validated, paths relative and inside the directory);
3. per file: no path escape (`..`, absolute paths, symbolic links), the byte count and SHA-256;
4. per model: loads and runs once in LiteRT on zeros; for MCU devices, runs in TFLite Micro with
   the board's arena budget (`memory_budget_bytes`) as the arena limit (skipped, not failed,
   where `tflite_micro` is not installed).

`verify_deployment(..., device="cam00")` checks only that device's entry (what an agent does).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimedge.artifacts import sha256_file
from slimedge.export import ExportError, VerifyError
from slimedge.export.manifest import (
    MANIFEST_NAME,
    PUBLIC_KEY_NAME,
    RESERVED_NAMES,
    SIGNATURE_NAME,
    DeploymentManifest,
    DeviceEntry,
    FileEntry,
    resolve_inside,
)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

_ORIGIN = ("origin and integrity: the key came from the verifier, not from the deployment")
_INTEGRITY_ONLY = (
    f"integrity only: {PUBLIC_KEY_NAME} ships inside the deployment, so whoever can rewrite "
    "the deployment can replace it too; pass the provisioned public key to prove origin"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | failed | skipped
    message: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "message": self.message}


@dataclass
class EntryReport:
    """The checks of one device (or of the aggregator's files)."""

    name: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAILED for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


@dataclass
class VerifyReport:
    deploy_dir: str
    signature: Check = field(default_factory=lambda: Check("signature", SKIPPED))
    key: dict[str, Any] = field(default_factory=dict)
    manifest: DeploymentManifest | None = None
    devices: list[EntryReport] = field(default_factory=list)
    aggregator: EntryReport | None = None
    failures: list[str] = field(default_factory=list)
    unlisted_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "ok": self.ok,
            "deployment": self.deploy_dir,
            "deployment_id": m.deployment_id if m else None,
            "signature": self.signature.to_dict(),
            "key": dict(self.key),
            "devices": {d.name: d.to_dict() for d in self.devices},
            "aggregator": self.aggregator.to_dict() if self.aggregator else None,
            "unlisted_files": list(self.unlisted_files),
            "failures": list(self.failures),
        }

    def raise_if_failed(self) -> None:
        if self.failures:
            n = len(self.failures)
            raise VerifyError(f"{self.deploy_dir}: verification failed ({n} problem"
                              f"{'s' if n > 1 else ''}): " + "; ".join(self.failures))


def verify_deployment(
    deploy_dir: str | os.PathLike[str],
    public_key: str | os.PathLike[str] | None = None,
    *,
    load_artifacts: bool = True,
    device: str | None = None,
) -> VerifyReport:
    """Verify a deployment directory; the report's `failures` name every problem found (file,
    device, expected vs actual). Never raises for a bad deployment: call `raise_if_failed`."""
    from slimedge.export import signing

    root = Path(deploy_dir)
    report = VerifyReport(str(root))
    manifest_path, sig_path = root / MANIFEST_NAME, root / SIGNATURE_NAME
    if not root.is_dir():
        report.fail(f"{root}: no such deployment directory")
        return report
    for path in (manifest_path, sig_path):
        if not path.is_file():
            report.fail(f"{path}: missing")
    if report.failures:
        return report

    # 1. Which key, and what it proves.
    if public_key is not None:
        key_path, source, trust = Path(public_key), "argument", _ORIGIN
    else:
        key_path, source, trust = root / PUBLIC_KEY_NAME, "deployment", _INTEGRITY_ONLY
        if not key_path.is_file():
            report.fail(f"{root}: no public key given and no {PUBLIC_KEY_NAME} in the "
                        "deployment: pass the provisioned key (--public-key)")
            return report
    try:
        key = signing.load_public_key(key_path)
    except ExportError as exc:
        report.fail(f"public key: {exc}")
        return report
    fp = signing.fingerprint(key)
    report.key = {"source": source, "path": str(key_path), "fingerprint": fp, "proves": trust}

    # 2. The signature over the exact manifest bytes.
    data, signature = manifest_path.read_bytes(), sig_path.read_bytes()
    if not signing.verify_signature(key, signature, data):
        named = _named_signer(data)
        hint = (f"; the manifest names signing key {named}" if named and named != fp else "")
        size = ("" if len(signature) == signing.SIGNATURE_BYTES else
                f" ({SIGNATURE_NAME} has {len(signature)} bytes, an Ed25519 signature has "
                f"{signing.SIGNATURE_BYTES})")
        msg = (f"{manifest_path}: signature in {SIGNATURE_NAME} does not verify with public key "
               f"{fp} ({source}: {key_path}){size}: {MANIFEST_NAME} or {SIGNATURE_NAME} was "
               f"changed after signing, or they were signed with another key{hint}")
        report.signature = Check("signature", FAILED, msg)
        report.fail(msg)
        return report
    report.signature = Check("signature", OK, f"Ed25519 signature valid with {fp} ({trust})")

    # 3. The manifest itself.
    try:
        manifest = DeploymentManifest.from_json(data, source=str(manifest_path))
    except ExportError as exc:
        report.fail(str(exc))
        return report
    report.manifest = manifest
    if device is not None:
        try:
            entries = [manifest.device(device)]
        except ExportError as exc:
            report.fail(str(exc))
            return report
    else:
        entries = list(manifest.devices)

    # 4. Files and models.
    for entry in entries:
        report.devices.append(_check_device(root, entry, load_artifacts, report))
    if device is None:
        agg = EntryReport("aggregator")
        for where, f in manifest.aggregator.files():
            agg.checks.append(_check_file(root, f, where, "aggregator", report))
        report.aggregator = agg
        report.unlisted_files = _unlisted(root, manifest)
    return report


def _named_signer(data: bytes) -> str | None:
    """The signing key a (possibly altered) manifest names, for a clearer failure message."""
    try:
        value = json.loads(data).get("signing_key")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _check_file(root: Path, f: FileEntry, where: str, owner: str,
                report: VerifyReport) -> Check:
    label = f"{f.path} ({owner}, {where})"
    path, why = resolve_inside(root, f.path)
    if path is None:
        msg = f"{label}: {why}"
        report.fail(msg)
        return Check(where, FAILED, msg)
    size = path.stat().st_size
    digest = sha256_file(path)
    problems = []
    if size != f.bytes:
        problems.append(f"size: manifest says {f.bytes} bytes, file has {size}")
    if digest != f.sha256:
        problems.append(f"sha256: manifest says {f.sha256}, file has {digest}")
    if problems:
        msg = f"{label}: changed since signing: " + ", ".join(problems)
        report.fail(msg)
        return Check(where, FAILED, msg)
    return Check(where, OK, f"{f.path}: {size} bytes, sha256 {digest[:16]}...")


def _check_device(root: Path, entry: DeviceEntry, load: bool,
                  report: VerifyReport) -> EntryReport:
    out = EntryReport(entry.device)
    owner = f"device {entry.device}"
    for where, f in entry.files():
        out.checks.append(_check_file(root, f, where, owner, report))
    artifact_ok = out.checks[0].status == OK
    if not load:
        out.checks.append(Check("load", SKIPPED, "loading artifacts not requested"))
        return out
    if not artifact_ok:
        out.checks.append(Check("load", SKIPPED, "artifact failed its file checks"))
        return out
    path = root / entry.artifact
    if path.suffix != ".tflite":
        out.checks.append(Check("litert", SKIPPED, f"{entry.artifact}: not a .tflite file"))
        return out
    out.checks.append(_record(report, owner, _litert_check(path, entry)))
    if entry.is_mcu:
        out.checks.append(_record(report, owner, _tflm_check(path, entry)))
    return out


def _record(report: VerifyReport, owner: str, check: Check) -> Check:
    if check.status == FAILED:
        report.fail(f"{owner}: {check.message}")
    return check


def _litert_check(path: Path, entry: DeviceEntry) -> Check:
    import numpy as np

    from slimedge.export.tflite_ops import read_tflite
    from slimedge.profile.litert import LiteRTError, interpreter

    try:
        info = read_tflite(path)
    except ExportError as exc:
        return Check("litert", FAILED, str(exc))
    if any(op.custom_code == EDGETPU_CUSTOM_OP for ops in info.subgraph_ops for op in ops):
        return Check("litert", SKIPPED, f"{entry.artifact}: compiled for the Edge TPU; running "
                     "it needs the Edge TPU delegate (libedgetpu), not loaded here")
    try:
        it = interpreter(path)
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        it.invoke()
        outs = [tuple(int(n) for n in it.get_tensor(d["index"]).shape)
                for d in it.get_output_details()]
    except (LiteRTError, ValueError, RuntimeError) as exc:
        return Check("litert", FAILED, f"{entry.artifact}: LiteRT cannot run it: {exc}")
    return Check("litert", OK, f"{entry.artifact}: allocated and invoked once in LiteRT "
                 f"(outputs {outs})")


def _tflm_installed() -> bool:
    try:
        return importlib.util.find_spec("tflite_micro") is not None
    except ImportError:  # an import hook that refuses it, as on a device without it
        return False


def _tflm_check(path: Path, entry: DeviceEntry) -> Check:
    if not _tflm_installed():
        return Check("tflite-micro", SKIPPED, "tflite_micro is not installed (host-side "
                     "tooling): TFLite Micro arena check skipped")
    from slimedge.profile.tflm import TFLMError, probe_arena

    limit = int(entry.memory_budget_bytes or 0)
    try:
        probe = probe_arena(path, limit)
    except TFLMError as exc:
        return Check("tflite-micro", FAILED, str(exc))
    if not probe.ok:
        return Check("tflite-micro", FAILED,
                     f"{entry.artifact}: does not run in TFLite Micro within board "
                     f"{entry.board}'s arena budget of {limit} bytes: {probe.message}")
    return Check("tflite-micro", OK, f"{entry.artifact}: runs in TFLite Micro with a "
                 f"{limit}-byte arena limit (uses {probe.total_bytes} bytes; manifest says "
                 f"{entry.tflm_arena_bytes})")


def _unlisted(root: Path, manifest: DeploymentManifest) -> list[str]:
    """Files in the directory the manifest does not list (reported, not a failure: they are
    never loaded)."""
    listed = {f.path for _, f in manifest.files()} | set(RESERVED_NAMES)
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in listed:
                found.append(rel)
    return sorted(found)
