"""What a device does before it runs anything: verify its deployment against the public key it
was provisioned with, then load its own artifact in the runtime its board has.

- Verification (`slimedge.export.verify`, no TensorFlow): the Ed25519 signature over the
  manifest with the provisioned key (never the `public_key.pem` shipped inside the deployment,
  which proves integrity only), the manifest's `signing_key` naming that same key, and this
  device's files (size, SHA-256, no path escapes).
- Runtime: TFLite Micro within the board's arena budget for a microcontroller board
  (`runtime.mcu`, refused with bytes needed vs available when it does not fit); LiteRT on a
  Linux board, with the Edge TPU delegate when the board has one and `libedgetpu` loads,
  otherwise the CPU. `DeviceRuntime.runtime` says which: "tflm", "litert-edgetpu",
  "litert-cpu".
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError
from slimedge.runtime import topics

__all__ = ["DeviceRuntime", "SetupError", "edgetpu_delegate", "load_device", "provisioned_key"]

log = logging.getLogger("slimedge.agent")

PUBLIC_KEY_ENV = "SLIMEDGE_PUBLIC_KEY"
EDGETPU_LIBRARIES = ("libedgetpu.so.1", "libedgetpu.1.dylib", "edgetpu.dll")


class SetupError(SlimEdgeError):
    """The device refuses to start: unverifiable deployment, missing key, unloadable model."""


@dataclass
class DeviceRuntime:
    """A verified device entry with its model loaded and ready to run."""

    deploy_dir: Path
    deployment_id: str
    fleet: str
    device: str
    board: str
    views: tuple[int, ...]
    level: float
    model_hash: str  # the artifact's SHA-256 (hex), as signed in the manifest
    runtime: str  # "litert-cpu" | "litert-edgetpu" | "tflm"
    engine: Any  # BranchRunner or TflmRunner: run(image) -> BranchOutput
    image_shape: tuple[int, int, int]
    predicted_latency_ms: float | None  # inference + link on the board (cost model)
    key_fingerprint: str
    arena_bytes: int | None = None  # TFLite Micro arena used (MCU boards)
    arena_budget_bytes: int | None = None
    # The plan's system latency (the manifest's): the part of the aggregator's per-frame
    # deadline (capture + this + its slack) a device can know.
    system_latency_ms: float = 0.0


def provisioned_key(public_key: str | os.PathLike | None) -> Path:
    """The key given out of band: the argument, else $SLIMEDGE_PUBLIC_KEY; never the
    deployment's own copy."""
    chosen = public_key if public_key is not None else os.environ.get(PUBLIC_KEY_ENV)
    if not chosen:
        raise SetupError("no provisioned public key: pass --public-key PEM (or set "
                         f"${PUBLIC_KEY_ENV}); the public_key.pem inside a deployment proves "
                         "integrity only, not who made it")
    return Path(chosen)


def check_signing_key(manifest: Any, key_path: Path, *, who: str, root: Path) -> str:
    """The provisioned key's fingerprint; SetupError unless the manifest names that key as
    the one it was signed with. The one rule of every daemon that runs a deployment (agent,
    aggregator): a key given out of band (`provisioned_key`) whose fingerprint the manifest's
    `signing_key` must be."""
    from slimedge.export import ExportError
    from slimedge.export.signing import fingerprint, load_public_key

    try:
        key_fp = fingerprint(load_public_key(key_path))
    except ExportError as e:
        raise SetupError(f"provisioned public key (--public-key): {e}") from None
    if manifest.signing_key != key_fp:
        raise SetupError(f"{who}: refusing to start: {root}/manifest.json names signing key "
                         f"{manifest.signing_key}, the provisioned key (--public-key "
                         f"{key_path}) is {key_fp}")
    return key_fp


def edgetpu_delegate() -> object | None:
    """The Edge TPU LiteRT delegate when libedgetpu is installed and loads; else None."""
    for lib in EDGETPU_LIBRARIES:
        try:  # probe with ctypes first: a failed load_delegate leaves noise at exit
            ctypes.CDLL(lib)
        except OSError:
            continue
        from ai_edge_litert.interpreter import load_delegate

        try:
            return load_delegate(lib)
        except (OSError, ValueError) as e:
            log.warning("Edge TPU library %s found but the delegate did not load: %s", lib, e)
    return None


def load_device(deploy_dir: str | os.PathLike, device: str,
                public_key: str | os.PathLike | None) -> DeviceRuntime:
    """Verify `device`'s part of the deployment and load its model; SetupError says why not."""
    from slimedge.export import ExportError
    from slimedge.export.signing import fingerprint, load_public_key
    from slimedge.export.verify import verify_deployment

    root = Path(deploy_dir)
    key_path = provisioned_key(public_key)
    try:
        key_fp = fingerprint(load_public_key(key_path))
    except ExportError as e:
        raise SetupError(f"provisioned public key: {e}") from None
    report = verify_deployment(root, key_path, device=device, load_artifacts=False)
    if not report.ok:
        raise SetupError(f"device {device}: refusing to start: deployment {root} does not "
                         f"verify: {'; '.join(report.failures)}")
    m = report.manifest
    check_signing_key(m, key_path, who=f"device {device}", root=root)
    entry = m.device(device)
    if not entry.views:
        raise SetupError(f"device {device}: the manifest gives it no view")
    path = root / entry.artifact
    arena = None
    if entry.is_mcu:
        import importlib.util

        from slimedge.runtime.mcu import TflmRunner, check_arena

        if importlib.util.find_spec("tflite_micro") is None:
            raise SetupError(f"device {device} (board {entry.board}) runs TFLite Micro: the "
                             "emulated MCU node needs the tflite-micro package (x86_64 wheel)")

        arena = check_arena(path, entry.memory_budget_bytes, device=device, board=entry.board)
        engine, runtime = TflmRunner(path, entry.memory_budget_bytes), "tflm"
    else:
        from slimedge.runtime.branch import BranchRunner

        delegate = edgetpu_delegate() if "edgetpu" in entry.runtime else None
        engine = BranchRunner(path, delegates=[delegate] if delegate else ())
        runtime = "litert-edgetpu" if delegate else "litert-cpu"
    return DeviceRuntime(
        deploy_dir=root, deployment_id=m.deployment_id,
        fleet=topics.fleet_name(m.deployment_id, m.created), device=device,
        board=entry.board, views=tuple(entry.views), level=float(entry.level),
        model_hash=entry.sha256, runtime=runtime, engine=engine,
        image_shape=tuple(engine.image_shape), predicted_latency_ms=entry.predicted_latency_ms,
        key_fingerprint=key_fp, arena_bytes=arena,
        arena_budget_bytes=entry.memory_budget_bytes if entry.is_mcu else None,
        system_latency_ms=m.predicted_latency_ms)
