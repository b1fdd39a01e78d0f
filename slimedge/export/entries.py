"""The deployment manifest's content, from an export's per-device results: one entry per
device (board, views, level, artifact, measured checks), the aggregator's files, provenance."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimedge.artifacts import sha256_file
from slimedge.devices.fleet import Fleet
from slimedge.export.aggregator_files import AGGREGATOR_DIR
from slimedge.export.artifacts import DeviceResult
from slimedge.export.assignment import PlanChoice


def deployment_manifest(fleet: Fleet, ladder_dir: Path, manifest: Mapping[str, Any],
                         choice: PlanChoice | None, results: Sequence[DeviceResult],
                         head: dict[str, Any]) -> Any:
    from slimedge import __version__
    from slimedge.export.manifest import (
        AggregatorEntry,
        DeploymentManifest,
        DeviceEntry,
        FileEntry,
        Provenance,
        utc_now,
    )

    created = utc_now()
    stamp = re.sub(r"[^0-9]", "", created)
    fleet_id = re.sub(r"[^A-Za-z0-9._-]", "-", fleet.name).strip("-.") or "fleet"
    devices = tuple(
        DeviceEntry(
            device=r.a.device, board=r.a.board.id, views=r.a.views,
            level=float(manifest["levels"][r.a.level_index]["level"]),
            level_index=r.a.level_index, format=r.a.fmt, runtime=r.a.board.runtime,
            artifact=r.artifact,
            predicted_latency_ms=r.assessment.total_ms,
            memory_budget_bytes=r.a.board.model_memory_bytes,
            memory_margin_bytes=r.assessment.ram_margin_bytes,
            tflm_arena_bytes=r.arena,
            firmware=r.firmware,
            checks=r.checks,
        ) for r in results)
    agg = fleet.aggregator
    aggregator = AggregatorEntry(
        pooling=head["mode"],
        head=tuple(FileEntry(f"{AGGREGATOR_DIR}/{f}") for f in head["files"]),
        board=agg.name if agg.kind == "board" else None,
        host=agg.name if agg.kind == "host" else None,
        contingency_table=(FileEntry(f"{AGGREGATOR_DIR}/contingency.json")
                           if head["contingency"] else None),
    )
    return DeploymentManifest(
        deployment_id=f"{fleet_id}-{stamp}",
        created=created,
        provenance=Provenance(sha256_file(ladder_dir / "manifest.json"),
                              manifest["dataset_hash"],
                              choice.sha256 if choice else None, __version__),
        aggregator=aggregator,
        devices=devices,
    )
