"""Shared fixtures. The tiny ladder is built for real once per test session (train + prune +
fine-tune + convert + measure costs + cache features): every test module that needs a ladder
reuses it, which keeps the suite's time on CI down. Tests must not modify it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deployment_fixtures import tiny_deployment  # noqa: F401 (a planned, signed deployment)
from fleet_fixtures import mosquitto_broker, mqtt_broker  # noqa: F401 (real MQTT brokers)

TINY_CLASSES = ("chair", "table", "cup", "monitor")
TINY_LEVELS = (0.0, 0.5, 0.75)


@dataclass(frozen=True)
class TinyLadder:
    root: Path  # holds dataset/, model/, ladder/
    dataset: Any  # slimedge.data.container.Dataset
    manifest: dict[str, Any]

    @property
    def ladder(self) -> Path:
        return self.root / "ladder"

    def __iter__(self):  # (root, dataset, manifest), as the ladder tests unpack it
        return iter((self.root, self.dataset, self.manifest))


@pytest.fixture(scope="session")
def tiny_ladder(tmp_path_factory) -> TinyLadder:
    """4 classes x 12 objects at 16 px, a 4-epoch tiny model, levels (0, 0.5, 0.75)."""
    pytest.importorskip("tensorflow")
    from slimedge.data.generator import GeneratorConfig, generate
    from slimedge.ladder.build import LadderConfig, build_ladder
    from slimedge.model.train import TrainConfig, train

    root = tmp_path_factory.mktemp("ladder")
    ds = generate(GeneratorConfig.tiny(classes=TINY_CLASSES, objects_per_class=12,
                                       image_size=16), workers=1, progress=False)
    ds.save(root / "dataset")
    cfg = TrainConfig(epochs=4, feature_dim=16, width=0.5, head_hidden=16, batch_size=8,
                      failout_warmup_epochs=1, failout_ramp_epochs=1, patience=10)
    train(ds, cfg, out_dir=root / "model", progress=False)
    manifest = build_ladder(ds, root / "model", root / "ladder",
                            LadderConfig(levels=TINY_LEVELS, finetune_epochs=1,
                                         latency_repeats=5, calibration_images=32),
                            progress=False)
    return TinyLadder(root, ds, manifest)
