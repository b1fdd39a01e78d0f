"""The device's message side of an update (UpdateReceiver): wire messages in, acknowledgments
out; bad messages counted, never raised; refusals answered with their reason."""

from __future__ import annotations

import time

import pytest

from slimedge.fleet.updates import resign
from slimedge.runtime import update as upd
from slimedge.runtime import update_messages as wire
from slimedge.runtime.slots import UpdateSlots
from slimedge.runtime.update_receiver import UpdateReceiver
from tests.test_update import NOW, make_slots, old_sha, update_for, world  # noqa: F401
from tests.update_fixtures import PI_DEVICE


def test_offer_first_asks_for_missing_bytes_then_applies(world, tmp_path):  # noqa: F811
    slots = make_slots(world, tmp_path)
    ticks = iter(range(100))
    rx = UpdateReceiver(slots, clock=lambda: float(next(ticks)))
    up = update_for(world, PI_DEVICE, 5)
    acks = rx.handle(wire.encode_offer(up.offer(800)))
    assert [a.status for a in acks] == [wire.MISSING]
    assert acks[0].missing == [[0, up.manifest.bytes]] and acks[0].running_sequence == 0
    for c in up.chunks(800):
        assert rx.handle(wire.encode_chunk(c)) == []
    assert rx.ready()
    ack, path = rx.commit()
    assert (ack.status, ack.sequence, ack.running_sequence) == (wire.APPLIED, 5, 5)
    assert ack.model_hash == up.manifest.model_sha256 and ack.seconds > 0
    assert path.name == "cam01.tflite" and not rx.ready()
    # The retained offer delivered again (a reconnect): applied, nothing redone.
    again = rx.handle(wire.encode_offer(up.offer(800)))
    assert [(a.status, a.message) for a in again] == [(wire.APPLIED, "already running")]


def test_bad_messages_are_counted_not_raised(world, tmp_path):  # noqa: F811
    rx = UpdateReceiver(make_slots(world, tmp_path))
    for junk in (b"", b"SEUP", b"\x00" * 100, b"SEUP" + bytes(60)):
        assert rx.handle(junk) == []
    assert rx.counts["malformed"] == 4 and rx.counts["messages"] == 4


def test_refusal_is_acknowledged_and_its_chunks_dropped(world, tmp_path):  # noqa: F811
    slots = make_slots(world, tmp_path)
    rx = UpdateReceiver(slots)
    bad = resign(update_for(world, PI_DEVICE, 5), world["key"], board="rpi5")
    chunks = bad.chunks(900)
    rx.handle(wire.encode_chunk(chunks[0]))
    acks = rx.handle(wire.encode_offer(bad.offer(900)))
    assert [(a.status, a.reason) for a in acks] == [(wire.REFUSED, upd.WRONG_BOARD)]
    assert "rpi5" in acks[0].message and acks[0].model_hash == old_sha(world, PI_DEVICE)
    assert not (slots.root / "staging" / "5").exists()
    assert rx.handle(wire.encode_chunk(chunks[1])) == []
    assert rx.counts["ignored_chunks"] == 1 and not (slots.root / "staging" / "5").exists()


def test_failed_self_test_is_acknowledged_with_the_reason(world, tmp_path):  # noqa: F811
    slots = make_slots(world, tmp_path)
    rx = UpdateReceiver(slots)
    up = update_for(world, PI_DEVICE, 5)
    bad = resign(up, world["key"], output=upd.TensorSpec((1, 8), "float32"))
    for c in bad.chunks(4096):
        rx.handle(wire.encode_chunk(c))
    acks = rx.handle(wire.encode_offer(bad.offer(4096)))
    assert [(a.status, a.reason) for a in acks] == [(wire.REFUSED, upd.SELF_TEST)]
    assert "float32" in acks[0].message and not rx.ready()
    assert slots.current()[1].sequence == 0


def test_open_provisions_once_then_recovers(world, tmp_path):  # noqa: F811
    from slimedge.export.manifest import DeploymentManifest

    slots = make_slots(world, tmp_path)
    up = update_for(world, PI_DEVICE, 5)
    rx = UpdateReceiver(slots)
    for c in up.chunks(4096):
        rx.handle(wire.encode_chunk(c))
    rx.handle(wire.encode_offer(up.offer(4096)))
    rx.commit()
    restarted = UpdateSlots(slots.root, slots.trust)
    old = DeploymentManifest.from_json((world["old"] / "manifest.json").read_bytes())
    info = restarted.open(world["old"], old, PI_DEVICE)  # the updated model, not --deploy's
    assert (info.sequence, info.model_sha256) == (5, up.manifest.model_sha256)


def test_open_updates_serves_the_deployment_first_then_the_update(world, tmp_path):  # noqa: F811
    from slimedge.runtime.update_receiver import open_updates

    state = tmp_path / "state"
    rx, path, info = open_updates(state, world["old"], PI_DEVICE, "rpi4b", world["public"])
    assert (info.sequence, info.model_sha256) == (0, old_sha(world, PI_DEVICE))
    assert path.read_bytes() == (world["old"] / "devices" / "cam01.tflite").read_bytes()
    rx.slots.clock = lambda: NOW
    up = update_for(world, PI_DEVICE, 5)
    for c in up.chunks(4096):
        rx.handle(wire.encode_chunk(c))
    rx.handle(wire.encode_offer(up.offer(4096)))
    rx.commit()
    _, path, info = open_updates(state, world["old"], PI_DEVICE, "rpi4b", world["public"])
    assert (info.sequence, info.deployment_id) == (5, "fleet-new")
    assert path.parent.name in ("a", "b") and info.model_sha256 == up.manifest.model_sha256


def test_link_prepares_on_its_thread_and_swaps_between_frames(world, tmp_path,  # noqa: F811
                                                               mqtt_broker):
    import functools

    import numpy as np

    from slimedge.runtime import topics
    from slimedge.runtime.device_setup import load_device
    from slimedge.runtime.mqtt import MqttClient
    from slimedge.runtime.update_receiver import UpdateLink, open_updates, prepare_model
    from tests.update_fixtures import MCU_DEVICE

    host = MqttClient(mqtt_broker.url, name="host",
                      subscriptions=[(topics.ack_all("t"), 1)]).start()
    for device, board, runtime in ((PI_DEVICE, "rpi4b", "litert-cpu"),
                                   (MCU_DEVICE, "esp32s3", "tflm")):
        dev = load_device(world["old"], device, world["public"])
        assert dev.runtime == runtime
        rx, _, _ = open_updates(tmp_path / device, world["old"], device, board, world["public"])
        rx.slots.clock = lambda: NOW
        client = MqttClient(mqtt_broker.url, name=device).start()
        link = UpdateLink(client, "t", rx, functools.partial(prepare_model, dev)).start()
        up = update_for(world, device, 5)
        for c in up.chunks(4096):
            host.publish(topics.update("t", device), wire.encode_chunk(c), qos=1)
        host.publish(topics.update("t", device), wire.encode_offer(up.offer(4096)), qos=1)
        before = dev.engine.run(np.full(dev.image_shape, 90, np.uint8)).features
        swapped, frames = None, 0
        while swapped is None and frames < 3000:  # the frame loop, 5 ms per frame
            frames += 1
            dev.engine.run(np.full(dev.image_shape, 90, np.uint8))
            time.sleep(0.005)
            swapped = link.swap_if_ready()
        link.stop()
        client.stop()
        assert swapped is not None and swapped[1].sequence == 5
        assert (dev.model_hash, dev.deployment_id, dev.level) == (
            up.manifest.model_sha256, "fleet-new", 0.5)
        after = dev.engine.run(np.full(dev.image_shape, 90, np.uint8)).features
        assert after.shape == before.shape and not np.array_equal(after, before)
        acks = []
        while (m := host.get(timeout=2.0)) is not None and not acks:
            ack = wire.Ack.from_bytes(m.payload)
            if ack.device == device:
                acks.append(ack)
        assert acks and acks[0].status == wire.APPLIED and acks[0].model_hash == dev.model_hash
    host.stop()


def test_serve_model_refuses_a_model_for_another_camera(world, tmp_path):  # noqa: F811
    from slimedge.runtime.device_setup import load_device
    from slimedge.runtime.update_receiver import open_updates, serve_model

    dev = load_device(world["old"], PI_DEVICE, world["public"])
    _, path, info = open_updates(tmp_path / "s", world["old"], PI_DEVICE, "rpi4b",
                                 world["public"])
    dev.image_shape = (32, 32, 1)
    with pytest.raises(upd.UpdateError, match=r"takes images \(16, 16, 1\), the camera"):
        serve_model(dev, path, info)


def test_a_model_the_device_cannot_serve_is_refused_and_the_old_one_kept(world, tmp_path):  # noqa: F811
    from slimedge.errors import SlimEdgeError

    slots = make_slots(world, tmp_path)
    rx = UpdateReceiver(slots)
    up = update_for(world, PI_DEVICE, 5)
    for c in up.chunks(4096):
        rx.handle(wire.encode_chunk(c))
    rx.handle(wire.encode_offer(up.offer(4096)))
    seen = []

    def serve(path, info):
        seen.append((path.name, info.sequence))
        raise SlimEdgeError("the camera gives 32x32 images")

    ack, path = rx.commit(serve)
    assert seen == [("cam01.tflite", 5)] and path is None
    assert (ack.status, ack.reason) == (wire.REFUSED, upd.DEVICE_ERROR)
    assert "32x32" in ack.message and ack.running_sequence == 0
    assert UpdateSlots(slots.root, slots.trust).recover().sequence == 0


@pytest.mark.parametrize("late", [False, True])
def test_an_update_for_frame_f_is_prepared_then_served_from_frame_f(world, tmp_path,  # noqa: F811
                                                                    mqtt_broker, late):
    import functools

    from slimedge.runtime import topics
    from slimedge.runtime.device_setup import load_device
    from slimedge.runtime.mqtt import MqttClient
    from slimedge.runtime.update_receiver import UpdateLink, open_updates, prepare_model

    dev = load_device(world["old"], PI_DEVICE, world["public"])
    rx, _, _ = open_updates(tmp_path / "s", world["old"], PI_DEVICE, "rpi4b", world["public"])
    rx.slots.clock = lambda: NOW
    client = MqttClient(mqtt_broker.url, name="dev").start()
    link = UpdateLink(client, "t", rx, functools.partial(prepare_model, dev)).start()
    host = MqttClient(mqtt_broker.url, name="host").start()
    acks = MqttClient(mqtt_broker.url, name="acks",
                      subscriptions=[(topics.ack("t", PI_DEVICE), 1)]).start()
    up = update_for(world, PI_DEVICE, 5, commit_at_frame=400)
    assert upd.UpdateManifest.from_bytes(up.manifest_bytes).commit_at_frame == 400
    for c in up.chunks(4096):
        host.publish(topics.update("t", PI_DEVICE), wire.encode_chunk(c), qos=1)
    host.publish(topics.update("t", PI_DEVICE), wire.encode_offer(up.offer(4096)), qos=1)
    deadline = time.monotonic() + 60
    # `late`: the update is ready only once the frame loop is past its frame (a slow
    # transfer): served from the next frame, and the ack says which
    start, hold = (500, 500) if late else (0, 300)
    frame, swapped_at = start, None
    while swapped_at is None and frame < 1000:
        while frame == hold and link.prepared is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the frame loop goes on; here it waits for the download
        if link.swap_if_ready(frame) is not None:
            swapped_at = frame
        frame += 1
    applied = None
    while applied is None and (m := acks.get(timeout=5.0)) is not None:
        ack = wire.Ack.from_bytes(m.payload)
        applied = ack if ack.status == wire.APPLIED else None
    for c in (link, client, host, acks):
        c.stop()
    assert swapped_at == (500 if late else 400) and dev.model_hash == up.manifest.model_sha256
    assert applied is not None and applied.first_frame == swapped_at
