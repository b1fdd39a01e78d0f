"""Ed25519 keys and signatures for deployment manifests (`cryptography`, no TensorFlow).

`generate_keys(out_dir)` writes `private_key.pem` (PKCS#8, unencrypted, mode 0600) and
`public_key.pem` (SubjectPublicKeyInfo). The private key stays with whoever publishes
deployments; devices get the public key out of band (provisioning), which is what makes a
verified signature prove origin. A signature is 64 raw bytes over the exact manifest bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from slimedge.artifacts import atomic_file
from slimedge.export import ExportError

PRIVATE_KEY_NAME = "private_key.pem"
PUBLIC_KEY_NAME = "public_key.pem"
SIGNATURE_BYTES = 64


def _serialization() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization


def generate_keys(out_dir: str | os.PathLike[str], *, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into `out_dir`; returns (private_path, public_path).
    Refuses to replace existing key files unless `force`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ser = _serialization()
    out = Path(out_dir)
    private_path, public_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        raise ExportError(f"{', '.join(existing)}: key file exists; refusing to overwrite it "
                          "(pass force=True / --force to replace the key pair)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                    ser.NoEncryption())
    out.mkdir(parents=True, exist_ok=True)
    # atomic_file's temporary file is created 0600 (mkstemp), so the private key is never
    # readable by others, not even for a moment.
    with atomic_file(private_path, "wb") as fh:
        fh.write(private_pem)
    os.chmod(private_path, 0o600)
    with atomic_file(public_path, "wb") as fh:
        fh.write(public_pem(key.public_key()))
    os.chmod(public_path, 0o644)
    return private_path, public_path


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """An Ed25519 private key from a PEM file; ExportError names the file otherwise."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such private key file")
    try:
        key = _serialization().load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{path}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ExportError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """An Ed25519 public key from a PEM file; ExportError names the file otherwise."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such public key file")
    try:
        key = _serialization().load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise ExportError(f"{path}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ExportError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def public_pem(public_key: Any) -> bytes:
    ser = _serialization()
    return public_key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public_key: Any) -> str:
    """`ed25519:<first 16 hex digits of sha256(raw public key)>`: a short name for a key."""
    ser = _serialization()
    raw = public_key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def sign(private_key: Any, data: bytes) -> bytes:
    return private_key.sign(data)


def verify_signature(public_key: Any, signature: bytes, data: bytes) -> bool:
    """True when `signature` is `public_key`'s signature of exactly `data`."""
    from cryptography.exceptions import InvalidSignature

    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
