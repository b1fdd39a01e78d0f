"""Small real signed deployments for the update and push tests: tiny Keras branches converted
to TFLite (an int8 model + firmware bundle for an MCU board, an int8 model for a Linux board),
signed with a real Ed25519 key. Each call with another seed gives other weights, so the
artifacts (and their hashes) differ between deployments."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

MCU_DEVICE, PI_DEVICE = "cam00", "cam01"


def _branch(seed: int, width: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(8),
    ])


def make_deployment(root: Path, private_key: Path, *, seed: int, created: str,
                    deployment_id: str, level: float = 0.0) -> Path:
    """A signed deployment folder at `root` with devices cam00 (esp32s3, TFLite Micro, with
    its firmware bundle) and cam01 (rpi4b, LiteRT)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from slimedge.artifacts import sha256_file
    from slimedge.convert import to_tflite
    from slimedge.devices import load_catalog
    from slimedge.export.firmware import write_firmware_bundle
    from slimedge.export.manifest import (
        AggregatorEntry,
        DeploymentManifest,
        DeviceEntry,
        FileEntry,
        Provenance,
        write_deployment_manifest,
    )
    from slimedge.profile.tflm import measure_arena

    (root / "devices").mkdir(parents=True)
    width = 4 if level == 0.0 else 2
    rep = np.random.default_rng(seed).random((8, 16, 16, 1), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        for i, dev in enumerate((MCU_DEVICE, PI_DEVICE)):
            model = to_tflite(_branch(seed * 10 + i, width), "int8", rep)
            (root / "devices" / f"{dev}.tflite").write_bytes(model)
    (root / "aggregator").mkdir()
    (root / "aggregator" / "head.bin").write_bytes(b"head weights " + bytes([seed]))
    catalog = load_catalog()
    mcu, pi = catalog["esp32s3"], catalog["rpi4b"]
    arena = measure_arena(root / "devices" / f"{MCU_DEVICE}.tflite")
    fw = write_firmware_bundle(root / "devices" / f"{MCU_DEVICE}.tflite",
                               root / "firmware" / MCU_DEVICE, name=MCU_DEVICE,
                               arena_bytes=arena, board_id=mcu.id)
    manifest = DeploymentManifest(
        deployment_id=deployment_id, created=created,
        provenance=Provenance(ladder_sha256=sha256_file(root / "aggregator" / "head.bin")),
        aggregator=AggregatorEntry(pooling="max", head=(FileEntry("aggregator/head.bin"),),
                                   host="gateway-01"),
        devices=(
            DeviceEntry(device=MCU_DEVICE, board=mcu.id, views=(0,), level=level,
                        level_index=0 if level == 0.0 else 1, format="int8",
                        runtime=mcu.runtime, artifact=f"devices/{MCU_DEVICE}.tflite",
                        memory_budget_bytes=mcu.model_memory_bytes,
                        memory_margin_bytes=mcu.model_memory_bytes - arena,
                        tflm_arena_bytes=arena,
                        firmware=tuple(FileEntry(f"firmware/{MCU_DEVICE}/{f['path']}")
                                       for f in fw["files"])),
            DeviceEntry(device=PI_DEVICE, board=pi.id, views=(1,), level=level,
                        level_index=0 if level == 0.0 else 1, format="int8",
                        runtime=pi.runtime, artifact=f"devices/{PI_DEVICE}.tflite",
                        memory_budget_bytes=pi.model_memory_bytes),
        ),
    )
    write_deployment_manifest(root, manifest, private_key)
    return root
