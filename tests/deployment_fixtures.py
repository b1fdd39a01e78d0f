"""A real signed deployment of the session's tiny ladder, planned with a contingency table
(imported by conftest.py).

`tiny_deployment`: the tiny ladder (conftest) planned for a 12-device fleet of int8 boards
(one view each, k = 2 failures, so the table has a row for every set of 1 or 2 dead views),
then exported with that plan: manifest, signature, per-device artifacts, aggregator head,
classifier and contingency table. About 5 s on top of the tiny ladder. Tests must not modify
it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

TINY_BOARDS = ("rpi4b", "rpi5", "coral_devboard", "rpi3bplus")  # all int8: exact features


@dataclass(frozen=True)
class TinyDeployment:
    deploy: Path
    dataset: Path
    ladder: Path
    plan: Path
    fleet_file: Path
    fleet: str  # the fleet name in topics

    @property
    def public_key(self) -> Path:
        """The key export generated beside the deployment: the one provisioned to its
        daemons (agents and aggregator verify with it, never with the deployment's copy)."""
        return self.deploy.parent / "keys" / "public_key.pem"


@pytest.fixture(scope="session")
def tiny_deployment(tiny_ladder, tmp_path_factory) -> TinyDeployment:
    from slimedge.export.deploy import export_deployment
    from slimedge.plan import commands as plan_cmd

    work = tmp_path_factory.mktemp("tiny-deployment")
    fleet = work / "tiny12.yaml"
    fleet.write_text("name: tiny12\nviews: 12\naggregator: {host: gateway}\ndevices:\n" + "".join(
        f"  - {{id: cam{v:02d}, board: {TINY_BOARDS[v % 4]}, views: [{v}]}}\n"
        for v in range(12)))
    p = argparse.ArgumentParser()
    plan_cmd.add_plan_options(p)
    p.add_argument("--json", action="store_true")
    plan = work / "plan.json"
    plan_cmd.plan(p.parse_args([
        "--fleet", str(fleet), "--ladder", str(tiny_ladder.ladder), "--min-accuracy", "0",
        "--k-failures", "2", "--out", str(plan), "--pop", "8", "--generations", "3",
        "--no-baselines", "--no-plot", "--json"]))
    # The 4-epoch tiny model agrees with Keras less than a real one: the check still runs.
    export_deployment(fleet, tiny_ladder.ladder, None, work / "deploy", plan=plan,
                      dataset=tiny_ladder.root / "dataset", progress=False, min_agreement=0.5)
    return TinyDeployment(work / "deploy", tiny_ladder.root / "dataset", tiny_ladder.ladder,
                          plan, fleet, "tiny12")
