"""Helpers shared by the aggregator tests: valid messages of a deployment's devices, built
from the ladder's cached test features (what the evaluator pools), and the evaluator's answer
for a frame and a live set."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimedge.runtime import frames, topics


@dataclass
class Fleet:
    """A deployment with its evaluator on the test split: the source of valid messages."""

    dep: Any  # AggregatorDeployment
    head: Any  # HeadRunner
    ev: Any  # Evaluator (test split)
    levels: list[int]
    feats: np.ndarray  # (N, V, D) int8
    scale: np.ndarray  # (V,)
    zp: np.ndarray  # (V,)

    @property
    def n_frames(self) -> int:
        return int(self.feats.shape[0])

    def message(self, frame: int, view: int, capture_ns: int, **change: Any
                ) -> frames.FeatureMessage:
        device = self.dep.view_device[view]
        spec = self.dep.devices[device]
        fields = dict(view=view, seq=frame, timestamp_ns=capture_ns, device=device,
                      features=self.feats[frame % self.n_frames, view],
                      scale=float(self.scale[view]), zero_point=int(self.zp[view]),
                      deployment_id=self.dep.deployment_id, level=spec.level,
                      model_hash=spec.model_hash)
        fields.update(change)
        return frames.FeatureMessage(**fields)

    def payload(self, frame: int, view: int, capture_ns: int, **change: Any) -> bytes:
        return frames.encode(self.message(frame, view, capture_ns, **change))

    def topic(self, view: int, kind: str = "features") -> str:
        device = self.dep.view_device[view]
        return getattr(topics, kind)(self.dep.fleet, device)

    def heartbeat(self, device: str, seq: int, *, boot: int = 1, period_s: float = 1.0,
                  **change: Any) -> bytes:
        hb = {"device": device, "seq": seq, "boot": boot, "sent_ns": 0, "period_s": period_s,
              "last_frame": None, "deployment_id": self.dep.deployment_id,
              "model_hash": self.dep.devices[device].model_hash, "update_sequence": 0,
              "dropped": 0, "runtime": "litert-cpu"}
        hb.update(change)
        return json.dumps(hb).encode()

    def expected(self, frame: int, live: np.ndarray) -> tuple[int, np.ndarray]:
        """The evaluator's class for `frame` with live views `live`, pooled by the rule the
        planner measured that live set with, and the pooled vector's classifier logits."""
        from slimedge import _core

        rule = self.dep.pooling.for_live(live)
        ev = dataclasses.replace(self.ev, mode=rule.mode)
        pred = int(ev.predictions(self.levels, live, rule.weights)[frame % self.n_frames])
        pooled, _ = _core.pool(self.feats[frame % self.n_frames], live, rule.weights,
                               mode=rule.mode, scale=self.scale, zero_point=self.zp)
        return pred, self.ev.classifier.logits(pooled[None, :])[0]


def load_fleet(tiny_deployment: Any) -> Fleet:
    from slimedge.ladder.evaluator import Evaluator
    from slimedge.runtime.aggregator_deployment import load_aggregator_deployment
    from slimedge.runtime.head import HeadRunner

    dep = load_aggregator_deployment(tiny_deployment.deploy)
    head = HeadRunner(dep.head_path, dep.feature_dim, dep.n_classes)
    ev = Evaluator.from_ladder(tiny_deployment.ladder, "test")
    levels = [int(x) for x in dep.head["view_level_index"]]
    feats, scale, zp = ev.gather(levels)
    return Fleet(dep, head, ev, levels, feats, scale, zp)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max())
    return e / e.sum()
