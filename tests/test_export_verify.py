"""Verification of a small real deployment (an MCU int8 branch with its firmware bundle and a
float32 branch, converted from a tiny Keras model): it verifies, every kind of tampering fails
with a message naming the cause, and the verifier runs with TensorFlow blocked."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from slimedge.export import ExportError, VerifyError, commands, signing
from slimedge.export.manifest import (
    MANIFEST_NAME,
    PUBLIC_KEY_NAME,
    SIGNATURE_NAME,
    AggregatorEntry,
    DeploymentManifest,
    DeviceEntry,
    FileEntry,
    Provenance,
    write_deployment_manifest,
)
from slimedge.export.verify import verify_deployment

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """A signed deployment, written once; tests tamper with copies of it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from slimedge.artifacts import sha256_file
    from slimedge.convert import to_tflite
    from slimedge.devices import load_catalog
    from slimedge.export.firmware import write_firmware_bundle
    from slimedge.profile.tflm import measure_arena

    base = tmp_path_factory.mktemp("verify")
    root = base / "deploy"
    (root / "devices").mkdir(parents=True)
    keras.utils.set_random_seed(0)
    branch = keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(8),
    ])
    rep = np.random.default_rng(0).random((8, 16, 16, 1), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        (root / "devices" / "cam00.tflite").write_bytes(to_tflite(branch, "int8", rep))
    (root / "devices" / "cam01.tflite").write_bytes(to_tflite(branch, "float32"))
    head = keras.Sequential([keras.Input((2, 8)), keras.layers.Flatten(), keras.layers.Dense(3)])
    (root / "aggregator").mkdir()
    with warnings.catch_warnings():  # Keras' own numpy-2 deprecation notice while saving
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        head.save(root / "aggregator" / "head.keras")
    (root / "aggregator" / "contingency.json").write_text(json.dumps({"(1,)": [0.0, 1.0]}))

    catalog = load_catalog()
    mcu_board, pi_board = catalog["esp32s3"], catalog["rpi4b"]
    arena = measure_arena(root / "devices" / "cam00.tflite")
    fw = write_firmware_bundle(root / "devices" / "cam00.tflite", root / "firmware" / "cam00",
                               name="cam00", arena_bytes=arena, board_id=mcu_board.id)
    manifest = DeploymentManifest(
        deployment_id="test-deploy",
        created="2025-01-01T00:00:00Z",
        provenance=Provenance(ladder_sha256=sha256_file(root / "aggregator" / "head.keras")),
        aggregator=AggregatorEntry(
            pooling="max", head=(FileEntry("aggregator/head.keras"),), host="gateway-01",
            contingency_table=FileEntry("aggregator/contingency.json")),
        devices=(
            DeviceEntry(
                device="cam00", board=mcu_board.id, views=(0,), level=0.5, level_index=1,
                format="int8", runtime=mcu_board.runtime, artifact="devices/cam00.tflite",
                memory_budget_bytes=mcu_board.model_memory_bytes,
                memory_margin_bytes=mcu_board.model_memory_bytes - arena,
                tflm_arena_bytes=arena,
                firmware=tuple(FileEntry(f"firmware/cam00/{f['path']}") for f in fw["files"]),
            ),
            DeviceEntry(
                device="cam01", board=pi_board.id, views=(1,), level=0.0, level_index=0,
                format="float32", runtime=pi_board.runtime, artifact="devices/cam01.tflite",
                memory_budget_bytes=pi_board.model_memory_bytes,
            ),
        ),
    )
    private, public = signing.generate_keys(base / "keys")
    write_deployment_manifest(root, manifest, private)
    return {"root": root, "private": private, "public": public, "base": base}


@pytest.fixture
def deploy(pristine, tmp_path) -> Path:
    copy = tmp_path / "deploy"
    shutil.copytree(pristine["root"], copy)
    return copy


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def resign(deploy: Path, private: Path, edit) -> None:
    """Change the manifest and sign it with the real key: what a buggy or compromised
    producer could ship. Checks after the signature must still catch the change."""
    raw = json.loads((deploy / MANIFEST_NAME).read_text())
    edit(raw)
    data = (json.dumps(raw, indent=2) + "\n").encode()
    (deploy / MANIFEST_NAME).write_bytes(data)
    (deploy / SIGNATURE_NAME).write_bytes(signing.sign(signing.load_private_key(private), data))


def only_failure(report) -> str:
    assert not report.ok
    assert len(report.failures) == 1, report.failures
    return report.failures[0]


# --------------------------------------------------------------------------- passing


def test_pristine_deployment_verifies(pristine):
    report = verify_deployment(pristine["root"], pristine["public"])
    assert report.ok, report.failures
    summary = report.to_dict()
    assert summary["signature"]["status"] == "ok"
    assert summary["key"]["source"] == "argument"
    assert summary["key"]["proves"].startswith("origin and integrity")
    cam00 = {c["check"]: c for c in summary["devices"]["cam00"]["checks"]}
    assert cam00["artifact"]["status"] == "ok"
    assert [k for k in cam00 if k.startswith("firmware[")] == [f"firmware[{i}]" for i in range(4)]
    assert cam00["litert"]["status"] == "ok" and "invoked once" in cam00["litert"]["message"]
    assert cam00["tflite-micro"]["status"] == "ok"
    from slimedge.devices import load_catalog

    budget = load_catalog()["esp32s3"].model_memory_bytes
    assert f"{budget}-byte arena limit" in cam00["tflite-micro"]["message"]
    cam01 = {c["check"]: c for c in summary["devices"]["cam01"]["checks"]}
    assert cam01["litert"]["status"] == "ok" and "tflite-micro" not in cam01
    assert summary["aggregator"]["ok"] and summary["unlisted_files"] == []


def test_shipped_key_is_used_and_said_to_prove_integrity_only(pristine):
    report = verify_deployment(pristine["root"], load_artifacts=False)
    assert report.ok, report.failures
    assert report.key["source"] == "deployment"
    assert report.key["path"].endswith(PUBLIC_KEY_NAME)
    assert report.key["proves"].startswith("integrity only")


def test_device_option_checks_one_entry(pristine):
    report = verify_deployment(pristine["root"], pristine["public"], device="cam01")
    assert report.ok and [d.name for d in report.devices] == ["cam01"]
    assert report.aggregator is None
    missing = verify_deployment(pristine["root"], pristine["public"], device="cam09",
                                load_artifacts=False)
    assert "device 'cam09': not in deployment 'test-deploy' (devices: cam00, cam01)" in \
        only_failure(missing)


def test_a_device_checks_only_its_own_files(deploy, pristine):
    flip_byte(deploy / "devices" / "cam00.tflite")
    assert verify_deployment(deploy, pristine["public"], device="cam01").ok
    assert not verify_deployment(deploy, pristine["public"], device="cam00",
                                 load_artifacts=False).ok


# --------------------------------------------------------------------------- tampering


def test_changed_manifest_byte_fails_the_signature(deploy, pristine):
    path = deploy / MANIFEST_NAME
    path.write_bytes(path.read_bytes().replace(b'"level_index": 1', b'"level_index": 2'))
    report = verify_deployment(deploy, pristine["public"], load_artifacts=False)
    msg = only_failure(report)
    assert "manifest.json: signature in manifest.sig does not verify with public key" in msg
    assert report.signature.status == "failed" and report.devices == []


def test_changed_artifact_byte_names_file_and_hashes(deploy, pristine):
    from slimedge.artifacts import sha256_file

    expected = sha256_file(deploy / "devices" / "cam01.tflite")
    flip_byte(deploy / "devices" / "cam01.tflite", 100)
    actual = sha256_file(deploy / "devices" / "cam01.tflite")
    report = verify_deployment(deploy, pristine["public"])
    msg = only_failure(report)
    assert msg == (f"devices/cam01.tflite (device cam01, artifact): changed since signing: "
                   f"sha256: manifest says {expected}, file has {actual}")
    checks = {c.name: c.status for c in report.devices[1].checks}
    assert checks == {"artifact": "failed", "load": "skipped"}


def test_changed_firmware_file_fails(deploy, pristine):
    path = deploy / "firmware" / "cam00" / "cam00_model.cc"
    path.write_text(path.read_text() + "// extra\n")
    msg = only_failure(verify_deployment(deploy, pristine["public"], load_artifacts=False))
    assert msg.startswith("firmware/cam00/cam00_model.cc (device cam00, firmware[1]): changed "
                          "since signing: size: manifest says")


def test_changed_signature_byte_fails(deploy, pristine):
    flip_byte(deploy / SIGNATURE_NAME, 10)
    msg = only_failure(verify_deployment(deploy, pristine["public"], load_artifacts=False))
    assert "signature in manifest.sig does not verify" in msg


def test_truncated_signature_says_so(deploy, pristine):
    sig = deploy / SIGNATURE_NAME
    sig.write_bytes(sig.read_bytes()[:40])
    msg = only_failure(verify_deployment(deploy, pristine["public"], load_artifacts=False))
    assert "(manifest.sig has 40 bytes, an Ed25519 signature has 64)" in msg


def test_swapped_public_key_fails_naming_both_keys(deploy, pristine, tmp_path):
    _, other = signing.generate_keys(tmp_path / "other")
    other_fp = signing.fingerprint(signing.load_public_key(other))
    real_fp = signing.fingerprint(signing.load_public_key(pristine["public"]))
    msg = only_failure(verify_deployment(deploy, other, load_artifacts=False))
    assert f"does not verify with public key {other_fp} (argument: {other})" in msg
    assert f"the manifest names signing key {real_fp}" in msg


def test_replaced_shipped_key_fails(deploy, pristine, tmp_path):
    _, other = signing.generate_keys(tmp_path / "other")
    shutil.copy(other, deploy / PUBLIC_KEY_NAME)
    msg = only_failure(verify_deployment(deploy, load_artifacts=False))
    assert "(deployment: " in msg and "does not verify" in msg


def test_removed_artifact_fails(deploy, pristine):
    (deploy / "devices" / "cam00.tflite").unlink()
    msg = only_failure(verify_deployment(deploy, pristine["public"]))
    assert msg == ("devices/cam00.tflite (device cam00, artifact): missing: the file listed in "
                   "the manifest does not exist")


def test_parent_path_fails_even_when_signed(deploy, pristine):
    shutil.copy(deploy / "devices" / "cam01.tflite", deploy.parent / "evil.tflite")

    def escape(raw):
        raw["devices"][1]["artifact"] = "../evil.tflite"

    resign(deploy, pristine["private"], escape)
    msg = only_failure(verify_deployment(deploy, pristine["public"], load_artifacts=False))
    assert msg.endswith("devices[1].artifact: '../evil.tflite' escapes the deployment "
                        "directory ('..')")


def test_absolute_path_fails_even_when_signed(deploy, pristine):
    def absolute(raw):
        raw["aggregator"]["head"][0]["path"] = "/etc/hostname"

    resign(deploy, pristine["private"], absolute)
    msg = only_failure(verify_deployment(deploy, pristine["public"], load_artifacts=False))
    assert "aggregator.head[0].path: '/etc/hostname' is an absolute path" in msg


def test_symlink_out_of_the_deployment_fails(deploy, pristine):
    target = deploy.parent / "outside.tflite"
    shutil.move(deploy / "devices" / "cam01.tflite", target)
    (deploy / "devices" / "cam01.tflite").symlink_to(target)  # same bytes, same hash
    msg = only_failure(verify_deployment(deploy, pristine["public"], load_artifacts=False))
    assert msg.startswith("devices/cam01.tflite (device cam01, artifact): devices/cam01.tflite "
                          f"is a symbolic link (to {target})")


def test_model_over_the_arena_budget_fails_in_tflite_micro(deploy, pristine):
    def tiny_budget(raw):
        raw["devices"][0]["memory_budget_bytes"] = 1000

    resign(deploy, pristine["private"], tiny_budget)
    report = verify_deployment(deploy, pristine["public"], device="cam00")
    msg = only_failure(report)
    assert msg.startswith("device cam00: devices/cam00.tflite: does not run in TFLite Micro "
                          "within board esp32s3's arena budget of 1000 bytes")


def test_unlisted_files_are_reported_not_failed(deploy, pristine):
    (deploy / "devices" / "stray.bin").write_bytes(b"?")
    report = verify_deployment(deploy, pristine["public"], load_artifacts=False)
    assert report.ok and report.unlisted_files == ["devices/stray.bin"]


def test_missing_pieces(deploy, pristine, tmp_path):
    assert "no such deployment directory" in only_failure(
        verify_deployment(tmp_path / "nowhere", pristine["public"]))
    (deploy / PUBLIC_KEY_NAME).unlink()
    assert "no public key given and no public_key.pem" in only_failure(
        verify_deployment(deploy, load_artifacts=False))
    (deploy / SIGNATURE_NAME).unlink()
    assert only_failure(verify_deployment(deploy, pristine["public"])).endswith(
        "manifest.sig: missing")


# --------------------------------------------------------------------------- CLI handlers


def _parse(add, argv):
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args(argv)


def test_verify_handler(deploy, pristine):
    args = _parse(commands.add_verify_options,
                  [str(deploy), "--public-key", str(pristine["public"]), "--device", "cam01"])
    summary = commands.verify(args)
    assert summary["ok"] and list(summary["devices"]) == ["cam01"]
    assert summary["key"]["source"] == "argument"
    flip_byte(deploy / "devices" / "cam01.tflite")
    args = _parse(commands.add_verify_options, [str(deploy), "--public-key",
                                                str(pristine["public"]), "--no-load"])
    with pytest.raises(VerifyError, match=r"verification failed \(1 problem\): devices/cam01"
                       r"\.tflite \(device cam01, artifact\): changed since signing"):
        commands.verify(args)


def test_keys_generate_handler(tmp_path):
    args = _parse(commands.add_keys_generate_options, ["--out", str(tmp_path / "k")])
    summary = commands.keys_generate(args)
    assert Path(summary["private_key"]).is_file() and summary["fingerprint"].startswith("ed25519:")
    with pytest.raises(ExportError, match="refusing to overwrite"):
        commands.keys_generate(args)
    again = commands.keys_generate(_parse(commands.add_keys_generate_options,
                                          ["--out", str(tmp_path / "k"), "--force"]))
    assert again["fingerprint"] != summary["fingerprint"]


# --------------------------------------------------------------------------- no TensorFlow

_NO_TF = r"""
import importlib.abc, json, sys
sys.path.insert(0, {tools!r})
import device_smoke
sys.meta_path.insert(0, device_smoke.BlockTensorFlow())
BLOCK_TFLM = {block_tflm!r}

class BlockTFLM(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] == "tflite_micro":
            raise ImportError(fullname + " is blocked")
        return None

if BLOCK_TFLM:
    sys.meta_path.insert(0, BlockTFLM())
from slimedge.export.verify import verify_deployment
report = verify_deployment({root!r}, {key!r})
bad = [m for m in sys.modules if device_smoke._is_blocked(m)]
print(json.dumps({{"report": report.to_dict(), "leaked": bad}}))
"""


@pytest.mark.parametrize("block_tflm", [False, True])
def test_verify_runs_with_tensorflow_blocked(pristine, block_tflm):
    code = _NO_TF.format(tools=str(ROOT / "tools"), block_tflm=block_tflm,
                         root=str(pristine["root"]), key=str(pristine["public"]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["leaked"] == []
    report = out["report"]
    assert report["ok"], report["failures"]
    cam00 = {c["check"]: c for c in report["devices"]["cam00"]["checks"]}
    assert cam00["litert"]["status"] == "ok"
    if block_tflm:
        assert cam00["tflite-micro"]["status"] == "skipped"
        assert "tflite_micro is not installed" in cam00["tflite-micro"]["message"]
    else:
        assert cam00["tflite-micro"]["status"] == "ok"


def test_blocker_really_blocks_tensorflow():
    """The test above could not pass by accident: the hook refuses tensorflow and keras."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r})\n"
            "import device_smoke\n"
            "sys.meta_path.insert(0, device_smoke.BlockTensorFlow())\n"
            "for name in ('tensorflow', 'keras'):\n"
            "    try:\n"
            "        __import__(name)\n"
            "    except ImportError:\n"
            "        continue\n"
            "    raise SystemExit(name + ' imported')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
