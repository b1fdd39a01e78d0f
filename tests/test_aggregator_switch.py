"""A fleet-wide switch inside the aggregator, fed directly (no network): two real signed
deployments of the same fleet (the tiny ladder at other levels: other device models and feature
quantization); frames before F are pooled with the old one, frames from F with the new one,
each equal to that deployment's evaluator; a message of the other deployment is refused, a frame
is never pooled across two. The signed switch order (`aggregator_update`) and its preparation
(`aggregator_switch.SwitchLink`): every refusal reason, the old deployment serving throughout."""

from __future__ import annotations

import dataclasses
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest
from aggregator_support import load_fleet

from slimedge.export import signing
from slimedge.fleet.updates import AggregatorUpdate, build_aggregator_update
from slimedge.runtime.aggregator import Aggregator, SwitchRefusedError
from slimedge.runtime.aggregator_switch import SwitchLink
from slimedge.runtime.aggregator_update import (
    AggregatorAck,
    AggregatorOrder,
    AggregatorUpdates,
    unpack,
)
from slimedge.runtime.alignment import FrameAligner, PendingFrame, RefusedViewError
from slimedge.runtime.status_http import render_page
from slimedge.runtime.update_messages import Chunk, encode_chunk, encode_offer

S = 1_000_000_000
T0 = 1_800_000_000 * S
F = 10


def _export_again(tiny_deployment, out, levels):
    from slimedge.export.deploy import export_deployment

    key = tiny_deployment.deploy.parent / "keys" / signing.PRIVATE_KEY_NAME
    time.sleep(1.1)  # deployment ids carry the creation second
    export_deployment(tiny_deployment.fleet_file, tiny_deployment.ladder, levels, out,
                      dataset=tiny_deployment.dataset, progress=False, min_agreement=0.5,
                      key_path=key)
    return load_fleet(SimpleNamespace(deploy=out, ladder=tiny_deployment.ladder))


@pytest.fixture(scope="module")
def two(tiny_deployment, tmp_path_factory):
    """(old fleet, new fleet, private key, public key): the tiny deployment, and the same fleet
    exported again with another level on every view (the next level index), signed with the
    same key."""
    work = tmp_path_factory.mktemp("switch")
    key = tiny_deployment.deploy.parent / "keys" / signing.PRIVATE_KEY_NAME
    old = load_fleet(tiny_deployment)
    new = _export_again(tiny_deployment, work / "deploy", [(j + 1) % 3 for j in old.levels])
    assert old.dep.fleet == new.dep.fleet and old.dep.deployment_id != new.dep.deployment_id
    assert all(old.dep.devices[d].model_hash != new.dep.devices[d].model_hash
               for d in old.dep.devices)
    return SimpleNamespace(old=old, new=new, key=key,
                           public=signing.load_public_key(tiny_deployment.deploy.parent / "keys"
                                                          / signing.PUBLIC_KEY_NAME),
                           work=work)


def beat_all(agg, fleet, seq, now):
    for v in range(12):
        agg.handle(fleet.topic(v, "heartbeat"), fleet.heartbeat(f"cam{v:02d}", seq), now)


def send(agg, fleet, frame, views, now, **change):
    out = []
    for v in views:
        out += agg.handle(fleet.topic(v), fleet.payload(frame, v, T0 + frame * S // 10,
                                                        **change), now)
    return out


def test_frames_before_f_use_the_old_deployment_and_from_f_the_new(two):
    old, new = two.old, two.new
    agg = Aggregator(old.dep, old.head, now_ns=T0, labels=old.ev.labels)
    beat_all(agg, old, 1, T0)
    results = []
    for frame in range(F - 1):
        results += send(agg, old, frame, range(12), T0 + frame)
    results += send(agg, old, F - 1, range(6), T0 + F)  # frame F-1 still open at the switch
    assert agg.first_free_frame() == F
    agg.schedule(new.dep, new.head, F, 1, T0 + F)
    assert [e["event"] for e in agg.drain_events()].count("switch_prepared") == 1
    page = render_page(agg.status(T0 + F))
    assert f"to <code>{new.dep.deployment_id}</code> at frame {F} (sequence 1)" in page
    # frame F: a view of the old deployment would pool two models: refused
    send(agg, old, F, [0], T0 + F)
    assert agg.rejected["wrong_deployment"] == 1 and agg.refused_across == 1
    assert "is pooled with " + new.dep.deployment_id in agg.recent_rejections[-1]["detail"]
    # and a view of the new deployment for frame F-1 (still open, old) is refused too
    send(agg, new, F - 1, [7], T0 + F)
    assert agg.rejected["wrong_deployment"] == 2 and agg.refused_across == 2
    results += send(agg, new, F, range(12), T0 + F)  # complete: answered with the new one
    results += send(agg, old, F - 1, range(6, 12), T0 + F)
    beat_all(agg, new, 2, T0 + F)  # devices now announce the new deployment: accepted
    for frame in range(F + 1, 2 * F):
        results += send(agg, new, frame, range(12), T0 + frame)
    assert sorted(r.frame for r in results) == list(range(2 * F))
    for r in results:
        fleet = old if r.frame < F else new
        assert r.deployment_id == fleet.dep.deployment_id, r.frame
        assert r.cls == fleet.expected(r.frame, np.ones(12, bool))[0], r.frame
    (applied,) = agg.drain_switches()
    assert (applied.first_frame, applied.sequence) == (F, 1)
    events = agg.drain_events()
    (e,) = [e for e in events if e["event"] == "switch_applied"]
    assert (e["frame"], e["deployment_id"], e["previous"]) == \
        (F, new.dep.deployment_id, old.dep.deployment_id)
    status = agg.status(T0 + 2 * F)
    assert status["deployment_id"] == new.dep.deployment_id
    sw = status["switch"]
    assert sw["sequence"] == 1 and sw["pending"] is None and sw["refused_cross_deployment"] == 2
    assert [h["from_frame"] for h in sw["history"]] == [0, F]
    assert f"none pending; frames from {F}: <code>{new.dep.deployment_id}" in render_page(status)
    assert "stale_heartbeat" not in agg.rejected and "bad_heartbeat" not in agg.rejected


def test_a_switch_at_a_frame_already_opened_is_refused_and_the_old_one_serves(two):
    old, new = two.old, two.new
    agg = Aggregator(old.dep, old.head, now_ns=T0)
    beat_all(agg, old, 1, T0)
    send(agg, old, F + 2, range(3), T0)  # frame F+2 opened under the old deployment
    with pytest.raises(SwitchRefusedError) as err:
        agg.schedule(new.dep, new.head, F, 1, T0)
    assert err.value.reason == "frame-passed" and f"up to {F + 2}" in err.value.detail
    other = dataclasses.replace(new.dep, fleet="elsewhere")
    with pytest.raises(SwitchRefusedError) as err:
        agg.schedule(other, new.head, F + 5, 1, T0)
    assert err.value.reason == "wrong-fleet"
    out = send(agg, old, F + 2, range(3, 12), T0)
    assert [r.deployment_id for r in out] == [old.dep.deployment_id]
    assert len(agg.served) == 1


def test_a_later_order_supersedes_one_not_started(two):
    old, new = two.old, two.new
    agg = Aggregator(old.dep, old.head, now_ns=T0)
    agg.schedule(new.dep, new.head, 50, 1, T0)
    agg.schedule(new.dep, new.head, 30, 2, T0)
    assert [(s.from_frame, s.sequence) for s in agg.served] == [(0, 0), (30, 2)]
    assert agg.switch_counts["superseded"] == 1


def test_a_frame_is_never_pooled_across_two_deployments(two):
    """The aligner refuses a view of another deployment than its frame's; asked directly to
    answer a frame holding another deployment's views, the aggregator refuses and counts it."""
    aligner = FrameAligner(10 * S)
    aligner.add(3, 0, T0, "m0", T0, deployment="A")
    with pytest.raises(RefusedViewError) as err:
        aligner.add(3, 1, T0, "m1", T0, deployment="B")
    assert err.value.reason == "wrong_deployment"
    old, new = two.old, two.new
    agg = Aggregator(old.dep, old.head, now_ns=T0)
    agg.schedule(new.dep, new.head, F, 1, T0)
    msg = old.message(F, 0, T0)
    p = PendingFrame(F, T0, T0, {0: msg}, {0: T0}, deployment=old.dep.deployment_id)
    agg.aligner.pending[F] = p
    assert agg.tick(T0 + S) == []
    assert agg.rejected["cross_deployment"] == 1
    assert "not pooled" in agg.recent_rejections[-1]["detail"]


# --------------------------------------------------------------------------- signed orders


def order_of(two, *, sequence=3, at=50, **kw) -> AggregatorUpdate:
    return build_aggregator_update(two.new.dep.root, two.key, sequence=sequence,
                                   commit_at_frame=at, **kw)


def messages(up: AggregatorUpdate, chunk_bytes=4096) -> list[bytes]:
    return [encode_chunk(c) for c in up.chunks(chunk_bytes)] + [encode_offer(up.offer(chunk_bytes))]


def feed(u: AggregatorUpdates, msgs):
    acks, ready = [], None
    for m in msgs:
        a, r = u.handle(m)
        acks += a
        ready = r or ready
    return acks, ready


def receiver(two, free=10, fleet=None):
    return AggregatorUpdates(two.public, fleet or two.new.dep.fleet,
                             first_free_frame=lambda: free)


def test_an_order_and_its_files_arrive_verify_and_load(two, tmp_path):
    from slimedge.runtime.aggregator_deployment import load_aggregator_deployment

    up = order_of(two)
    names = [f.path for f in up.order.files]
    assert names[:2] == ["manifest.json", "manifest.sig"]
    assert "aggregator/head.tflite" in names and not any(n.startswith("devices/") for n in names)
    u = receiver(two)
    offer_first = messages(up)[-1:] + messages(up)[:-1]  # the retained offer may come first
    acks, ready = feed(u, offer_first)
    assert acks[0].status == "missing" and acks[0].missing == [[0, up.order.bytes]]
    assert ready is not None and ready.order.commit_at_frame == 50
    dep = load_aggregator_deployment(unpack(ready, tmp_path / "d"), trusted_key=two.public)
    assert dep.deployment_id == two.new.dep.deployment_id
    assert dep.model_hashes() == two.new.dep.model_hashes()
    ack = AggregatorAck.from_bytes(AggregatorAck(3, "prepared", commit_at_frame=50).to_bytes())
    assert ack.status == "prepared" and ack.commit_at_frame == 50


def _signed(order: AggregatorOrder, key, up: AggregatorUpdate, **change) -> AggregatorUpdate:
    o = dataclasses.replace(order, **change)
    data = o.to_bytes()
    return AggregatorUpdate(o, data, signing.sign(key, data), up.payload)


def test_orders_are_refused_with_their_reason(two, tmp_path):
    up = order_of(two)
    key = signing.load_private_key(two.key)
    foreign_key = signing.load_private_key(signing.generate_keys(tmp_path / "other")[0])
    bad_sig = AggregatorUpdate(up.order, up.order_bytes, bytes(64), up.payload)
    foreign = _signed(up.order, foreign_key, up,
                      signing_key=signing.fingerprint(foreign_key.public_key()))
    expired = order_of(two, now=time.time() - 10 * 86400, expires_in_s=3600)
    past = order_of(two, at=4)
    cases = [(bad_sig, "bad-signature"), (foreign, "wrong-key"), (expired, "expired"),
             (past, "frame-passed")]
    for bad, reason in cases:
        u = receiver(two)
        acks, ready = feed(u, messages(bad))
        assert ready is None and [a.status for a in acks] == ["refused"], reason
        assert acks[0].reason == reason, (reason, acks[0].message)
        assert u.counts["refused"] == {reason: 1}
    acks, ready = feed(receiver(two, fleet="elsewhere"), messages(up))
    assert ready is None and acks[0].reason == "wrong-fleet"
    u = receiver(two)
    u.running_sequence = 3
    acks, _ = feed(u, messages(up)[-1:])
    assert acks[0].reason == "replay"
    # a chunk changed in transit (its CRC recomputed): the payload's hash is refused
    msgs = messages(up)
    c = up.chunks(4096)[0]
    msgs[0] = encode_chunk(Chunk(c.sequence, c.payload_id, c.total, c.offset,
                                 bytes(len(c.data))))
    acks, ready = feed(receiver(two), msgs)
    assert ready is None and acks[-1].reason == "tampered"
    # garbage on the topic: counted, nothing answered
    u = receiver(two)
    assert u.handle(b"not an update") == ([], None) and u.counts["malformed"] == 1
    assert _signed(up.order, key, up, sequence=4).order.sequence == 4  # our key signs fine


def run_link(link, msgs, now, timeout=30.0):
    acks = []
    for m in msgs:
        acks += link.handle(m, now)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(a.status in ("prepared", "refused")
                                                  for a in acks):
        acks += link.poll(now)
        time.sleep(0.02)
    return acks


def test_switch_link_prepares_off_the_loop_and_acks_prepared_then_applied(two, tmp_path):
    old, new = two.old, two.new
    agg = Aggregator(old.dep, old.head, now_ns=T0)
    link = SwitchLink(agg, two.public, tmp_path / "deployments")
    try:
        acks = run_link(link, messages(order_of(two, at=F)), T0)
        assert [a.status for a in acks] == ["prepared"], acks
        assert acks[0].commit_at_frame == F and acks[0].deployment_id == new.dep.deployment_id
        beat_all(agg, old, 1, T0)
        send(agg, new, F, range(12), T0)
        (applied,) = link.poll(T0)
        assert (applied.status, applied.first_frame) == ("applied", F)
        state = link.state(T0, 10.0)
        assert state["deployment_id"] == new.dep.deployment_id and state["last_frame"] == F
        assert state["sequence"] == 3 and state["running"] is True
        # the same retained offer delivered again (a reconnect): nothing happens
        assert link.handle(messages(order_of(two, at=F))[-1], T0) == []
    finally:
        link.stop()


def test_a_deployment_signed_by_another_key_is_refused_when_prepared(two, tmp_path):
    """The order is ours but the deployment manifest it carries is signed by a foreign key:
    the aggregator checks the deployment itself as at start, refuses, keeps the old one."""
    from slimedge.export.manifest import MANIFEST_NAME, SIGNATURE_NAME

    bad = tmp_path / "foreign-deploy"
    shutil.copytree(two.new.dep.root, bad)
    foreign = signing.load_private_key(signing.generate_keys(tmp_path / "other")[0])
    (bad / SIGNATURE_NAME).write_bytes(signing.sign(foreign, (bad / MANIFEST_NAME).read_bytes()))
    up = order_of(two, at=F)
    files = [f.path for f in up.order.files]
    payload = b"".join((bad / p).read_bytes() for p in files)
    import hashlib

    from slimedge.runtime.update import PayloadFile

    offs = np.cumsum([0] + [len((bad / p).read_bytes()) for p in files])
    order = dataclasses.replace(
        up.order, sha256=hashlib.sha256(payload).hexdigest(), bytes=len(payload),
        files=tuple(PayloadFile(p, int(offs[i]), int(offs[i + 1] - offs[i]),
                                hashlib.sha256((bad / p).read_bytes()).hexdigest())
                    for i, p in enumerate(files)))
    data = order.to_bytes()
    key = signing.load_private_key(two.key)
    forged = AggregatorUpdate(order, data, signing.sign(key, data), payload)
    agg = Aggregator(two.old.dep, two.old.head, now_ns=T0)
    link = SwitchLink(agg, two.public, tmp_path / "deployments")
    try:
        acks = run_link(link, messages(forged), T0)
        assert [(a.status, a.reason) for a in acks] == [("refused", "bad-signature")], acks
        assert "does not verify with the provisioned key" in acks[0].message
        assert len(agg.served) == 1 and link.counts()["refused"] == {"bad-signature": 1}
        assert [e["event"] for e in agg.drain_events()] == ["switch_refused"]
    finally:
        link.stop()


@pytest.fixture(scope="module")
def partial(two, tiny_deployment, tmp_path_factory):
    """The tiny deployment exported again with views 0-5 at their old levels and 6-11 at
    another: the first devices get byte-identical artifacts (the same model hash), the others
    new models."""
    levels = [j if v < 6 else (j + 1) % 3 for v, j in enumerate(two.old.levels)]
    return _export_again(tiny_deployment, tmp_path_factory.mktemp("partial") / "deploy", levels)


def test_an_unchanged_device_keeps_its_old_id_and_is_pooled_a_changed_one_is_refused(
        two, partial):
    """After F, a device whose model the new deployment keeps (same sha256) still sends under
    the old deployment id: accepted and pooled with the new deployment; a device whose model
    changed sending the old id is refused as wrong_deployment, and so is an unknown id with
    the right model. Every frame equals the new deployment's evaluator."""
    old, new = two.old, partial
    same = [v for v in range(12) if old.dep.view_device[v] == new.dep.view_device[v]
            and old.dep.devices[old.dep.view_device[v]].model_hash
            == new.dep.devices[new.dep.view_device[v]].model_hash]
    assert same == list(range(6))  # exported twice at one level: the same bytes
    agg = Aggregator(old.dep, old.head, now_ns=T0, labels=old.ev.labels)
    beat_all(agg, old, 1, T0)
    results = send(agg, old, 0, range(12), T0)
    agg.schedule(new.dep, new.head, F, 1, T0)
    for frame in range(F, F + 4):
        # unchanged devices were not updated: their messages and heartbeats carry the old id
        results += send(agg, old, frame, range(6), T0 + frame)
        send(agg, old, frame, [6, 9], T0 + frame)  # changed devices not switched yet: refused
        results += send(agg, new, frame, range(6, 12), T0 + frame)
    beat_all(agg, old, 2, T0 + F)
    assert agg.rejected["wrong_deployment"] == 8 and agg.refused_across == 8
    assert "whose model for cam" in agg.recent_rejections[-1]["detail"]
    assert agg.accepted_same_model == 4 * 6
    send(agg, old, F + 4, [0], T0 + F + 4, deployment_id="elsewhere-20260101000000")
    assert agg.rejected["wrong_deployment"] == 9 and agg.refused_across == 8
    assert [r.frame for r in results] == [0] + list(range(F, F + 4))
    for r in results[1:]:
        assert r.deployment_id == new.dep.deployment_id and r.views == tuple(range(12))
        assert r.cls == new.expected(r.frame, np.ones(12, bool))[0], r.frame
    assert agg.status(T0 + F + 4)["switch"]["accepted_same_model"] == 24
    assert "cross_deployment" not in agg.rejected and "stale_heartbeat" not in agg.rejected
