"""Signed per-device updates on a device's A/B slots: what is applied, what is refused (with
the reason, the old model still serving and loading in LiteRT), resumable chunked transfer.
Real models (tiny int8 branches), real Ed25519 keys, real LiteRT and TFLite Micro self-tests."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from slimedge.export import signing
from slimedge.fleet.updates import (
    DeviceUpdate,
    SequenceCounter,
    UpdateBuildError,
    build_update,
    build_updates,
    resign,
)
from slimedge.runtime import update as upd
from slimedge.runtime import update_messages as wire
from slimedge.runtime.branch import BranchRunner
from slimedge.runtime.selftest import self_test
from slimedge.runtime.slots import UpdateSlots
from slimedge.runtime.update import TensorSpec, UpdateRefusedError, load_trust, parse_utc
from tests.update_fixtures import MCU_DEVICE, PI_DEVICE, make_deployment

BOARDS = {MCU_DEVICE: "esp32s3", PI_DEVICE: "rpi4b"}
OLD_CREATED, NEW_CREATED = "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z"
NOW = parse_utc("2025-02-02T00:00:00Z")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("updates")
    private, public = signing.generate_keys(base / "keys")
    other_private, other_public = signing.generate_keys(base / "other-keys")
    old = make_deployment(base / "old", private, seed=1, created=OLD_CREATED,
                          deployment_id="fleet-old")
    new = make_deployment(base / "new", private, seed=2, created=NEW_CREATED,
                          deployment_id="fleet-new", level=0.5)
    return {"base": base, "private": private, "public": public, "key":
            signing.load_private_key(private), "other_key": signing.load_private_key(
                other_private), "old": old, "new": new}


def make_slots(world: dict, tmp_path: Path, device: str = PI_DEVICE, *,
               now: float = NOW) -> UpdateSlots:
    from slimedge.export.manifest import DeploymentManifest

    trust = load_trust(device, BOARDS[device], world["public"])
    slots = UpdateSlots(tmp_path / f"state-{device}", trust, clock=lambda: now,
                        self_test=self_test)
    manifest = DeploymentManifest.from_json((world["old"] / "manifest.json").read_bytes())
    slots.provision_deployment(world["old"], manifest, device)
    return slots


def update_for(world: dict, device: str, sequence: int, *, which: str = "new",
               **kw) -> DeviceUpdate:
    return build_update(world[which], device, world["key"], sequence=sequence, now=NOW - 3600,
                        **kw)


def send(slots: UpdateSlots, up: DeviceUpdate, *, chunk_bytes: int = 700,
         skip: tuple[int, ...] = (), reverse: bool = False) -> None:
    """Deliver an update as the device receives it: the offer, then its chunks (all through
    the wire encoding)."""
    offer = wire.decode(wire.encode_offer(up.offer(chunk_bytes)))
    slots.offer(offer.manifest, offer.signature)
    chunks = up.chunks(chunk_bytes)
    for i, c in enumerate(reversed(chunks) if reverse else chunks):
        if i in skip:
            continue
        c = wire.decode(wire.encode_chunk(c))
        assert slots.receive_chunk(c.sequence, c.offset, c.data, total=c.total,
                                   payload_id=c.payload_id)


def apply(slots: UpdateSlots, up: DeviceUpdate, **kw) -> None:
    send(slots, up, **kw)
    slots.stage_and_verify(up.manifest.sequence)
    slots.commit()


def serving(slots: UpdateSlots) -> tuple[str, int]:
    """(model sha256, sequence) served after a fresh recover, with the model run in LiteRT."""
    fresh = UpdateSlots(slots.root, slots.trust)
    path, info = fresh.current()
    fresh.recover()
    BranchRunner(path).run(np.zeros((16, 16, 1), "uint8"))
    return info.model_sha256, info.sequence


def old_sha(world: dict, device: str) -> str:
    from slimedge.export.manifest import DeploymentManifest

    m = DeploymentManifest.from_json((world["old"] / "manifest.json").read_bytes())
    return m.device(device).sha256


def refused(slots: UpdateSlots, up: DeviceUpdate, reason: str, **kw) -> str:
    """Deliver `up`, expect it refused for `reason` (at the offer or at staging), and the
    provisioned model still served."""
    before = serving(slots)
    with pytest.raises(UpdateRefusedError) as info:
        send(slots, up, **kw)
        slots.stage_and_verify(up.manifest.sequence)
    assert info.value.reason == reason, str(info.value)
    assert slots.staged is None
    assert serving(slots) == before
    return info.value.detail


# --------------------------------------------------------------------------- accepted


def test_update_applies_and_keeps_the_previous_slot(world, tmp_path):
    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 5)
    send(slots, up)
    staged = slots.stage_and_verify(5)
    assert "LiteRT: fixed input" in staged.self_test
    assert serving(slots)[1] == 0  # staged is not served before commit
    info = slots.commit()
    assert (info.sequence, info.deployment_id, info.level) == (5, "fleet-new", 0.5)
    assert serving(slots) == (up.manifest.model_sha256, 5)
    previous = slots.root / ("a" if info.slot == "b" else "b")
    assert (previous / "slot.json").exists() and (previous / "cam01.tflite").exists()


def test_mcu_update_carries_the_model_once_and_runs_in_tflite_micro(world, tmp_path):
    """The firmware bundle's headers travel with the model; its `_model.cc` (the model again,
    as C text, ~6x its size) does not."""
    slots = make_slots(world, tmp_path, MCU_DEVICE)
    up = update_for(world, MCU_DEVICE, 3)
    names = [f.path for f in up.manifest.files]
    assert names == ["cam00.tflite", "firmware/cam00_model.h", "firmware/cam00_arena.h",
                     "firmware/cam00_ops.h"]
    assert up.manifest.bytes < up.manifest.model.bytes + 4096
    assert up.manifest.arena_budget_bytes > up.manifest.tflm_arena_bytes > 0
    send(slots, up)
    staged = slots.stage_and_verify(3)
    assert "TFLite Micro: runs in" in staged.self_test
    info = slots.commit()
    arena_h = (slots.root / info.slot / "firmware" / "cam00_arena.h").read_text()
    assert up.manifest.model_sha256 in arena_h  # the bundle of this model


def test_chunks_in_any_order_before_the_offer_and_resent(world, tmp_path):
    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 2)
    chunks = up.chunks(500)
    for c in reversed(chunks):  # chunks first, newest offset first
        assert slots.receive_chunk(2, c.offset, c.data, total=c.total, payload_id=c.payload_id)
    assert slots.missing(2) == [[0, 0]]  # size unknown until the offer
    slots.offer(up.manifest_bytes, up.signature)
    assert slots.missing(2) == []
    c = chunks[1]
    slots.receive_chunk(2, c.offset, c.data, total=c.total)  # a duplicate is harmless
    slots.stage_and_verify(2)
    slots.commit()
    assert serving(slots) == (up.manifest.model_sha256, 2)


def test_truncated_transfer_is_refused_then_resumes(world, tmp_path):
    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 4)
    detail = refused(slots, up, upd.TRUNCATED, chunk_bytes=600, skip=(1, 3))
    assert "missing [offset, length] ranges [[600, 600], [1800, 600]]" in detail
    assert slots.missing(4) == [[600, 600], [1800, 600]]
    for c in up.chunks(600)[1:4:2]:  # resume: only the missing ranges are sent again
        slots.receive_chunk(4, c.offset, c.data, total=c.total, payload_id=c.payload_id)
    slots.stage_and_verify(4)
    slots.commit()
    assert serving(slots) == (up.manifest.model_sha256, 4)


def test_the_running_update_offered_again_is_not_a_replay(world, tmp_path):
    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 5)
    apply(slots, up)
    assert slots.offer(up.manifest_bytes, up.signature) is None  # a retained offer again


def test_signed_rollback_order_goes_back(world, tmp_path):
    slots = make_slots(world, tmp_path)
    apply(slots, update_for(world, PI_DEVICE, 5))
    back = update_for(world, PI_DEVICE, 6, which="old", rollback=True)
    apply(slots, back)
    assert serving(slots) == (old_sha(world, PI_DEVICE), 6)
    info = slots.current()[1]
    assert info.deployment_id == "fleet-old" and info.manifest.rollback


# --------------------------------------------------------------------------- refused


def test_tampered_artifact_is_refused(world, tmp_path):
    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 5)
    payload = bytearray(up.payload)
    payload[len(payload) // 2] ^= 0x40
    detail = refused(slots, replace(up, payload=bytes(payload)), upd.TAMPERED)
    assert "cam01.tflite" in detail or "payload sha256" in detail


def test_bad_signature_is_refused(world, tmp_path):
    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 5)
    sig = bytearray(up.signature)
    sig[0] ^= 0x01
    assert "provisioned key" in refused(slots, replace(up, signature=bytes(sig)),
                                        upd.BAD_SIGNATURE)
    # A manifest edited after signing (a bigger level) fails the same way.
    edited = up.manifest_bytes.replace(b'"level": 0.5', b'"level": 0.1')
    assert edited != up.manifest_bytes
    refused(slots, replace(up, manifest_bytes=edited), upd.BAD_SIGNATURE)


def test_update_signed_with_another_key_is_refused(world, tmp_path):
    slots = make_slots(world, tmp_path)
    other = world["other_key"]
    up = update_for(world, PI_DEVICE, 5)
    forged = resign(up, other, signing_key=signing.fingerprint(other.public_key()))
    detail = refused(slots, forged, upd.WRONG_KEY)
    assert signing.fingerprint(other.public_key()) in detail
    assert slots.trust.fingerprint in detail


def test_another_devices_update_is_refused(world, tmp_path):
    slots = make_slots(world, tmp_path, PI_DEVICE)
    detail = refused(slots, update_for(world, MCU_DEVICE, 5), upd.WRONG_DEVICE)
    assert "cam00" in detail and "cam01" in detail


def test_update_for_another_board_is_refused(world, tmp_path):
    slots = make_slots(world, tmp_path, PI_DEVICE)
    up = resign(update_for(world, PI_DEVICE, 5), world["key"], board="rpi5")
    assert "rpi5" in refused(slots, up, upd.WRONG_BOARD)


def test_replay_of_an_older_sequence_is_refused(world, tmp_path):
    slots = make_slots(world, tmp_path)
    seq3 = update_for(world, PI_DEVICE, 3)
    apply(slots, update_for(world, PI_DEVICE, 7))
    before = serving(slots)
    with pytest.raises(UpdateRefusedError) as info:
        slots.offer(seq3.manifest_bytes, seq3.signature)
    assert info.value.reason == upd.REPLAY and "not above the running sequence 7" in str(info.value)
    # Another update under the running sequence number is a replay too, and its chunks
    # are not even kept.
    same_seq = resign(update_for(world, PI_DEVICE, 7, which="old"), world["key"])
    with pytest.raises(UpdateRefusedError, match="replay"):
        slots.offer(same_seq.manifest_bytes, same_seq.signature)
    c = seq3.chunks(700)[0]
    assert not slots.receive_chunk(3, c.offset, c.data, total=c.total)
    assert serving(slots) == before


def test_downgrade_is_refused(world, tmp_path):
    slots = make_slots(world, tmp_path)
    apply(slots, update_for(world, PI_DEVICE, 5))
    back = update_for(world, PI_DEVICE, 6, which="old")  # new sequence, older deployment
    detail = refused(slots, back, upd.DOWNGRADE)
    assert "fleet-old" in detail and "rollback" in detail


def test_expired_update_is_refused(world, tmp_path):
    up = update_for(world, PI_DEVICE, 5, expires_in_s=600)
    late = make_slots(world, tmp_path, now=NOW - 3600 + 601)
    assert "expired at" in refused(late, up, upd.EXPIRED)
    # Expiry is checked again when staging: an offer accepted in time, staged too late.
    clock = [NOW - 3600 + 10]
    slots = make_slots(world, tmp_path / "b")
    slots.clock = lambda: clock[0]
    send(slots, up)
    clock[0] += 600
    with pytest.raises(UpdateRefusedError, match="expired"):
        slots.stage_and_verify(5)


def test_failed_self_test_keeps_the_old_model_and_says_why(world, tmp_path):
    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 5)
    out = up.manifest.output
    wrong = resign(up, world["key"], output=TensorSpec(out.shape, out.dtype,
                                                       out.scale * 2, out.zero_point))
    detail = refused(slots, wrong, upd.SELF_TEST)
    assert "output quantization" in detail and "manifest says" in detail
    wrong_shape = resign(up, world["key"], output=replace(out, shape=(1, 9)))
    assert "(1, 8)" in refused(slots, wrong_shape, upd.SELF_TEST)


def test_mcu_model_over_the_arena_budget_fails_its_self_test(world, tmp_path):
    slots = make_slots(world, tmp_path, MCU_DEVICE)
    up = update_for(world, MCU_DEVICE, 5)
    small = resign(up, world["key"], arena_budget_bytes=1024)
    detail = refused(slots, small, upd.SELF_TEST)
    assert f"needs {up.manifest.tflm_arena_bytes}" in detail or "needs" in detail
    assert "budget is 1024 bytes" in detail


# --------------------------------------------------------------------------- host side, wire


def test_build_updates_checks_the_deployment_and_key(world, tmp_path):
    ups = build_updates(world["new"], world["private"], sequence=9, now=NOW)
    assert [u.device for u in ups] == [MCU_DEVICE, PI_DEVICE]
    assert all(u.manifest.sequence == 9 and u.manifest.deployment_id == "fleet-new"
               for u in ups)
    with pytest.raises(UpdateBuildError, match="cam99"):
        build_updates(world["new"], world["private"], sequence=9, devices=["cam99"])
    other = tmp_path / "keys"
    other_private, _ = signing.generate_keys(other)
    with pytest.raises(UpdateBuildError, match="does not verify with the push key"):
        build_updates(world["new"], other_private, sequence=9)
    changed = tmp_path / "changed"
    shutil.copytree(world["new"], changed)
    (changed / "devices" / "cam01.tflite").write_bytes(b"not the signed model")
    with pytest.raises(UpdateBuildError, match="cam01.tflite"):
        build_updates(changed, world["private"], sequence=9)


def test_sequence_counter_only_grows(tmp_path):
    counter = SequenceCounter(tmp_path / "seq.json")
    assert counter.next() == 1 and counter.next() == 2
    assert counter.next(at_least=10) == 11 and counter.last() == 11
    (tmp_path / "seq.json").write_text('{"last": -1}')
    with pytest.raises(UpdateBuildError, match="last"):
        counter.last()


def test_wire_messages_round_trip_and_refuse_damage(world):
    up = update_for(world, PI_DEVICE, 5)
    offer = wire.decode(wire.encode_offer(up.offer(1000)))
    assert (offer.sequence, offer.manifest, offer.signature) == (5, up.manifest_bytes,
                                                                up.signature)
    raw = bytearray(wire.encode_chunk(up.chunks(1000)[0]))
    raw[50] ^= 1
    with pytest.raises(wire.UpdateMessageError, match="CRC-32"):
        wire.decode(bytes(raw))
    with pytest.raises(wire.UpdateMessageError, match="magic"):
        wire.decode(b"XXXX" + bytes(raw[4:]))
    with pytest.raises(wire.UpdateMessageError, match="shorter"):
        wire.decode(b"SEUP")
    ack = wire.Ack(PI_DEVICE, 5, wire.REFUSED, upd.REPLAY, "old", seconds=0.5)
    assert wire.Ack.from_bytes(ack.to_bytes()) == ack
    applied = wire.Ack(PI_DEVICE, 5, wire.APPLIED, first_frame=412)
    assert wire.Ack.from_bytes(applied.to_bytes()).first_frame == 412
    with pytest.raises(wire.UpdateMessageError, match="bad field"):
        wire.Ack.from_bytes(b'{"device": "x", "sequence": 1, "status": "applied", '
                            b'"first_frame": "soon"}')
    with pytest.raises(wire.UpdateMessageError, match="status"):
        wire.Ack.from_bytes(b'{"device": "x", "sequence": 1, "status": "maybe"}')


def test_malformed_manifest_names_the_field(world):
    up = update_for(world, PI_DEVICE, 5)
    raw = up.manifest.to_dict()
    raw["sequence"] = 0
    with pytest.raises(UpdateRefusedError, match="sequence"):
        upd.UpdateManifest.from_bytes(json.dumps(raw).encode())
    raw = up.manifest.to_dict() | {"extra": 1}
    with pytest.raises(UpdateRefusedError, match="extra: unknown field"):
        upd.UpdateManifest.from_bytes(json.dumps(raw).encode())


def test_recover_without_a_valid_slot_is_an_error(world, tmp_path):
    slots = make_slots(world, tmp_path)
    (slots.root / "a" / "cam01.tflite").write_bytes(b"damaged")
    with pytest.raises(upd.UpdateError, match="no slot holds a valid model"):
        UpdateSlots(slots.root, slots.trust).recover()


def test_unsigned_chunks_cannot_fill_the_disk(world, tmp_path):
    slots = make_slots(world, tmp_path)
    for seq in (100, 101, 102, 50):  # chunks of updates never offered
        slots.receive_chunk(seq, 0, b"junk" * 100, total=400)
    staged = sorted(p.name for p in (slots.root / "staging").iterdir())
    assert staged == ["101", "102"]  # only the two highest are kept
    up = update_for(world, PI_DEVICE, 103)
    slots.receive_chunk(103, 0, b"x" * (up.manifest.bytes + 10), total=up.manifest.bytes + 10)
    slots.offer(up.manifest_bytes, up.signature)  # the too-long early chunk is dropped
    assert slots.missing(103) == [[0, up.manifest.bytes]]
    apply(slots, up)
    assert serving(slots) == (up.manifest.model_sha256, 103)


def test_signed_artifact_that_does_not_load_fails_its_self_test(world, tmp_path):
    import hashlib

    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 5)
    junk = b"not a flatbuffer " * 64
    sha = hashlib.sha256(junk).hexdigest()
    bad = resign(replace(up, payload=junk), world["key"], sha256=sha, bytes=len(junk),
                 files=(upd.PayloadFile("cam01.tflite", 0, len(junk), sha),))
    assert "LiteRT cannot load it" in refused(slots, bad, upd.SELF_TEST)


def test_a_newer_image_is_provisioned_again_and_old_updates_stay_refused(world, tmp_path):
    from slimedge.export.manifest import DeploymentManifest

    slots = make_slots(world, tmp_path)
    seq7 = update_for(world, PI_DEVICE, 7, which="old", rollback=True)
    apply(slots, seq7)
    restarted = UpdateSlots(slots.root, slots.trust, clock=lambda: NOW, self_test=self_test)
    old = DeploymentManifest.from_json((world["old"] / "manifest.json").read_bytes())
    assert restarted.open(world["old"], old, PI_DEVICE).sequence == 7  # same image: state
    new = DeploymentManifest.from_json((world["new"] / "manifest.json").read_bytes())
    info = restarted.open(world["new"], new, PI_DEVICE)  # a newer image given to the device
    assert (info.sequence, info.deployment_id) == (0, "fleet-new")
    assert serving(restarted)[1] == 0 and restarted.running().sequence == 7
    seq6 = update_for(world, PI_DEVICE, 6)
    with pytest.raises(UpdateRefusedError, match="not above the running sequence 7"):
        restarted.offer(seq6.manifest_bytes, seq6.signature)
    assert UpdateSlots(slots.root, slots.trust).recover().deployment_id == "fleet-new"
