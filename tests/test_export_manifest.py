"""Deployment manifest format, Ed25519 keys, and the signed, atomic manifest writer."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from slimedge.export import ExportError, signing
from slimedge.export.manifest import (
    FORMAT,
    MANIFEST_NAME,
    PUBLIC_KEY_NAME,
    SIGNATURE_NAME,
    AggregatorEntry,
    DeploymentManifest,
    DeviceEntry,
    FileEntry,
    ManifestError,
    Provenance,
    write_deployment_manifest,
)

LADDER = hashlib.sha256(b"ladder").hexdigest()


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    return signing.generate_keys(tmp_path / "keys")


@pytest.fixture
def deploy(tmp_path) -> Path:
    root = tmp_path / "deploy"
    files = {
        "devices/cam00.tflite": b"\x00TFL3 mcu model bytes",
        "devices/cam01.tflite": b"\x00TFL3 pi model bytes, a little longer",
        "firmware/cam00/cam00_model.cc": b"// model array\n",
        "aggregator/head.keras": b"head weights",
        "aggregator/contingency.json": b'{"table": []}\n',
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def draft(**device_overrides) -> DeploymentManifest:
    mcu = DeviceEntry(
        device="cam00", board="esp32s3", views=(0,), level=0.5, level_index=3, format="int8",
        runtime="tflite-micro", artifact="devices/cam00.tflite", predicted_latency_ms=41.0,
        memory_budget_bytes=300_000, memory_margin_bytes=200_000, tflm_arena_bytes=100_000,
        firmware=(FileEntry("firmware/cam00/cam00_model.cc"),),
    )
    pi = DeviceEntry(
        device="cam01", board="rpi4b", views=(1, 2), level=0.0, level_index=0,
        format="float32", runtime="litert", artifact="devices/cam01.tflite",
        predicted_latency_ms=3.5, memory_budget_bytes=1 << 29, memory_margin_bytes=1 << 28,
        checks={"max_abs_error_vs_keras": 1e-6},
    )
    if device_overrides:
        pi = DeviceEntry(**{**pi.__dict__, **device_overrides})
    return DeploymentManifest(
        deployment_id="mixed12-test",
        created="2025-01-01T00:00:00Z",
        provenance=Provenance(ladder_sha256=LADDER, slimedge_version="0.1.0"),
        aggregator=AggregatorEntry(
            pooling="max", head=(FileEntry("aggregator/head.keras"),), board="jetson_orin_nano",
            contingency_table=FileEntry("aggregator/contingency.json")),
        devices=(mcu, pi),
    )


# --------------------------------------------------------------------------- keys


def test_generate_keys_modes_and_refusal(tmp_path):
    priv, pub = signing.generate_keys(tmp_path / "k")
    assert priv.name == "private_key.pem" and pub.name == "public_key.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert b"BEGIN PRIVATE KEY" in priv.read_bytes()  # PKCS#8, unencrypted
    assert b"BEGIN PUBLIC KEY" in pub.read_bytes()
    key = signing.load_private_key(priv)
    assert signing.fingerprint(key.public_key()) == signing.fingerprint(
        signing.load_public_key(pub))
    before = priv.read_bytes()
    with pytest.raises(ExportError, match=r"private_key\.pem.*refusing to overwrite"):
        signing.generate_keys(tmp_path / "k")
    assert priv.read_bytes() == before
    signing.generate_keys(tmp_path / "k", force=True)
    assert priv.read_bytes() != before


def test_load_key_errors(tmp_path):
    with pytest.raises(ExportError, match=r"nope\.pem: no such public key file"):
        signing.load_public_key(tmp_path / "nope.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ExportError, match=r"junk\.pem: not a PEM public key"):
        signing.load_public_key(tmp_path / "junk.pem")
    with pytest.raises(ExportError, match=r"junk\.pem: not an unencrypted PEM private key"):
        signing.load_private_key(tmp_path / "junk.pem")


def test_sign_and_verify_bytes(keys):
    priv, pub = keys
    key, public = signing.load_private_key(priv), signing.load_public_key(pub)
    sig = signing.sign(key, b"exact bytes")
    assert len(sig) == 64
    assert signing.verify_signature(public, sig, b"exact bytes")
    assert not signing.verify_signature(public, sig, b"exact bytez")
    assert not signing.verify_signature(public, sig[:-1], b"exact bytes")


# --------------------------------------------------------------------------- writer


def test_writer_hashes_files_from_disk_and_signs(deploy, keys):
    priv, pub = keys
    written = write_deployment_manifest(deploy, draft(), priv)
    data = (deploy / MANIFEST_NAME).read_bytes()
    parsed = DeploymentManifest.from_json(data)
    assert parsed == written
    raw = json.loads(data)
    assert raw["format"] == FORMAT and raw["format_version"] == 1
    for _, entry in parsed.files():
        path = deploy / entry.path
        assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry.bytes == path.stat().st_size
    public = signing.load_public_key(pub)
    assert parsed.signing_key == signing.fingerprint(public)
    assert signing.verify_signature(public, (deploy / SIGNATURE_NAME).read_bytes(), data)
    assert (deploy / PUBLIC_KEY_NAME).read_bytes() == pub.read_bytes()
    assert not [p for p in deploy.iterdir() if ".tmp-" in p.name]


def test_writer_without_shipping_the_key(deploy, keys):
    write_deployment_manifest(deploy, draft(), keys[0], ship_public_key=False)
    assert (deploy / MANIFEST_NAME).is_file() and not (deploy / PUBLIC_KEY_NAME).exists()


def test_writer_rejects_a_caller_hash_that_disagrees_with_the_file(deploy, keys):
    stale = draft(sha256="0" * 64)
    with pytest.raises(ExportError, match=r"cam01\.tflite \(devices\[1\]\.artifact\): caller "
                       r"gave sha256 0{64} but the file has [0-9a-f]{64}"):
        write_deployment_manifest(deploy, stale, keys[0])
    assert not (deploy / MANIFEST_NAME).exists() and not (deploy / SIGNATURE_NAME).exists()


@pytest.mark.parametrize("artifact, message", [
    ("../outside.tflite", r"escapes the deployment directory \('\.\.'\)"),
    ("/etc/passwd", "is an absolute path"),
    ("devices/missing.tflite", "missing: the file listed in the manifest does not exist"),
    ("devices", "not a regular file"),
    ("devices/./cam01.tflite", "has an empty or '.' part"),
])
def test_writer_rejects_bad_paths(deploy, keys, artifact, message):
    (deploy.parent / "outside.tflite").write_bytes(b"x")
    with pytest.raises(ExportError, match=message):
        write_deployment_manifest(deploy, draft(artifact=artifact), keys[0])
    assert not (deploy / MANIFEST_NAME).exists()


def test_writer_rejects_symlinks(deploy, keys):
    outside = deploy.parent / "secret.bin"
    outside.write_bytes(b"secret")
    (deploy / "devices" / "link.tflite").symlink_to(outside)
    with pytest.raises(ExportError, match=r"devices/link\.tflite is a symbolic link"):
        write_deployment_manifest(deploy, draft(artifact="devices/link.tflite"), keys[0])
    os.symlink(deploy.parent, deploy / "up")
    with pytest.raises(ExportError, match=r"'up' is a symbolic link|up is a symbolic link"):
        write_deployment_manifest(deploy, draft(artifact="up/secret.bin"), keys[0])


def test_failed_rewrite_keeps_the_last_good_manifest(deploy, keys):
    write_deployment_manifest(deploy, draft(), keys[0])
    before = {n: (deploy / n).read_bytes() for n in (MANIFEST_NAME, SIGNATURE_NAME)}
    with pytest.raises(ExportError, match=r"devices/gone.tflite \(devices\[1\].artifact\): "
                       r"missing"):
        write_deployment_manifest(deploy, draft(artifact="devices/gone.tflite"), keys[0])
    assert {n: (deploy / n).read_bytes() for n in before} == before


def test_writer_takes_numpy_numbers_and_rejects_non_json(deploy, keys):
    import numpy as np

    written = write_deployment_manifest(
        deploy, draft(level=np.float32(0.25), level_index=np.int64(2), views=(np.int64(1),)),
        keys[0])
    assert written.devices[1].level == 0.25 and written.devices[1].level_index == 2
    parsed = DeploymentManifest.from_json((deploy / MANIFEST_NAME).read_bytes())
    assert parsed.devices[1].views == (1,)
    with pytest.raises(ExportError, match=r"manifest\.json: the manifest is not plain JSON"):
        write_deployment_manifest(deploy, draft(checks={"err": float("nan")}), keys[0])


def test_writer_needs_a_directory_and_a_key(tmp_path, keys):
    with pytest.raises(ExportError, match="no such deployment directory"):
        write_deployment_manifest(tmp_path / "none", draft(), keys[0])
    (tmp_path / "d").mkdir()
    with pytest.raises(ExportError, match=r"nokey\.pem: no such private key file"):
        write_deployment_manifest(tmp_path / "d", draft(), tmp_path / "nokey.pem")


# --------------------------------------------------------------------------- format


@pytest.fixture
def valid(deploy, keys) -> dict:
    write_deployment_manifest(deploy, draft(), keys[0])
    return json.loads((deploy / MANIFEST_NAME).read_text())


def test_round_trip(valid):
    m = DeploymentManifest.from_json(valid)
    assert json.loads(m.to_json()) == valid
    assert m.device("cam00").is_mcu and not m.device("cam01").is_mcu
    assert m.device("cam01").views == (1, 2)
    with pytest.raises(ManifestError, match=r"device 'cam07': not in deployment"):
        m.device("cam07")


def _set(obj: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for p in parents:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    if value is _DELETE:
        del obj[last]
    elif isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value


_DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    ("format", "something-else", r"format: expected 'slimedge-deployment'"),
    ("format_version", 2, r"format_version: version 2 is not supported"),
    ("deployment_id", "", r"deployment_id: expected a non-empty string"),
    ("created", "yesterday", r"created: 'yesterday' is not of the form"),
    ("signing_key", _DELETE, r"signing_key: expected a non-empty string"),
    ("extra", 1, r"extra: unknown field"),
    ("devices", [], r"devices: expected a non-empty list"),
    ("devices.1.sha256", "abc", r"devices\[1\]\.sha256: expected 64 lower-case hex digits"),
    ("devices.1.bytes", -1, r"devices\[1\]\.bytes: must be >= 0"),
    ("devices.1.bytes", None, r"devices\[1\]\.bytes: expected an integer"),
    ("devices.1.level", 1.0, r"devices\[1\]\.level: a pruning level is a fraction in \[0, 1\)"),
    ("devices.1.level_index", "3", r"devices\[1\]\.level_index: expected an integer"),
    ("devices.1.format", "int4", r"devices\[1\]\.format: 'int4' is not one of"),
    ("devices.1.runtime", "onnx", r"devices\[1\]\.runtime: 'onnx' is not one of"),
    ("devices.1.views", [1, 1], r"devices\[1\]\.views: view listed twice"),
    ("devices.1.views", [], r"devices\[1\]\.views: expected a non-empty list"),
    ("devices.1.artifact", "../x.tflite", r"devices\[1\]\.artifact: '\.\./x\.tflite' escapes"),
    ("devices.1.artifact", "/abs.tflite", r"devices\[1\]\.artifact: '/abs\.tflite' is an "
                                          "absolute path"),
    ("devices.1.device", "cam00", r"devices\[1\]\.device: 'cam00' also at devices\[0\]"),
    ("devices.1.colour", "red", r"devices\[1\]\.colour: unknown field"),
    ("devices.1.checks", [1], r"devices\[1\]\.checks: expected a JSON object"),
    ("devices.0.tflm_arena_bytes", None, r"devices\[0\]\.tflm_arena_bytes: missing \(required "
                                         "for runtime 'tflite-micro'\\)"),
    ("devices.0.format", "float32", r"devices\[0\]\.format: runtime 'tflite-micro' runs int8"),
    ("devices.0.firmware.0.path", "manifest.json", r"devices\[0\]\.firmware\[0\]\.path: "
                                                   "'manifest.json' is a reserved file"),
    ("aggregator.host", "gw-01", r"aggregator: state exactly one of 'board' and 'host'"),
    ("aggregator.pooling", "median", r"aggregator\.pooling: 'median' is not one of"),
    ("aggregator.head", [], r"aggregator\.head: expected a non-empty list"),
    ("provenance.ladder_sha256", None, r"provenance\.ladder_sha256: expected 64 lower-case"),
])
def test_field_errors_name_the_field(valid, path, value, message):
    broken = copy.deepcopy(valid)
    _set(broken, path, value)
    with pytest.raises(ManifestError, match=r"^manifest\.json: " + message):
        DeploymentManifest.from_json(broken)


def test_created_and_pooling_modes():
    import numpy as np

    from slimedge import _core
    from slimedge.export.manifest import _UTC, POOLING_MODES, utc_now

    assert _UTC.match(utc_now())
    features, mask = np.ones((2, 3), np.float32), np.ones(2, np.uint8)
    for mode in POOLING_MODES:  # every mode a manifest may name is one the C++ core runs
        pooled, empty = _core.pool(features, mask, np.ones(2, np.float32), mode=mode)
        assert pooled.shape == (3,) and not empty


def test_not_json():
    with pytest.raises(ManifestError, match=r"^m\.json: not valid JSON"):
        DeploymentManifest.from_json("{nope", source="m.json")


def test_draft_accepts_missing_hashes():
    text = draft().to_json()
    with pytest.raises(ManifestError, match=r"signing_key: expected a non-empty string"):
        DeploymentManifest.from_json(text)
    signed = dataclasses.replace(draft(), signing_key="ed25519:0123456789abcdef").to_json()
    with pytest.raises(ManifestError, match=r"devices\[0\]\.sha256: expected 64 lower-case"):
        DeploymentManifest.from_json(signed)
    assert DeploymentManifest.from_json(text, complete=False) == draft()
