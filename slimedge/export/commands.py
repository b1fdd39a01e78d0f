"""Handlers of `slimedge keys generate` and `slimedge verify`; each returns the summary that
`--json` prints, and raises a SlimEdgeError subclass (the CLI prints it and exits 2)."""

from __future__ import annotations

import argparse
from typing import Any


def add_keys_generate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for private_key.pem (mode 0600) and public_key.pem")
    p.add_argument("--force", action="store_true",
                   help="replace an existing key pair in DIR")


def keys_generate(args: argparse.Namespace) -> dict[str, Any]:
    from slimedge.export import signing

    private_path, public_path = signing.generate_keys(args.out, force=args.force)
    return {
        "private_key": str(private_path),
        "public_key": str(public_path),
        "fingerprint": signing.fingerprint(signing.load_public_key(public_path)),
        "note": "keep private_key.pem secret; provision public_key.pem on the devices",
    }


def add_verify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("deploy_dir", metavar="DEPLOY_DIR", help="deployment directory to verify")
    p.add_argument("--public-key", default=None, metavar="K",
                   help="the provisioned public key (PEM); without it the deployment's own "
                   "public_key.pem is used, which proves integrity but not origin")
    p.add_argument("--device", default=None, metavar="ID",
                   help="check only this device's entry (what a device agent does)")
    p.add_argument("--no-load", dest="load_artifacts", action="store_false",
                   help="check signature and hashes only; do not load models in LiteRT / "
                   "TFLite Micro")


def verify(args: argparse.Namespace) -> dict[str, Any]:
    """Raises VerifyError naming every problem; returns the summary when all checks pass."""
    from slimedge.export.verify import verify_deployment

    report = verify_deployment(
        args.deploy_dir,
        args.public_key,
        load_artifacts=getattr(args, "load_artifacts", True),
        device=getattr(args, "device", None),
    )
    report.raise_if_failed()
    return report.to_dict()
