"""The controller: its watch over a real broker (bad messages counted, never a crash), its
replan and export steps on a real work folder, and whole runs with real agent processes, the
real aggregator and Mosquitto (`fleet up --controller`): a killed device is planned without and
the fleet switched at one frame; floors that cannot be met without it are reported with the
shortfall and nothing is pushed; a device that returns is planned with again."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pytest

TRIO = ("{id: pi0, board: rpi4b, views: [0, 1, 2, 3]}",
        "{id: pi1, board: rpi4b, views: [4, 5, 6, 7]}",
        "{id: pi2, board: rpi5, views: [8, 9, 10, 11]}")


def _plan(fleet: Path, ladder: Path, out: Path, *extra: str) -> None:
    from slimedge.plan import commands as plan_cmd

    p = argparse.ArgumentParser()
    plan_cmd.add_plan_options(p)
    p.add_argument("--json", action="store_true")
    plan_cmd.plan(p.parse_args([
        "--fleet", str(fleet), "--ladder", str(ladder), "--min-accuracy", "0",
        "--k-failures", "1", "--out", str(out), "--pop", "8", "--generations", "3",
        "--no-baselines", "--no-plot", "--json", *extra]))


@pytest.fixture(scope="module")
def work(tiny_ladder, tmp_path_factory) -> Path:
    """A work folder as the demo leaves one: ladder/ and dataset/ (links to the session's tiny
    ones), a plan for three int8 boards (4 views each), its signed deployment and the keys."""
    from slimedge.export.deploy import export_deployment

    root = tmp_path_factory.mktemp("controller-work")
    (root / "ladder").symlink_to(tiny_ladder.ladder)
    (root / "dataset").symlink_to(tiny_ladder.root / "dataset")
    fleet = root / "trio.yaml"
    fleet.write_text("name: trio\nviews: 12\naggregator: {host: gateway}\ndevices:\n"
                     + "".join(f"  - {d}\n" for d in TRIO))
    _plan(fleet, root / "ladder", root / "plan.json")
    export_deployment(fleet, root / "ladder", None, root / "deploy", plan=root / "plan.json",
                      dataset=root / "dataset", progress=False, min_agreement=0.5)
    return root


def _copy_work(work: Path, dest: Path, **constraints: float) -> Path:
    """A copy of the work folder (links to the same ladder and dataset), its plan's
    constraints changed by `constraints`."""
    dest.mkdir()
    for name in ("ladder", "dataset"):
        (dest / name).symlink_to((work / name).resolve())
    for name in ("deploy", "keys"):
        shutil.copytree(work / name, dest / name)
    shutil.copy(work / "trio.yaml", dest / "trio.yaml")
    plan = json.loads((work / "plan.json").read_text())
    plan["constraints"].update(constraints)
    (dest / "plan.json").write_text(json.dumps(plan))
    return dest


# --------------------------------------------------------------------------- the watch


def test_bad_messages_on_the_status_and_heartbeat_topics_are_counted_not_fatal(
        mosquitto_broker):
    """Garbage on the topics the controller reads is counted under its reason; the watch goes
    on and still follows the devices' real messages."""
    from slimedge.fleet.controller_watch import FleetWatch
    from slimedge.runtime import topics
    from slimedge.runtime.mqtt import MqttClient

    watch = FleetWatch(mosquitto_broker.url, "lab", ["cam00", "cam01"], heartbeat_s=5.0).start()
    pub = MqttClient(mosquitto_broker.url, name="test-pub").start()
    try:
        hb = {"device": "cam00", "seq": 1, "boot": 7, "sent_ns": 1, "period_s": 5.0,
              "last_frame": 12, "deployment_id": "lab-1", "model_hash": "ab" * 16,
              "update_sequence": 0, "dropped": 0, "runtime": "litert-cpu"}
        sent = [
            (topics.status("lab", "cam00"), b"\xff\xfe"),  # not UTF-8
            (topics.status("lab", "cam00"), b"rebooting"),  # not a status text
            (topics.status("lab", "ghost"), b"offline"),  # no such device
            (topics.heartbeat("lab", "cam01"), b"{not json"),
            (topics.heartbeat("lab", "cam01"), json.dumps({**hb, "seq": -1}).encode()),
            (topics.heartbeat("lab", "cam01"), json.dumps(hb).encode()),  # cam00's, on cam01's
            (topics.heartbeat("lab", "cam00"), json.dumps(hb).encode()),  # valid
            (topics.heartbeat("lab", "cam00"), json.dumps(hb).encode()),  # replayed: stale
            (topics.status("lab", "cam01"), b"offline"),  # valid: dead at once
        ]
        for topic, payload in sent:
            assert pub.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(watch.counts().values()) < 7:
            time.sleep(0.05)
        assert watch.counts() == {"bad_status": 2, "unknown_device": 1, "bad_heartbeat": 3,
                                  "stale_heartbeat": 1}
        while time.monotonic() < deadline and watch.state("cam01") != "dead":
            time.sleep(0.05)
        assert watch.states() == {"cam00": "alive", "cam01": "dead"}
        assert watch.frame_now()[0] == 12
        changes = []
        while not watch.changes.empty():
            changes.append(watch.changes.get())
        assert [(c.device, c.state) for c in changes] == [("cam00", "alive"), ("cam01", "dead")]
    finally:
        pub.stop()
        watch.stop()


# --------------------------------------------------------------------------- work folder


def test_work_folder_errors_name_what_is_missing(work, tmp_path):
    from slimedge.fleet.controller_plan import ControllerError, ControllerWork

    with pytest.raises(ControllerError, match="no such work folder"):
        ControllerWork(tmp_path / "none")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ControllerError, match=r"ladder/manifest.json: missing \(ladder"):
        ControllerWork(bare)
    w = _copy_work(work, tmp_path / "w")
    (w / "plan.json").unlink()
    with pytest.raises(ControllerError, match=r"plan.json: missing"):
        ControllerWork(w)
    with pytest.raises(ControllerError, match="--fleet: unknown fleet 'nope'"):
        ControllerWork(_copy_work(work, tmp_path / "w2"), fleet="nope")


def test_replan_and_export_write_a_new_deployment_beside_the_one_in_service(work, tmp_path):
    """The replan is `slimedge plan --down pi1` with the plan's own settings; the export is a
    new signed folder; the one in service is untouched; changes name old and new level."""
    from slimedge.export.verify import verify_deployment
    from slimedge.fleet.controller_plan import (
        ControllerWork,
        device_changes,
        export,
        predicted_of,
        replan,
    )

    w = ControllerWork(_copy_work(work, tmp_path / "w"), deployments=tmp_path / "deps")
    cur = w.current()
    assert cur.index == 0 and cur.down == () and cur.deploy == w.root / "deploy"
    before = (cur.deploy / "manifest.json").read_bytes()
    n, name = w.next_name(["pi1"])
    assert (n, name) == (1, "1-down-pi1")
    r = replan(w, cur, ["pi1"], w.dir / f"{name}.plan.json")
    assert r.ok and r.plan["down"] == ["pi1"] and r.plan["constraints"] == json.loads(
        (w.root / "plan.json").read_text())["constraints"]
    assert predicted_of(r.plan).accuracy == r.plan["predicted"]["val"]["accuracy"]
    summary = export(w, r.plan_path, w.dir / name)
    assert summary["verified"]
    assert verify_deployment(w.dir / name, w.root / "keys" / "public_key.pem").ok
    assert (cur.deploy / "manifest.json").read_bytes() == before
    changes = device_changes(cur.deploy, w.dir / name, skip=["pi1"])
    assert "pi1" not in changes
    for c in changes.values():
        assert set(c) == {"level", "format", "sha256"} and c["sha256"][0] != c["sha256"][1]
    assert w.next_name([]) == (2, "2-full")
    from slimedge.fleet.controller_plan import ControllerError

    with pytest.raises(ControllerError, match="exists; a new deployment never replaces"):
        export(w, r.plan_path, w.dir / name)


# --------------------------------------------------------------------------- real runs


def _run(work_dir: Path, run: Path, tiny_ladder, **over):
    from slimedge.fleet.up import fleet_up, up_options

    return fleet_up(up_options(work_dir / "deploy", ladder=tiny_ladder.ladder,
                               heartbeat=0.25, run_dir=run, controller=True, **over))


def _decisions(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "controller.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == "decision"]


def test_floors_unreachable_without_the_device_keep_the_contingency(work, tiny_ladder,
                                                                     tmp_path):
    """Real agents, aggregator and broker; the plan in service asks for more accuracy than
    the fleet can give without pi1: the controller says so, by how much, and pushes
    nothing; the aggregator keeps serving with its contingency weights."""
    w = _copy_work(work, tmp_path / "w", min_accuracy=0.99)
    run = tmp_path / "run"
    # 16 s of frames: time to replan on a loaded machine before the last one
    s = _run(w, run, tiny_ladder, fps=0.5, kill="pi1@1s", grace=0.3)
    (d,) = _decisions(run)
    assert d["decision"] == "keep-contingency" and d["lost"] == ["pi1"]
    assert d["down_after"] == ["pi1"] and d["floors"]["min_accuracy"] == 0.99
    (reason,) = [x for x in d["infeasible"] if x["constraint"] == "min_accuracy"]
    assert d["shortfall"] == pytest.approx(0.99 - reason["best_accuracy"]) and d["shortfall"] > 0
    assert "no plan meets the floors without pi1" in d["message"]
    assert "nothing is pushed" in d["message"]
    assert "push" not in d and "deployment" not in d
    assert not [p for p in (run / "controller-deployments").iterdir() if p.is_dir()]
    assert not (w / "keys" / "update_sequence.json").exists()  # no update was ever signed
    (rec,) = s["recovery"]
    assert rec["device"] == "pi1" and rec["decision"] == "keep-contingency"
    assert rec["acked_s"] is None and rec["accuracy"]["recovered"] is None
    assert rec["detected_s"] >= rec["killed_s"] and rec["replanned_s"] >= rec["detected_s"]
    assert s["mismatches"] == 0  # the survivors' answers equal the evaluator's, pi1 out
    from slimedge.fleet.summary import describe

    text = "\n".join(describe(s))
    assert "controller, pi1 killed at" in text and "keep-contingency" in text
    from slimedge.fleet.controller import summary_text

    printed = summary_text({"decisions": [d], "rejected": {}, "current": {"deploy": "D"}})
    assert printed.startswith("lost pi1: keep-contingency (no plan meets the floors")


def test_demo_kills_the_device_whose_loss_costs_most_by_the_plan(work, tmp_path):
    """The plan's single-device contingency rows decide (lowest accuracy), before importance."""
    from slimedge.fleet.demo_run import victim

    plan = json.loads((work / "plan.json").read_text())
    rows = [r for r in plan["contingency"]["rows"] if len(set(r["dead_devices"])) == 1]
    assert len(rows) == 3
    for r in rows:
        r["accuracy"]["val"] = 0.5 if r["dead_devices"][0] == "pi2" else 0.9
    plan["contingency"]["rows"] = rows
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    importance = tmp_path / "importance.json"
    importance.write_text(json.dumps({"leave_one_out": [0.0, 0.3] + [0.0] * 10}))
    assert victim(work / "deploy", importance, path) == "pi2"
    assert victim(work / "deploy", importance, None) == "pi0"


@pytest.mark.slow
def test_closed_loop_kill_replan_push_and_return(work, tiny_ladder, tmp_path):
    """pi1 is SIGKILLed: the controller plans without it, exports, and switches the fleet at
    one frame F (the aggregator's part and the devices up); from F on the fleet's answers are
    the evaluator's for the new deployment. pi1 is restarted: the controller plans with it
    again."""
    w = _copy_work(work, tmp_path / "w")
    run = tmp_path / "run"
    # 8 frames 8.3 s apart: frames 1 and 2 are captured with pi1 dead (the contingency), the
    # switch comes after, pi1 is back at 20 s.
    s = _run(w, run, tiny_ladder, fps=0.12, kill="pi1@2s", restart="pi1@20s", grace=0.5,
             lead=2.0)
    lost, back = _decisions(run)[:2]
    assert lost["lost"] == ["pi1"] and lost["decision"] == "switched", lost.get("message")
    deploy = Path(lost["deployment"])
    assert deploy.parent == run / "controller-deployments" and deploy.name == "1-down-pi1"
    assert lost["push"]["ok"] and set(lost["push"]["devices"]) == {"pi0", "pi2"}  # pi1 left out
    assert lost["push"]["aggregator"]["status"] == "applied"
    F = lost["at_frame"]
    (rec,) = s["recovery"]
    assert rec["decision"] == "switched" and rec["at_frame"] == F
    assert (rec["killed_s"] <= rec["detected_s"] <= rec["replanned_s"] <= rec["exported_s"]
            <= rec["pushed_s"] <= rec["acked_s"])
    assert rec["switched_s"] is not None and rec["switched_s"] >= rec["killed_s"]
    assert rec["accuracy"]["degraded"]["answered"] > 0
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    applied = [e for e in events if e.get("event") == "switch_applied"]
    assert applied and applied[0]["frame"] == F
    rec_acc = rec["accuracy"]["recovered"]
    assert rec_acc["answered"] > 0 and rec_acc["mismatches"] == 0
    assert rec_acc["accuracy"] == rec_acc["evaluator_accuracy"]
    assert s["mismatches"] == 0  # every frame, each with the deployment it was pooled with
    # Only the devices up whose model changed were pushed (and applied it), named with both
    # hashes; the others were sent nothing and pooled under their old deployment id.
    assert set(lost["changed"]) <= {"pi0", "pi2"}
    for dev, c in lost["changed"].items():
        assert c["sha256"][0] != c["sha256"][1], dev
    for dev in ("pi0", "pi2"):
        want = "applied" if dev in lost["changed"] else "unchanged"
        assert lost["push"]["devices"][dev]["status"] == want, lost["push"]["devices"]
    assert lost["pushed_devices"] == sorted(lost["changed"])
    assert lost["unchanged_devices"] == sorted({"pi0", "pi2"} - set(lost["changed"]))
    # pi1 came back: planned with again (every device up), whatever the replay had left.
    assert back["returned"] == ["pi1"] and back["down_after"] == []
    assert back["decision"] in ("switched", "push-failed"), back.get("message")
    assert (run / "controller-deployments" / "2-full.plan.json").is_file()
    current = json.loads((run / "controller-deployments" / "current.json").read_text())
    assert current["down"] == ([] if back["decision"] == "switched" else ["pi1"])


def test_controller_command_refuses_bad_options_with_a_named_error(work, tmp_path, capsys):
    from slimedge.cli import main

    assert main(["controller", "run", "--work", str(tmp_path / "none"),
                 "--broker", "mqtt://127.0.0.1:1"]) == 2
    assert "no such work folder" in capsys.readouterr().err
    w = _copy_work(work, tmp_path / "w")
    assert main(["controller", "run", "--work", str(w), "--broker", "mqtt://127.0.0.1:1",
                 "--lead", "0"]) == 2
    assert "--lead: expected seconds > 0" in capsys.readouterr().err


def test_fleet_up_controller_needs_a_work_folder_and_sane_times(work, tiny_ladder, tmp_path):
    from slimedge.fleet.schedule import FleetUpError
    from slimedge.fleet.up import prepare, up_options

    def opts(deploy, **over):
        return up_options(deploy, ladder=tiny_ladder.ladder, controller=True,
                          run_dir=tmp_path / "run", **over)

    p = prepare(opts(work / "deploy"))
    assert p.controller and p.grace_s == 1.0
    with pytest.raises(FleetUpError, match="--grace: must be >= 0"):
        prepare(opts(work / "deploy", grace=-1.0))
    with pytest.raises(FleetUpError, match="--lead: must be > 0"):
        prepare(opts(work / "deploy", lead=0.0))
    moved = tmp_path / "elsewhere"
    shutil.copytree(work / "deploy", moved)
    shutil.copytree(work / "keys", tmp_path / "keys")
    with pytest.raises(FleetUpError, match="is not a work folder's deploy/"):
        prepare(opts(moved, dataset=work / "dataset"))
    bare = tmp_path / "bare"
    shutil.copytree(work / "deploy", bare / "deploy")
    shutil.copytree(work / "keys", bare / "keys")
    with pytest.raises(FleetUpError, match="--controller: .*ladder/manifest.json: missing"):
        prepare(opts(bare / "deploy", dataset=work / "dataset"))
