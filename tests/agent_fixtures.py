"""A tiny real deployment for agent tests: three tiny Keras branches converted to int8 TFLite
(cam00 on an esp32s3 in TFLite Micro, cam01 on an rpi4b in LiteRT, cam02 on a Coral dev
board, where without libedgetpu LiteRT runs on the CPU), signed with a real Ed25519 key, next
to a 3-view dataset whose test split the agents replay (`<work>/dataset`, the default)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEVICES = (("cam00", "esp32s3", 0), ("cam01", "rpi4b", 1), ("cam02", "coral_devboard", 2))
OBJECTS, IMAGE = 402, 16
PREDICTED_MS = {"cam00": 40.0, "cam01": 3.0, "cam02": 2.0}


@dataclass(frozen=True)
class AgentDeployment:
    work: Path
    deploy: Path
    public_key: Path
    private_key: Path
    dataset: Path

    @property
    def test_images(self) -> np.ndarray:
        """(objects of the test split, V, H, W, 1), in replay order."""
        from slimedge.data.container import load_dataset

        ds = load_dataset(self.dataset)
        return np.asarray(ds.images[ds.indices("test")])


def _branch(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((IMAGE, IMAGE, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(8),
    ])


def write_dataset(path: Path, seed: int = 0) -> None:
    from slimedge.data.container import Dataset

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (OBJECTS, len(DEVICES), IMAGE, IMAGE, 1), dtype=np.uint8)
    split = np.array([0, 1] + [2] * (OBJECTS - 2), np.uint8)  # 400 test objects
    Dataset(images=images, labels=rng.integers(0, 2, OBJECTS).astype(np.int32),
            class_names=["a", "b"], split=split).save(path)


def sign_deployment(deploy: Path, private_key: Path, *, budgets: dict[str, int] | None = None,
                    deployment_id: str = "tiny3-20260101000000",
                    created: str = "2026-01-01T00:00:00Z") -> None:
    """(Re)write and sign the manifest of the models in `deploy`/devices; `budgets` overrides
    a device's memory_budget_bytes (e.g. below its arena need)."""
    from slimedge.artifacts import sha256_file
    from slimedge.devices import load_catalog
    from slimedge.export.manifest import (
        AggregatorEntry,
        DeploymentManifest,
        DeviceEntry,
        FileEntry,
        Provenance,
        write_deployment_manifest,
    )
    from slimedge.profile.tflm import measure_arena

    catalog = load_catalog()
    entries = []
    for dev, board_id, view in DEVICES:
        board = catalog[board_id]
        artifact = f"devices/{dev}.tflite"
        budget = (budgets or {}).get(dev, board.model_memory_bytes)
        arena = measure_arena(deploy / artifact) if board.runtime == "tflite-micro" else None
        entries.append(DeviceEntry(
            device=dev, board=board.id, views=(view,), level=0.0, level_index=0,
            format="int8", runtime=board.runtime, artifact=artifact,
            predicted_latency_ms=PREDICTED_MS[dev], memory_budget_bytes=budget,
            memory_margin_bytes=budget - arena if arena else None, tflm_arena_bytes=arena))
    manifest = DeploymentManifest(
        deployment_id=deployment_id, created=created,
        provenance=Provenance(ladder_sha256=sha256_file(deploy / "aggregator" / "head.bin")),
        aggregator=AggregatorEntry(pooling="max", head=(FileEntry("aggregator/head.bin"),),
                                   host="gateway"),
        devices=tuple(entries))
    write_deployment_manifest(deploy, manifest, private_key)


def make_agent_deployment(work: Path) -> AgentDeployment:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from slimedge.convert import to_tflite
    from slimedge.export.signing import generate_keys

    private_key, public_key = generate_keys(work / "keys")
    write_dataset(work / "dataset")
    deploy = work / "deploy"
    (deploy / "devices").mkdir(parents=True)
    (deploy / "aggregator").mkdir()
    (deploy / "aggregator" / "head.bin").write_bytes(b"not used by agents")
    rep = np.random.default_rng(1).random((8, IMAGE, IMAGE, 1), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        for i, (dev, _, _) in enumerate(DEVICES):
            (deploy / "devices" / f"{dev}.tflite").write_bytes(
                to_tflite(_branch(10 + i), "int8", rep))
    sign_deployment(deploy, private_key)
    return AgentDeployment(work, deploy, public_key, private_key, work / "dataset")


class StripeCamera:
    """A camera plug-in (the `slimedge.runtime.sources.Camera` interface): four frames of
    moving stripes, 32 x 24 RGB, which the agent converts to its branch's input."""

    def __init__(self, image_shape: tuple[int, int, int], view: int) -> None:
        self.i = 0
        self.closed = False

    def read(self) -> np.ndarray | None:
        if self.i >= 4:
            return None
        x = (np.arange(32)[None, :, None] * 8 + self.i * 16) % 256
        self.i += 1
        return np.broadcast_to(x, (24, 32, 3)).astype(np.uint8)

    def close(self) -> None:
        self.closed = True
