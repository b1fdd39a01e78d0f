"""What an export starts from, checked before any work: the ladder's dataset (by content hash),
an output directory it may replace, and the signing key."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.export import ExportError

KEYS_DIR = "keys"  # beside the deployment: <out>/../keys


def say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[export] {msg}", file=sys.stderr, flush=True)


def load_checked_dataset(dataset: Any, ladder_dir: Path, manifest: Mapping[str, Any]
                          ) -> tuple[Any, str]:
    """The dataset the ladder was built from (its content hash must match), and where it was
    found. Without one given, the work-folder sibling `<ladder>/../dataset` is tried."""
    from slimedge.data.container import Dataset, load_dataset, read_meta
    from slimedge.errors import DatasetError

    want = manifest["dataset_hash"]
    if dataset is None:
        sibling = ladder_dir.parent / "dataset"
        try:
            meta = read_meta(sibling)
        except DatasetError:
            meta = None
        if meta is None or meta.get("content_hash") != want:
            raise ExportError(
                f"{ladder_dir}: the ladder does not record its dataset's path and no dataset "
                f"{want[:12]} sits beside it: pass the dataset it was built from (--dataset)")
        dataset = sibling
    where = "dataset object" if isinstance(dataset, Dataset) else str(dataset)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    got = ds.content_hash()
    if got != want:
        raise ExportError(
            f"{where}: dataset content hash {got[:12]} does not match the ladder's "
            f"dataset_hash {want[:12]} ({ladder_dir / 'manifest.json'}): export checks "
            "agreement on the dataset the ladder was built from")
    return ds, where


def check_out_dir(out: Path) -> None:
    """The output is replaced whole: refuse a directory that is not an earlier deployment."""
    from slimedge.export.manifest import MANIFEST_NAME

    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / MANIFEST_NAME).is_file())):
        raise ExportError(f"{out}: exists and is not a deployment directory (no "
                          f"{MANIFEST_NAME}); export replaces its output whole, so give a new "
                          "or an earlier deployment's directory")


@dataclass
class SigningKey:
    """The private key to sign with; `generate_in`: a new pair is generated there first."""

    private: Path
    generate_in: Path | None  # a key pair is generated here at signing time
    given: bool


def resolve_key(key_path: Any, out: Path) -> SigningKey:
    from slimedge.export import signing

    root = out.resolve()
    if key_path is not None:
        key = Path(key_path)
        if root == key.resolve() or root in key.resolve().parents:
            raise ExportError(f"{key}: the private key lives inside the deployment directory "
                              f"{out}, which export replaces whole: keep it elsewhere")
        signing.load_private_key(key)  # a wrong key fails before any work
        return SigningKey(key, None, True)
    keys = root.parent / KEYS_DIR
    private = keys / signing.PRIVATE_KEY_NAME
    if private.is_file():
        signing.load_private_key(private)
        return SigningKey(private, None, False)
    if (keys / signing.PUBLIC_KEY_NAME).exists():
        raise ExportError(f"{keys}: holds {signing.PUBLIC_KEY_NAME} but no "
                          f"{signing.PRIVATE_KEY_NAME}: pass the private key (--key)")
    return SigningKey(private, keys, False)

