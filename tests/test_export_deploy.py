"""`slimedge export` for real on the session's tiny ladder: per-device static artifacts in each
board's format, TFLite Micro within the board's arena budget, firmware bundles, Edge TPU static
check, the deploy gate's figures and raw agreement with Keras measured, a signed deployment that
verifies; and the failure paths (misfit, dataset mismatch, tampering, bad plan) leave nothing
behind. Broken exports refused by the gate: tests/test_deploy_gate.py."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from slimedge import _core  # noqa: E402
from slimedge.artifacts import sha256_file  # noqa: E402
from slimedge.cli import main  # noqa: E402
from slimedge.export import ExportError, commands, signing  # noqa: E402
from slimedge.export import deploy as deploy_mod  # noqa: E402
from slimedge.export.agreement import (  # noqa: E402
    ViewFeatures,
    agreement,
    feature_error,
    pool_views,
)
from slimedge.export.deploy import (  # noqa: E402
    export_deployment,
    least_pruned_levels,
    markdown_table,
    summary_from_deployment,
)
from slimedge.export.summary import edgetpu_cell  # noqa: E402
from slimedge.export.tflite_ops import read_tflite  # noqa: E402
from slimedge.export.verify import verify_deployment  # noqa: E402
from slimedge.profile.tflm import probe_arena  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIXED_LEVELS = [0, 1, 2] * 4  # views 0..11 of mixed12: every board class at several levels


def _cli_export(*argv: str) -> dict:
    p = argparse.ArgumentParser()
    commands.add_export_options(p)
    p.add_argument("--json", action="store_true")
    return commands.export(p.parse_args([*argv, "--json"]))


def _write_fleet(path: Path, devices: list[str], aggregator: str = "{host: gateway}") -> Path:
    path.write_text("name: " + path.stem + "\nviews: 12\naggregator: " + aggregator
                    + "\ndevices:\n" + "".join(f"  - {d}\n" for d in devices))
    return path


TIGHT_SRAM = ("{id: mcu, board: nrf52840, views: [0, 1, 2, 3, 4, 5], overrides: {memory.sram: "
              "{value: 4, unit: KiB, source: 'test', reason: 'a board with almost no SRAM'}}}")


@pytest.fixture(scope="module")
def exported(tiny_ladder, tmp_path_factory):
    """mixed12 exported through the CLI handler, without a key (one is generated)."""
    work = tmp_path_factory.mktemp("export")
    levels = ",".join(str(x) for x in MIXED_LEVELS)
    summary = _cli_export("--fleet", "mixed12", "--ladder", str(tiny_ladder.ladder),
                          "--dataset", str(tiny_ladder.root / "dataset"), "--levels", levels,
                          "--out", str(work / "deploy"))
    return work, summary


def test_mixed12_deployment_is_verified_and_complete(exported, tiny_ladder):
    work, s = exported
    deploy = work / "deploy"
    assert s["verified"] and s["deployment"] == str(deploy)
    assert s["levels"] == MIXED_LEVELS and s["level_source"] == "given"
    rows = {r["device"]: r for r in s["devices"]}
    assert len(rows) == 12
    report = verify_deployment(deploy)
    assert report.ok, report.failures
    manifest = json.loads((deploy / "manifest.json").read_text())
    entries = {d["device"]: d for d in manifest["devices"]}
    for dev, r in rows.items():
        entry = entries[dev]
        path = deploy / entry["artifact"]
        assert entry["sha256"] == sha256_file(path) and r["artifact_bytes"] == path.stat().st_size
        info = read_tflite(path)
        assert info.static_shapes, dev  # batch 1, unlike the ladder's files
        assert info.inputs and info.input_details()[0].shape[0] == 1
        assert r["level_index"] == MIXED_LEVELS[r["views"][0]]
        assert entry["level"] == tiny_ladder.manifest["levels"][r["level_index"]]["level"]
        assert r["host_latency_ms"] == \
            tiny_ladder.manifest["levels"][r["level_index"]]["latency_ms"][r["format"]]
        assert r["predicted_latency_ms"] > 0 and r["memory_margin_bytes"] > 0
        assert 0 <= r["feature_error_mean"] <= r["feature_error_max"]

    # Formats: int8 for MCUs, Pis (preferred int8) and Edge TPUs; the Jetson's float16.
    assert {r["format"] for r in rows.values() if r["class"] != "gpu"} == {"int8"}
    assert rows["cam11"]["format"] == "float16"
    assert "float16" in {t.dtype for t in read_tflite(deploy / "devices/cam11.tflite").tensors}

    # MCUs: arena measured in TFLite Micro, within the board's budget, and it runs there.
    mcus = [r for r in rows.values() if r["class"] == "mcu"]
    assert len(mcus) == 5
    for r in mcus:
        e = entries[r["device"]]
        assert 0 < r["tflm_arena_bytes"] <= r["arena_budget_bytes"] == e["memory_budget_bytes"]
        assert e["tflm_arena_bytes"] == r["tflm_arena_bytes"]
        assert e["checks"]["tflite_micro"]["ok"]
        assert probe_arena(deploy / e["artifact"], r["arena_budget_bytes"]).ok
        fw = deploy / "firmware" / r["device"]
        names = sorted(p.name for p in fw.iterdir())
        assert names == sorted(f"{r['device']}_{k}" for k in
                               ("model.h", "model.cc", "arena.h", "ops.h"))
        arena_h = (fw / f"{r['device']}_arena.h").read_text()
        declared = int(re.search(r"ArenaSize = (\d+);", arena_h).group(1))
        assert r["tflm_arena_bytes"] <= declared < r["tflm_arena_bytes"] + 16
        assert "AddConv2D" in (fw / f"{r['device']}_ops.h").read_text()
        assert {f["path"] for f in e["firmware"]} == {f"firmware/{r['device']}/{n}"
                                                      for n in names}
    for r in rows.values():
        if r["class"] != "mcu":
            assert r["tflm_arena_bytes"] is None and r["firmware_files"] is None

    # Edge TPU boards: static artifact checked, readiness recorded, compiler absence said.
    for dev in ("cam09", "cam10"):
        tpu = entries[dev]["checks"]["edgetpu"]
        assert tpu["ready"] is True and tpu["first_cpu_op"] is None
        assert rows[dev]["edgetpu"] == "ready"
    assert any("Edge TPU compiler" in n for n in s["notes"])

    # The static artifacts reproduce the ladder's cached features: int8 of every level, and
    # the Jetson Nano's float16 file (level 2) bit for bit.
    assert set(s["static_vs_cached"]) == {"0", "1", "2", "2/float16"}
    for key, c in s["static_vs_cached"].items():
        if key == "2/float16":
            assert c["quantization_equal"] and c["equal_fraction"] == 1.0 and c["max_abs"] == 0
        else:
            assert (c["quantization_equal"] and c["max_lsb"] <= 1
                    and c["equal_fraction"] >= 0.999)

    # Aggregator: float32 head, the ladder's classifier, pooling and the measured agreement.
    agg = manifest["aggregator"]
    assert agg["board"] == "jetson_orin_nano" and agg["pooling"] == tiny_ladder.manifest[
        "pool_mode"]
    assert {h["path"] for h in agg["head"]} == {"aggregator/head.tflite",
                                                "aggregator/classifier.npz",
                                                "aggregator/head.json"}
    head_json = json.loads((deploy / "aggregator/head.json").read_text())
    assert head_json["export_checks"]["system_agreement"]["agreement"] == s["agreement"]
    assert head_json["export_checks"]["gate"] == s["gate"] and s["gate"]["ok"]
    assert head_json["view_device"] == [f"cam{v:02d}" for v in range(12)]
    assert s["head"]["tflite_vs_classifier_max_abs_logit"] < 1e-4
    # cam11 runs float16: exactness holds for every device against the ladder's cache of its
    # feature variant (float16; TFLite Micro's int8 for the MCUs), end to end against the
    # evaluator.
    devices = s["gate"]["exactness"]["devices"]
    assert not devices["cam11"]["int8"] and sum(e["int8"] for e in devices.values()) == 11
    assert devices["cam11"]["variant"] == "float16" and devices["cam11"]["exact"]
    assert {devices[f"cam0{v}"]["variant"] for v in range(5)} == {"int8-tflm"}
    assert s["gate"]["exactness"]["reference"] == "evaluator"
    assert manifest["provenance"]["dataset_sha256"] == tiny_ladder.manifest["dataset_hash"]
    assert manifest["provenance"]["ladder_sha256"] == sha256_file(
        tiny_ladder.ladder / "manifest.json")

    # Key: generated beside the deployment, only the public key inside it.
    keys = work / "keys"
    assert s["key"]["generated"] and Path(s["key"]["private_key"]) == keys / "private_key.pem"
    assert not list(deploy.rglob("private_key.pem"))
    assert (deploy / "public_key.pem").read_bytes() == (keys / "public_key.pem").read_bytes()
    assert verify_deployment(deploy, keys / "public_key.pem").ok
    assert any("generated a new key pair" in n for n in s["notes"])

    table = markdown_table(s)
    for dev in rows:
        assert f"| {dev} |" in table
    assert "Deploy gate: passed." in table and "raw top-1 agreement" in table
    # The same table, read back from the signed deployment alone.
    assert markdown_table(summary_from_deployment(deploy)) == table
    tool = subprocess.run([sys.executable, str(ROOT / "tools" / "export_table.py"), str(deploy)],
                          capture_output=True, text=True, timeout=120)
    assert tool.returncode == 0 and tool.stdout == table


def test_agreement_is_measured(exported, tiny_ladder):
    """Recompute the system agreement independently: each device's file in LiteRT, pooled by
    the core, Keras classifier; against each view's branch.keras in float."""
    import keras

    from slimedge.model.head import classify_pooled
    from slimedge.model.mvcnn import branch_features
    from slimedge.runtime.branch import BranchRunner

    work, s = exported
    deploy, ladder, ds = work / "deploy", tiny_ladder.ladder, tiny_ladder.dataset
    images, labels = ds.subset("test")
    images = np.asarray(images)
    head = keras.saving.load_model(ladder / "head.keras", compile=False)
    mode = tiny_ladder.manifest["pool_mode"]
    dev_feats, float_feats = [], []
    for v in range(12):
        out = BranchRunner(deploy / "devices" / f"cam{v:02d}.tflite").run(images[:, v])
        if out.scale is None:
            dev_feats.append(out.features)
        else:
            dev_feats.append(np.float32(out.scale) * (out.features.astype(np.float32)
                                                      - out.zero_point))
        level = MIXED_LEVELS[v]
        branch = keras.saving.load_model(ladder / "levels" / f"L{level:02d}" / "branch.keras",
                                         compile=False)
        float_feats.append(branch_features(branch, images[:, v : v + 1])[:, 0])
    live = np.ones(12, bool)
    pooled_d, _ = _core.pool(np.stack(dev_feats, 1), live, mode=mode)
    pooled_f, _ = _core.pool(np.stack(float_feats, 1), live, mode=mode)
    pred_d = np.argmax(classify_pooled(head, pooled_d), 1)
    pred_f = np.argmax(classify_pooled(head, pooled_f), 1)
    assert s["agreement"] == pytest.approx(np.mean(pred_d == pred_f))
    assert s["agreement_detail"]["frames"] == len(labels)
    assert s["agreement_detail"]["float_accuracy"] == pytest.approx(np.mean(pred_f == labels))
    gate = s["gate"]
    assert gate["float_accuracy"] == pytest.approx(np.mean(pred_f == labels))
    assert gate["int8_accuracy"] == pytest.approx(np.mean(pred_d == labels))
    margins = np.sort(classify_pooled(head, pooled_f), 1)
    margins = margins[:, -1] - margins[:, -2]
    assert gate["margin_quantiles"]["q50"] == pytest.approx(np.median(margins), rel=1e-4)
    # One device's feature error, recomputed: cam11 runs float16, so it is small.
    f = float_feats[11]
    want = np.max(np.abs(dev_feats[11] - f)) / np.max(np.abs(f))
    assert s["devices"][11]["feature_error_max"] == pytest.approx(want, rel=1e-4)


def test_tampered_artifact_fails_verify(exported, tmp_path, capsys):
    work, _ = exported
    copy = tmp_path / "deploy"
    shutil.copytree(work / "deploy", copy)
    target = copy / "devices" / "cam02.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "devices/cam02.tflite" in err and "changed since signing" in err
    with pytest.raises(ExportError, match="devices/cam02.tflite"):
        summary_from_deployment(copy)
    assert main(["verify", str(work / "deploy"), "--no-load"]) == 0


def test_misfit_is_named_and_nothing_is_written(exported, tiny_ladder, tmp_path):
    """A level that does not fit an MCU: bytes needed vs available, previous deployment kept."""
    work, _ = exported
    out = tmp_path / "deploy"
    shutil.copytree(work / "deploy", out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fleet = _write_fleet(tmp_path / "tight.yaml",
                         [TIGHT_SRAM, "{id: pi, board: rpi4b, views: [6, 7, 8, 9, 10, 11]}"])
    with pytest.raises(ExportError, match=r"mcu \(nrf52840\): level 0 \(0\) needs [\d,]+ B of "
                       r"arena, has 3,072 B"):
        export_deployment(fleet, tiny_ladder.ladder, [0] * 12, out,
                          dataset=tiny_ladder.root / "dataset", progress=False)
    # No level fits at all: the default least-pruned assignment says so, with bytes.
    with pytest.raises(ExportError, match=r"device mcu: no level fits; mcu \(nrf52840\): level "
                       r"2 \(0.75\) needs [\d,]+ B of arena, has 3,072 B"):
        export_deployment(fleet, tiny_ladder.ladder, None, out,
                          dataset=tiny_ladder.root / "dataset", progress=False)
    # --allow-misfit cannot ship an arena the board cannot hold: TFLite Micro is run with the
    # board's budget and the export fails naming both sizes.
    with pytest.raises(ExportError, match=r"device mcu \(nrf52840\): level 2 \(0.75\) needs a "
                       r"[\d,]+ B TFLite Micro arena, the board's arena budget is 3,072 B"):
        export_deployment(fleet, tiny_ladder.ladder, [2] * 12, out,
                          dataset=tiny_ladder.root / "dataset", allow_misfit=True,
                          progress=False)
    # A format the board does not accept.
    with pytest.raises(ExportError, match=r"device cam00: board 'esp32s3' does not accept "
                       r"format 'float16'"):
        export_deployment("mixed12", tiny_ladder.ladder, [0] * 12, out, progress=False,
                          dataset=tiny_ladder.root / "dataset", formats={"cam00": "float16"})
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy", "tight.yaml"]


def test_least_pruned_levels(tiny_ladder, tmp_path):
    from slimedge.devices.cost import CostTable, least_pruned_fitting_level
    from slimedge.devices.fleet import load_fleet, resolve_fleet_path

    m = tiny_ladder.manifest
    levels = least_pruned_levels("mixed12", m)
    fleet = load_fleet(resolve_fleet_path("mixed12"))
    table = CostTable.build(m["levels"], fleet, m["feature_dim"])
    assert levels == [least_pruned_fitting_level(table, f"cam{v:02d}") for v in range(12)]
    # A board whose arena fits only the most pruned level raises its views (and a view it
    # shares with another device) to that level.
    arena = [e["tflm_arena_bytes"] for e in m["levels"]]
    sram = int((arena[-1] + arena[-2]) / 2 / 0.75)  # nrf52840 keeps 75% of SRAM for the arena
    mid = (f"{{id: mcu, board: nrf52840, views: [0, 1], overrides: {{memory.sram: {{value: "
           f"{sram}, unit: B, source: 'test', reason: 'small SRAM'}}}}}}")
    fleet_path = _write_fleet(tmp_path / "mid.yaml", [
        mid, "{id: pi, board: rpi4b, views: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}"])
    levels = least_pruned_levels(fleet_path, m)
    last = len(m["levels"]) - 1
    assert levels == [last] * 12  # pi shares view 1 with the MCU, so it runs that level too


def test_dataset_mismatch_is_an_error(exported, tiny_ladder, tmp_path):
    from slimedge.data.generator import GeneratorConfig, generate

    other = generate(GeneratorConfig.tiny(classes=("chair", "table", "cup", "monitor"),
                                          objects_per_class=12, image_size=16, seed=99),
                     workers=1, progress=False)
    other.save(tmp_path / "other")
    with pytest.raises(ExportError, match=r"other: dataset content hash \w+ does not match the "
                       r"ladder's dataset_hash"):
        export_deployment("mixed12", tiny_ladder.ladder, [0] * 12, tmp_path / "deploy",
                          dataset=tmp_path / "other", progress=False)
    assert not (tmp_path / "deploy").exists()
    # An output directory that is not a deployment is never replaced.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="notes: exists and is not a deployment directory"):
        export_deployment("mixed12", tiny_ladder.ladder, [0] * 12, tmp_path / "notes",
                          dataset=tiny_ladder.root / "dataset", progress=False)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_plan_drives_the_export(tiny_ladder, tmp_path):
    """Levels and devices come from the plan's views[*]; its contingency reaches the
    aggregator; the dataset is found beside the ladder; a given key signs."""
    fleet = _write_fleet(tmp_path / "duo.yaml", [
        "{id: pi, board: rpi4b, views: [0, 1, 2, 3, 4, 5]}",
        "{id: tpu, board: coral_devboard, views: [6, 7, 8, 9, 10, 11]}"],
        aggregator="{board: jetson_orin_nano}")
    contingency = {"k": 1, "rows": [{"dead": [3], "weights": [1.0] * 12}]}
    # The planner may place a view elsewhere than the fleet file's camera: view 5 -> tpu.
    plan = {"views": [{"view": v, "level_index": 2 if v < 5 else 1,
                       "level": [0.75, 0.5][v >= 5], "device": "pi" if v < 5 else "tpu"}
                      for v in range(12)],
            "contingency": contingency}
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    private, public = signing.generate_keys(tmp_path / "mykeys")
    out = tmp_path / "deploy"
    s = export_deployment(fleet, tiny_ladder.ladder, None, out, plan=plan_path,
                          key_path=private, progress=False, min_agreement=1.0)
    assert s["levels"] == [2] * 5 + [1] * 7 and s["level_source"] == "plan"
    assert s["dataset"] == str(tiny_ladder.root / "dataset")
    rows = {r["device"]: r for r in s["devices"]}
    assert rows["pi"]["level_index"] == 2 and rows["tpu"]["level_index"] == 1
    assert rows["pi"]["views"] == [0, 1, 2, 3, 4] and rows["tpu"]["views"] == list(range(5, 12))
    assert any("plan places view 5 on tpu" in n for n in s["notes"])
    m = json.loads((out / "manifest.json").read_text())
    assert m["provenance"]["plan_sha256"] == sha256_file(plan_path)
    assert m["aggregator"]["contingency_table"]["path"] == "aggregator/contingency.json"
    assert json.loads((out / "aggregator/contingency.json").read_text()) == contingency
    assert not s["key"]["generated"] and not (tmp_path / "keys").exists()
    assert verify_deployment(out, public).ok
    assert s["verified"] and s["gate"]["ok"]
    # --min-agreement is informational: below it, a warning; never a failure.
    assert any("is below --min-agreement 100.00%" in w for w in s["warnings"]) == (
        s["agreement"] < 1.0)

    # Bad plans are named by file and field; a plan and levels together are refused.
    for views, match in (
        ([{"view": 0, "level_index": 9, "device": "pi"}], r"views\[0\].level_index: 9"),
        ([{"view": 0, "level_index": 0, "device": "cam99"}], r"views\[0\].device: 'cam99'"),
        ([{"view": v, "level_index": 0, "device": "pi"} for v in range(11)],
         r"view\(s\) \[11\] have no entry"),
        ([{"view": 0, "level_index": 0, "device": "pi"},
          {"view": 1, "level_index": 1, "device": "pi"}]
         + [{"view": v, "level_index": 0, "device": "tpu"} for v in range(2, 12)],
         r"device pi \(rpi4b\) runs views \[0, 1\] at levels \[0, 1\]"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"views": views}))
        with pytest.raises(ExportError, match=match):
            export_deployment(fleet, tiny_ladder.ladder, None, tmp_path / "x", plan=bad,
                              key_path=private, progress=False)
    with pytest.raises(ExportError, match="not both"):
        export_deployment(fleet, tiny_ladder.ladder, [0] * 12, tmp_path / "x", plan=plan_path,
                          progress=False)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- agreement parts


def test_pool_views_mixes_int8_and_float_like_the_core():
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (5, 3, 4)).astype(np.int8)
    scale = np.array([0.1, 0.02, 0.5], np.float32)
    zp = np.array([-128, 3, 0], np.int32)
    views = [ViewFeatures(q[:, v], float(scale[v]), int(zp[v])) for v in range(3)]
    for mode in ("max", "mean"):
        want, _ = _core.pool(q, np.ones(3, bool), mode=mode, scale=scale, zero_point=zp)
        got, _ = pool_views(views, mode)
        np.testing.assert_array_equal(got, want)
        # A float view among int8 ones: int8 views dequantized by the core, pooled as float.
        mixed = [views[0], ViewFeatures(views[1].dequantized()), views[2]]
        np.testing.assert_allclose(pool_views(mixed, mode)[0], want, rtol=1e-6)
    # A dead view (None) is left out.
    got, empty = pool_views([views[0], None, views[2]], "max")
    want, _ = _core.pool(q, np.array([1, 0, 1], bool), mode="max", scale=scale, zero_point=zp)
    np.testing.assert_array_equal(got, want)
    assert not empty.any()


def test_feature_error_and_agreement_report():
    f = np.array([[0.0, 1.0], [2.0, -4.0]], np.float32)
    q = ViewFeatures(np.array([[0, 10], [20, -39]], np.int8), 0.1, 0)
    e = feature_error([q], [f])
    assert e.full_scale == 4.0 and e.max_abs == pytest.approx(0.1)
    assert e.max_rel == pytest.approx(0.025) and e.max_lsb == pytest.approx(1.0)
    assert e.mean_rel == pytest.approx(0.1 / 4 / 4)
    a = agreement(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 0]), np.array([0, 1, 1, 3]))
    assert a.agreement == 0.75 and a.disagreeing == (3,) and a.ok  # no floor asked
    assert a.device_accuracy == 0.75 and a.float_accuracy == 0.5
    assert not agreement(np.array([0, 1]), np.array([0, 0]), np.array([0, 1]),
                         threshold=0.9).ok
    with pytest.raises(ExportError, match=r"agreement: predictions \(2,\) vs \(3,\)"):
        agreement(np.zeros(2), np.zeros(3), np.zeros(2))


def test_edgetpu_readiness_cell_names_the_first_cpu_op(exported):
    """The Coral boards' int8 artifacts are reported ready; a model the Edge TPU cannot take
    whole (the Jetson's float16 artifact, put through the same check) is reported with the
    first op that falls back to the CPU."""
    from slimedge.export.edgetpu import check_edgetpu

    work, s = exported
    cells = {r["device"]: r["edgetpu"] for r in s["devices"]}
    assert cells["cam09"] == cells["cam10"] == "ready"  # coral_devboard, coral_usb_pi4
    assert all(cells[d] is None for d in cells if d not in ("cam09", "cam10"))
    path = work / "deploy" / "devices" / "cam11.tflite"
    first = check_edgetpu(path).to_dict()["first_unsupported"]
    assert first is not None
    cell = edgetpu_cell({"edgetpu": deploy_mod.edgetpu_check(path)})
    assert cell == f"CPU from op {first['index']} {first['op']}"


def test_export_twice_gives_the_same_artifact_bytes(exported, tiny_ladder, tmp_path):
    """The same ladder, levels and board formats exported again (later in the same process,
    after other conversions) give byte-identical device artifacts and firmware files: an
    unchanged device keeps its model hash across deployments, so a push can leave it alone."""
    work, _ = exported
    again = tmp_path / "again"
    export_deployment("mixed12", tiny_ladder.ladder, MIXED_LEVELS, again,
                      dataset=tiny_ladder.root / "dataset", progress=False)
    first = json.loads((work / "deploy" / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    a = {d["device"]: d for d in first["devices"]}
    b = {d["device"]: d for d in second["devices"]}
    assert a.keys() == b.keys() and len(a) == 12
    for dev in a:
        assert b[dev]["sha256"] == a[dev]["sha256"] == sha256_file(again / b[dev]["artifact"]), dev
        assert b[dev].get("firmware") == a[dev].get("firmware"), dev
