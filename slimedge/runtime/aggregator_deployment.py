"""What the aggregator reads from a deployment: who sends which view, what a valid feature
message from each device looks like, the pooling rule per live set, the head, the deadline.

The deployment is verified first (signature, manifest, every file's SHA-256; models are not
loaded here), with the provisioned public key when one is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimedge.errors import SlimEdgeError
from slimedge.runtime import topics
from slimedge.runtime.live_weights import LiveSetPooling, PoolingError

__all__ = ["AggregatorDeployment", "DeploymentError", "DeploymentSignatureError", "DeviceSpec",
           "load_aggregator_deployment", "provisioned_key", "verify_aggregator_part"]

AGGREGATOR_DIR = "aggregator"
INT8_FORMAT = "int8"  # the one artifact format whose features leave the device as int8


class DeploymentError(SlimEdgeError):
    """A deployment the aggregator cannot serve; names the file and field."""


class DeploymentSignatureError(DeploymentError):
    """A deployment manifest whose signature does not verify with the trusted key."""


@dataclass(frozen=True)
class DeviceSpec:
    """One device as the aggregator checks its messages."""

    device: str
    views: tuple[int, ...]  # the views whose features the aggregator pools from this device
    level: float
    model_hash: str  # sha256 hex of its artifact
    dtype: np.dtype  # int8 or float32 features
    predicted_latency_ms: float | None


@dataclass(frozen=True)
class AggregatorDeployment:
    root: Path
    manifest: Any  # slimedge.export.manifest.DeploymentManifest
    deployment_id: str
    fleet: str
    views: int
    feature_dim: int
    n_classes: int
    class_names: tuple[str, ...]
    devices: dict[str, DeviceSpec]
    view_device: tuple[str | None, ...]  # per view, the device whose features are pooled
    pooling: LiveSetPooling
    head_path: Path
    predicted_latency_ms: float  # the plan's system latency: slowest device, infer + send
    head: dict[str, Any]  # aggregator/head.json as read
    contingency: dict[str, Any] | None

    def model_hashes(self) -> dict[str, str]:
        return {d: s.model_hash for d, s in self.devices.items()}

    def max_message_bytes(self) -> int:
        """The largest feature message a device of this deployment can send (version 2, the
        longest ids the format allows, float32 features): anything larger is refused unread."""
        from slimedge.wire import feature_message_bytes

        return feature_message_bytes(self.feature_dim, "d" * 255, "float32",
                                     deployment_id="d" * 255, model_hash="0" * 64)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise DeploymentError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DeploymentError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise DeploymentError(f"{path}: expected a JSON object")
    return doc


def _head_field(head: dict[str, Any], name: str, path: Path) -> Any:
    if name not in head:
        raise DeploymentError(f"{path}: field '{name}' missing")
    return head[name]


def provisioned_key(deploy_dir: str | os.PathLike,
                    public_key: str | os.PathLike | None = None) -> Any:
    """The public key the aggregator trusts for as long as it runs: the provisioned one, else
    the start deployment's own public_key.pem (integrity only). Read once, at start, so a
    later deployment is verified with the same key whatever its folder ships."""
    from slimedge.export import ExportError, signing
    from slimedge.export.manifest import PUBLIC_KEY_NAME

    path = Path(public_key) if public_key is not None else Path(deploy_dir) / PUBLIC_KEY_NAME
    try:
        return signing.load_public_key(path)
    except ExportError as e:
        raise DeploymentError(f"public key: {e}") from None


def verify_aggregator_part(root: Path, key: Any) -> Any:
    """The manifest of a folder holding a deployment's aggregator part only (manifest.json,
    manifest.sig, the aggregator's files, as a fleet-wide switch delivers them): the signature
    with `key` (a public key object), the manifest, each aggregator file's size and SHA-256.
    DeploymentError names the file at fault."""
    from slimedge.artifacts import sha256_file
    from slimedge.export import ExportError, signing
    from slimedge.export.manifest import (
        MANIFEST_NAME,
        SIGNATURE_NAME,
        DeploymentManifest,
        resolve_inside,
    )

    data = _read_bytes(root / MANIFEST_NAME)
    if not signing.verify_signature(key, _read_bytes(root / SIGNATURE_NAME), data):
        raise DeploymentSignatureError(f"{root / MANIFEST_NAME}: signature in "
                                       f"{SIGNATURE_NAME} does not verify with the provisioned "
                                       f"key {signing.fingerprint(key)}")
    try:
        m = DeploymentManifest.from_json(data, source=str(root / MANIFEST_NAME))
    except ExportError as e:
        raise DeploymentError(str(e)) from None
    if m.signing_key != signing.fingerprint(key):  # the rule at start (device_setup) as well
        raise DeploymentSignatureError(f"{root / MANIFEST_NAME} names signing key "
                                       f"{m.signing_key}, the provisioned key is "
                                       f"{signing.fingerprint(key)}")
    for where, f in m.aggregator.files():
        path, why = resolve_inside(root, f.path)
        if path is None:
            raise DeploymentError(f"{f.path} ({where}): {why}")
        if path.stat().st_size != f.bytes or sha256_file(path) != f.sha256:
            raise DeploymentError(f"{path} ({where}): changed since signing (size or sha256 "
                                  "differs from the manifest)")
    return m


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DeploymentError(f"{path}: cannot read ({e.strerror})") from None


def load_aggregator_deployment(deploy_dir: str | os.PathLike,
                               public_key: str | os.PathLike | None = None, *,
                               trusted_key: Any = None) -> AggregatorDeployment:
    """The deployment at `deploy_dir`, verified first: the whole deployment with the key file
    `public_key` (what `aggregator run` does at start), or, with `trusted_key` (a key object),
    only its aggregator part (`verify_aggregator_part`: a deployment received for a switch)."""
    from slimedge.export.verify import verify_deployment

    root = Path(deploy_dir)
    if trusted_key is not None:
        m = verify_aggregator_part(root, trusted_key)
    else:
        report = verify_deployment(root, public_key, load_artifacts=False)
        if not report.ok:
            raise DeploymentError(f"{root}: deployment does not verify: "
                                  + "; ".join(report.failures[:5]))
        m = report.manifest
    head_path = root / AGGREGATOR_DIR / "head.json"
    head = _read_json(head_path)
    views = int(_head_field(head, "views", head_path))
    dim = int(_head_field(head, "feature_dim", head_path))
    n_classes = int(_head_field(head, "n_classes", head_path))
    view_device = list(_head_field(head, "view_device", head_path))
    if len(view_device) != views:
        raise DeploymentError(f"{head_path}: field 'view_device': {len(view_device)} entries "
                              f"for {views} views")
    contingency = None
    if head.get("contingency"):
        contingency = _read_json(root / head["contingency"])
    full_acc = (head.get("export_checks", {}).get("system_agreement", {})
                .get("device_accuracy"))
    try:
        pooling = LiveSetPooling(views, _head_field(head, "pooling", head_path),
                                 head.get("view_weights"), contingency,
                                 float(full_acc) if isinstance(full_acc, (int, float)) else None,
                                 source=str(root / (head.get("contingency") or "")))
    except PoolingError as e:
        raise DeploymentError(str(e)) from None

    devices = {}
    for d in m.devices:
        owned = tuple(v for v in d.views if 0 <= v < views and view_device[v] == d.device)
        devices[d.device] = DeviceSpec(
            device=d.device, views=owned, level=float(d.level), model_hash=d.sha256 or "",
            dtype=np.dtype(np.int8 if d.format == INT8_FORMAT else np.float32),
            predicted_latency_ms=d.predicted_latency_ms)
    for v, dev in enumerate(view_device):
        if dev is not None and dev not in devices:
            raise DeploymentError(f"{head_path}: view_device[{v}] = {dev!r} is not a device of "
                                  f"deployment {m.deployment_id}")
    latencies = [d.predicted_latency_ms for d in m.devices if d.predicted_latency_ms is not None]
    head_file = root / AGGREGATOR_DIR / "head.tflite"
    if not head_file.is_file():
        raise DeploymentError(f"{head_file}: missing")
    return AggregatorDeployment(
        root=root, manifest=m, deployment_id=m.deployment_id,
        fleet=topics.fleet_name(m.deployment_id, m.created), views=views, feature_dim=dim,
        n_classes=n_classes, class_names=tuple(head.get("class_names") or ()),
        devices=devices, view_device=tuple(view_device), pooling=pooling, head_path=head_file,
        predicted_latency_ms=float(max(latencies)) if latencies else 0.0, head=head,
        contingency=contingency)
