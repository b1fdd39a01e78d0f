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


def add_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", required=True, metavar="F",
                   help="fleet file, or a fleet name in firmware_configs/fleets")
    p.add_argument("--ladder", required=True, metavar="L", help="ladder directory")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="deployment directory (replaced whole, only when the export verifies)")
    p.add_argument("--levels", default=None, metavar="LEVELS",
                   help="level index per view (0,0,3,...), one for all, or fractions (0.5,...); "
                   "default: per view the least-pruned level that fits its device")
    p.add_argument("--plan", default=None, metavar="PLAN",
                   help="plan JSON: levels and devices from views[*].level_index/.device, and "
                   "its contingency table for the aggregator (instead of --levels)")
    p.add_argument("--dataset", default=None, metavar="DS",
                   help="the dataset the ladder was built from (default: <ladder>/../dataset "
                   "when its content hash matches)")
    p.add_argument("--key", default=None, metavar="PRIVATE_PEM",
                   help="Ed25519 private key to sign with (default: <out>/../keys/, generated "
                   "there when absent)")
    p.add_argument("--format", dest="formats", action="append", default=[],
                   metavar="DEVICE=FMT",
                   help="ship DEVICE in format FMT instead of its board's preferred format "
                   "(repeatable; the board must accept FMT)")
    p.add_argument("--allow-misfit", action="store_true",
                   help="export a level that does not fit its device's memory (reported)")
    p.add_argument("--min-agreement", type=float, default=None, metavar="FRACTION",
                   help="deprecated, informational: raw top-1 agreement with the float Keras "
                   "pipeline below FRACTION adds a warning to the summary; the deploy gate "
                   "(exactness, int8 vs float accuracy and margins) decides")


def _parse_formats(items: list[str]) -> dict[str, str]:
    from slimedge.export import ExportError

    out: dict[str, str] = {}
    for item in items:
        device, sep, fmt = item.partition("=")
        if not sep or not device.strip() or not fmt.strip():
            raise ExportError(f"--format: expected DEVICE=FMT, got {item!r}")
        out[device.strip()] = fmt.strip()
    return out


def export(args: argparse.Namespace) -> dict[str, Any]:
    """`slimedge export`: the summary of a verified, signed deployment."""
    from slimedge.export.deploy import export_deployment
    from slimedge.ladder.commands import parse_levels
    from slimedge.ladder.store import read_manifest

    levels = None
    if args.levels is not None:
        levels = parse_levels(args.levels, read_manifest(args.ladder))
    return export_deployment(
        args.fleet, args.ladder, levels, args.out,
        dataset=args.dataset, plan=args.plan, key_path=args.key,
        allow_misfit=args.allow_misfit, progress=not getattr(args, "json", False),
        formats=_parse_formats(args.formats) or None, min_agreement=args.min_agreement,
    )
