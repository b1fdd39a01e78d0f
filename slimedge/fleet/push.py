"""`slimedge push --deploy NEW --broker URL [--devices cam01,...] [--json]`: carry a signed
deployment to the running devices as signed per-device updates over MQTT.

1. Listen briefly to the fleet's heartbeats and the retained offers on the update topics to
   learn what each device runs and the highest sequence issued (devices refuse anything not
   above the sequence they run).
2. Build one update per changed device (its model differs from the one it reports), all with
   one new fleet sequence (`SequenceCounter` beside the key, raised above what devices report).
3. Per device: publish the payload's chunks (QoS 1), then the signed offer (retained, QoS 1:
   a device that connects later gets it and asks for what it misses).
4. Wait for each device's acknowledgment: `applied`, `refused` (with the reason) or `missing`
   (byte ranges: resent, so an interrupted transfer resumes). No answer within the timeout
   is `timed out`.

The summary has `devices` -> {`status`, `reason`, `seconds`, `first_frame`, `late_frames`};
the command exits non-zero when any device did not apply its update. `late_devices` lists those
that applied after the switch frame (`mark_late`).

Fleet-wide switch: when the fleet's aggregator takes part (`--aggregator yes`, or `auto` and its
retained state heard on slimedge/<fleet>/aggregator/state), every device switches at one frame
id F, and so does the aggregator. F is `--at-frame`, else the aggregator's last frame answered
plus `--lead` seconds of frames at its frame rate. The aggregator's part (signed order + the new
deployment's manifest and aggregator files, `updates.build_aggregator_update`) goes first; only
once it acknowledges `prepared` are the devices sent theirs, all with commit_at_frame = F.
Every device of the deployment is considered (`--devices` does not narrow a switch), but only
those whose model changes get an update: a device whose heartbeat names the new artifact's
sha256 is `unchanged`, sent nothing, and keeps sending under its deployment id; the aggregator
pools it from F on because the new deployment names the same model for it (the same bytes: the
same features and quantization). `--exclude` leaves devices out (down: not sent, not waited
for, absent from `devices`). The aggregator's part is sent even when no device changes (a
switch that only drops a dead device's views). An
aggregator refusal stops the push before any device is touched. The summary's `aggregator`
entry: `status` (applied | prepared | refused | timed out), `reason`, `seconds` (push start ->
the aggregator's first frame with the new deployment), `prepared_seconds`, `commit_at_frame`,
`first_frame`; the command exits non-zero unless it is applied.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimedge.errors import SlimEdgeError
from slimedge.fleet.updates import (
    SEQUENCE_FILE,
    AggregatorUpdate,
    DeviceUpdate,
    SequenceCounter,
    build_aggregator_update,
    build_updates,
)
from slimedge.runtime import topics
from slimedge.runtime.update_messages import (
    APPLIED,
    MISSING,
    REFUSED,
    Ack,
    Offer,
    UpdateMessageError,
    decode,
    encode_chunk,
    encode_offer,
)

TIMED_OUT, UNCHANGED, NOT_SENT = "timed out", "unchanged", "not sent"
PREPARED = "prepared"
DEFAULT_LEAD_S = 5.0
AUTO_LISTEN_S = 0.5  # a retained aggregator state arrives at once; no longer wait for it
DEFAULT_CHUNK_BYTES = 16 * 1024
WINDOW = 32  # QoS 1 messages in flight per push: a slow link backs up here, not in memory


class PushError(SlimEdgeError):
    """A push that could not be made, or in which a device did not apply its update."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary
        self.exit_code = 1 if summary is not None else 2


@dataclass
class DeviceState:
    """What push learned of one device before publishing."""

    model_hash: str | None = None  # from its heartbeat
    sequence: int = 0  # running (heartbeat) or offered (retained offer)


@dataclass
class Outcome:
    status: str = TIMED_OUT
    reason: str | None = None
    message: str = ""
    seconds: float | None = None
    device_seconds: float | None = None
    resent_chunks: int = 0
    bytes: int | None = None  # the payload sent (model, and an MCU's firmware bundle)
    first_frame: int | None = None  # the first frame the device served with the update
    late_frames: int | None = None  # frames past the switch frame F before it did (`mark_late`)
    started: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "message": self.message,
                "seconds": self.seconds, "device_seconds": self.device_seconds,
                "resent_chunks": self.resent_chunks, "bytes": self.bytes,
                "first_frame": self.first_frame, "late_frames": self.late_frames}


def mark_late(outcomes: dict[str, Outcome], at_frame: int | None) -> list[str]:
    """Devices that applied their update after the switch frame F: the aggregator pools a
    frame >= F only from the new deployment, so such a device's views were missing from
    frames F .. first_frame - 1 (its messages there are refused as `wrong_deployment`). They
    stay `applied` (they serve the new model now); `late_frames` and the message say so."""
    late = []
    if at_frame is None:
        return late
    for name, o in outcomes.items():
        if o.status == APPLIED and o.first_frame is not None and o.first_frame > at_frame:
            o.late_frames = o.first_frame - at_frame
            o.message = (f"applied at frame {o.first_frame}, {o.late_frames} frame(s) after "
                         f"the switch at frame {at_frame}: its views were missing from those "
                         "frames")
            late.append(name)
    return late


def add_push_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deploy", required=True, metavar="DIR",
                   help="the signed deployment to push (its devices' artifacts)")
    p.add_argument("--broker", required=True, metavar="URL",
                   help="mqtt://[user:pass@]host:port (mqtts:// for TLS)")
    p.add_argument("--devices", default=None, metavar="LIST",
                   help="comma-separated device ids (default: every device of the deployment)")
    p.add_argument("--exclude", default=None, metavar="LIST",
                   help="comma-separated device ids left out: not sent, not waited for (down)")
    p.add_argument("--key", default=None, metavar="PRIVATE_PEM",
                   help="Ed25519 private key that signed the deployment (default: "
                   "<deploy>/../keys/private_key.pem)")
    p.add_argument("--fleet", default=None, metavar="NAME",
                   help="fleet name in the topics (default: from the deployment id)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for every device's acknowledgment")
    p.add_argument("--listen", type=float, default=3.0, metavar="S",
                   help="seconds to listen for heartbeats before deciding what changed")
    p.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, metavar="N",
                   help="payload bytes per chunk message (small for a slow link)")
    p.add_argument("--expires", type=float, default=7 * 24 * 3600, metavar="S",
                   help="seconds the signed updates stay valid")
    p.add_argument("--rollback", action="store_true",
                   help="sign the updates as a rollback order (allowed to go back to an "
                   "older deployment)")
    p.add_argument("--emulate-link", action="store_true",
                   help="send each device's update no faster than its board's link carries "
                   "it (link.bandwidth in firmware_configs/devices: BLE for the nRF52840)")
    p.add_argument("--at-frame", type=int, default=None, metavar="F",
                   help="devices serve the update from frame id F on, all at once (they "
                   "download, verify and prepare it before); default: as soon as ready")
    p.add_argument("--all", dest="push_all", action="store_true",
                   help="push to every listed device, even one that runs this model already")
    p.add_argument("--aggregator", choices=("auto", "yes", "no"), default="auto",
                   help="switch the aggregator too, with every device at one frame id: yes, "
                   "no, or auto (when its retained state is heard on the fleet)")
    p.add_argument("--lead", type=float, default=DEFAULT_LEAD_S, metavar="S",
                   help="without --at-frame, with the aggregator: switch this many seconds of "
                   "frames after the aggregator's last frame answered")


def push(args: argparse.Namespace) -> dict[str, Any]:
    """The handler of `slimedge push`: prints the per-device table (or, with --json, returns
    the summary for the CLI to print); PushError with the summary when a device did not
    apply (the CLI exits 1)."""
    summary = run_push(
        Path(args.deploy), args.broker, devices=_device_list(args.devices), key=args.key,
        fleet=args.fleet, timeout=args.timeout, listen=args.listen,
        chunk_bytes=args.chunk_bytes, expires=args.expires, rollback=args.rollback,
        push_all=args.push_all, emulate_link=args.emulate_link, at_frame=args.at_frame,
        aggregator={"auto": None, "yes": True, "no": False}[args.aggregator],
        lead_s=args.lead, exclude=_device_list(args.exclude, "--exclude"))
    if not args.json:
        print(format_table(summary))
    failed = [d for d, o in summary["devices"].items() if o["status"] not in (APPLIED, UNCHANGED)]
    agg = summary.get("aggregator")
    if agg is not None and agg["status"] != APPLIED:
        raise PushError(f"the aggregator did not switch to {summary['deployment_id']} at frame "
                        f"{summary['at_frame']}: {agg['status']}"
                        + (f" ({agg['reason']}: {agg['message']})" if agg["reason"] else ""),
                        summary)
    if failed:
        raise PushError(f"{len(failed)} of {len(summary['devices'])} device(s) did not apply "
                        f"sequence {summary['sequence']}: {', '.join(failed)}", summary)
    return summary if args.json else {}


def _device_list(text: str | None, flag: str = "--devices") -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise PushError(f"{flag} {text!r}: no device id given")
    return names


def run_push(deploy: Path, broker: str, *, devices: list[str] | None = None,
             key: str | Path | None = None, fleet: str | None = None, timeout: float = 120.0,
             listen: float = 3.0, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
             expires: float = 7 * 24 * 3600, rollback: bool = False,
             push_all: bool = False, emulate_link: bool = False,
             at_frame: int | None = None, aggregator: bool | None = None,
             lead_s: float = DEFAULT_LEAD_S, exclude: list[str] | None = None
             ) -> dict[str, Any]:
    """Push `deploy` to the fleet on `broker` (module doc); the summary dict `--json` prints.
    `aggregator`: True (switch it too: required), False (devices only), None (auto).
    `exclude`: devices not sent, not waited for and absent from the summary (down ones)."""
    from slimedge.export.manifest import MANIFEST_NAME, DeploymentManifest
    from slimedge.export.signing import PRIVATE_KEY_NAME
    from slimedge.runtime.mqtt import MqttClient

    if chunk_bytes < 1:
        raise PushError(f"--chunk-bytes must be >= 1, got {chunk_bytes}")
    key_path = Path(key) if key else deploy.resolve().parent / "keys" / PRIVATE_KEY_NAME
    try:
        manifest = DeploymentManifest.from_json((deploy / MANIFEST_NAME).read_bytes(),
                                                source=str(deploy / MANIFEST_NAME))
    except OSError as exc:
        raise PushError(f"{deploy / MANIFEST_NAME}: cannot read ({exc.strerror})") from None
    fleet = fleet or topics.fleet_name(manifest.deployment_id, manifest.created)
    left_out = set(exclude or ())
    names = devices or [d.device for d in manifest.devices]
    for flag, given in (("--devices", names), ("--exclude", sorted(left_out))):
        unknown = [n for n in given if n not in {d.device for d in manifest.devices}]
        if unknown:
            raise PushError(f"{flag}: {', '.join(unknown)} not in deployment "
                            f"{manifest.deployment_id}")
    names = [n for n in names if n not in left_out]

    # What devices run: heard on a client of its own, so the delivery client below receives
    # acknowledgments only (not its own chunks echoed back from the update topics).
    started = time.monotonic()
    all_names = [d.device for d in manifest.devices if d.device not in left_out]
    watch_names = all_names if aggregator is not False else names
    watcher = MqttClient(broker, name="slimedge-push-watch",
                         subscriptions=[(topics.heartbeat_all(fleet), 0),
                                        (topics.aggregator_state(fleet), 1)]
                         + [(topics.update(fleet, n), 1) for n in watch_names]).start()
    try:
        states, agg_state = _listen(watcher, fleet, watch_names, listen,
                                    want_aggregator=aggregator is True)
    finally:
        watcher.stop()
    part: _AggregatorPart | None = None
    if aggregator is True and agg_state is None:
        raise PushError(f"no aggregator heard on {topics.aggregator_state(fleet)} within "
                        f"{listen:g} s: start it, or push to the devices only (--aggregator no)")
    if aggregator is not False and agg_state is not None:
        at_frame = _switch_frame(agg_state, at_frame, lead_s)
        part = _AggregatorPart(at_frame, started)
        names = all_names  # every device whose model changes must switch at F
    changed = [n for n in names if push_all or not _runs(states[n], manifest.device(n))]
    outcomes: dict[str, Outcome] = {n: Outcome(UNCHANGED, message="runs this model already: "
                                               "nothing sent")
                                    for n in names if n not in changed}
    sequence = None
    if changed or part is not None:
        seen = max([s.sequence for s in states.values()]
                   + [int((agg_state or {}).get("sequence") or 0)])
        sequence = SequenceCounter(key_path.parent / SEQUENCE_FILE).next(at_least=seen)
        agg_update = None if part is None else build_aggregator_update(
            deploy, key_path, sequence=sequence, commit_at_frame=at_frame, expires_in_s=expires)
        updates = build_updates(deploy, key_path, sequence=sequence, devices=changed,
                                expires_in_s=expires, rollback=rollback,
                                commit_at_frame=at_frame)
        bandwidth = _link_bandwidths(manifest, changed) if emulate_link else {}
        client = MqttClient(broker, name="slimedge-push", inbound_max=100_000,
                            subscriptions=[(topics.ack_all(fleet), 1)]).start()
        try:
            deadline = started + timeout
            if part is not None and agg_update is not None:
                part.prepare(client, fleet, agg_update, chunk_bytes, deadline)
            if changed and (part is None or part.status == PREPARED):
                outcomes.update(_deliver(client, fleet, updates, chunk_bytes, timeout,
                                         bandwidth, on_message=part and part.take))
            elif changed and part is not None:
                outcomes.update({n: Outcome(NOT_SENT, "aggregator-" + part.status.replace(
                    " ", "-"), "the aggregator did not prepare the switch: devices untouched")
                    for n in changed})
            if part is not None:
                part.wait_applied(client, deadline)
        finally:
            client.stop()
    late = mark_late(outcomes, at_frame if part is not None else None)
    return {
        "deployment_id": manifest.deployment_id, "fleet": fleet, "sequence": sequence,
        "broker": broker, "chunk_bytes": chunk_bytes, "emulate_link": emulate_link,
        "at_frame": at_frame,
        "devices": {n: outcomes[n].to_dict() for n in names},
        "late_devices": late,
        "aggregator": None if part is None else part.to_dict(),
    }


def _switch_frame(state: dict[str, Any], at_frame: int | None, lead_s: float) -> int:
    """F: the one given, else the aggregator's last frame + `lead_s` seconds of frames."""
    if at_frame is not None:
        return int(at_frame)
    last, fps = state.get("last_frame"), state.get("fps") or state.get("frames_per_s")
    if not isinstance(last, int) or not isinstance(fps, (int, float)) or not fps > 0:
        raise PushError("cannot choose the frame to switch at: the aggregator has answered no "
                        f"frame yet (last_frame {last!r}, frame rate {fps!r}); pass --at-frame F")
    if not lead_s > 0:
        raise PushError(f"--lead must be > 0 seconds, got {lead_s}")
    return last + 1 + math.ceil(lead_s * fps)


class _AggregatorPart:
    """The aggregator's side of one push: send its order, wait for `prepared`, later for
    `applied` (the first frame it answered with the new deployment)."""

    def __init__(self, at_frame: int, started: float) -> None:
        self.at_frame, self.started = at_frame, started
        self.status, self.reason, self.message = TIMED_OUT, None, ""
        self.seconds: float | None = None
        self.prepared_seconds: float | None = None
        self.first_frame: int | None = None
        self.resent_chunks = 0
        self.bytes: int | None = None
        self._update: AggregatorUpdate | None = None
        self._resend: Callable[[list[list[int]]], None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "message": self.message,
                "seconds": self.seconds, "prepared_seconds": self.prepared_seconds,
                "commit_at_frame": self.at_frame, "first_frame": self.first_frame,
                "resent_chunks": self.resent_chunks, "bytes": self.bytes}

    def take(self, msg: Any) -> bool:
        """Handle `msg` if it is the aggregator's acknowledgment (True), else False."""
        from slimedge.runtime.aggregator_update import APPLIED as AGG_APPLIED
        from slimedge.runtime.aggregator_update import AggregatorAck

        up = self._update
        if up is None or msg.topic != topics.aggregator_ack(up.order.fleet):
            return False
        try:
            ack = AggregatorAck.from_bytes(msg.payload)
        except UpdateMessageError:
            return True
        if ack.sequence != up.sequence:
            return True
        now = round(time.monotonic() - self.started, 4)
        if ack.status == MISSING:
            if self._resend is not None:
                self._resend(ack.missing)
            return True
        if ack.status == PREPARED and self.status == TIMED_OUT:
            self.status, self.prepared_seconds = PREPARED, now
        elif ack.status == AGG_APPLIED:
            self.status, self.seconds, self.first_frame = APPLIED, now, ack.first_frame
            self.prepared_seconds = self.prepared_seconds or now
        elif ack.status == REFUSED:
            self.status, self.reason, self.message = REFUSED, ack.reason, ack.message
        return True

    def prepare(self, client: Any, fleet: str, up: AggregatorUpdate, chunk_bytes: int,
                deadline: float) -> None:
        """Chunks, then the retained offer; resend what it misses; until prepared/refused."""
        self._update, self.bytes = up, len(up.payload)
        topic = topics.aggregator_update(fleet)
        chunks = up.chunks(chunk_bytes)

        def resend(ranges: list[list[int]]) -> None:
            for c in chunks:
                if any(c.offset < a + n and a < c.offset + len(c.data) for a, n in ranges):
                    _publish(client, topic, encode_chunk(c))
                    self.resent_chunks += 1

        self._resend = resend
        for c in chunks:
            _publish(client, topic, encode_chunk(c))
        _publish(client, topic, encode_offer(up.offer(chunk_bytes)), retain=True)
        while self.status == TIMED_OUT and time.monotonic() < deadline:
            msg = client.get(timeout=0.1)
            if msg is not None:
                self.take(msg)
        if self.status == TIMED_OUT:
            self.message = "no acknowledgment (prepared) before the timeout"

    def wait_applied(self, client: Any, deadline: float) -> None:
        while self.status == PREPARED and time.monotonic() < deadline:
            msg = client.get(timeout=0.1)
            if msg is not None:
                self.take(msg)
        if self.status == PREPARED:
            self.message = (f"prepared, but frame {self.at_frame} was not answered before the "
                            "timeout")


def _link_bandwidths(manifest: Any, devices: list[str]) -> dict[str, float | None]:
    """Each device's link bandwidth (bit/s) from its board file."""
    from slimedge.devices import load_catalog

    catalog = load_catalog()
    out: dict[str, float | None] = {}
    for name in devices:
        board = manifest.device(name).board
        if board not in catalog:
            raise PushError(f"--emulate-link: device {name}'s board {board!r} is not in the "
                            f"device catalog (firmware_configs/devices)")
        out[name] = float(catalog[board].link.bandwidth_bps)
    return out


def _runs(state: DeviceState, entry: Any) -> bool:
    """Does the device say (in its heartbeat) that it runs this entry's model? A device that
    did not speak gets the update: it waits, retained, until the device connects."""
    h = state.model_hash
    return bool(h) and len(h) >= 16 and entry.sha256.startswith(h)


def _listen(client: Any, fleet: str, names: list[str], seconds: float, *,
            want_aggregator: bool = False
            ) -> tuple[dict[str, DeviceState], dict[str, Any] | None]:
    """Heartbeats, retained offers and the aggregator's retained state for up to `seconds`
    (less once every device spoke and the aggregator was heard, or AUTO_LISTEN_S passed)."""
    states = {n: DeviceState() for n in names}
    heard: set[str] = set()
    agg: dict[str, Any] | None = None
    start = time.monotonic()
    deadline = start + seconds

    def done() -> bool:
        if len(heard) < len(names):
            return False
        return agg is not None or (not want_aggregator
                                   and time.monotonic() - start >= AUTO_LISTEN_S)

    while time.monotonic() < deadline and not done():
        msg = client.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
        if msg is None:
            continue
        if msg.topic == topics.aggregator_state(fleet):
            agg = _aggregator_state(msg.payload) or agg
            continue
        try:
            _, device, kind = topics.device_of(msg.topic)
        except topics.TopicError:
            continue
        if device not in states:
            continue
        st = states[device]
        if kind == "heartbeat":
            try:
                hb = json.loads(msg.payload)
                st.model_hash = str(hb.get("model_hash") or "") or None
                st.sequence = max(st.sequence, int(hb.get("update_sequence") or 0))
            except (ValueError, TypeError, AttributeError):
                continue
            heard.add(device)
        elif kind == "update" and msg.payload:
            try:
                offer = decode(msg.payload)
            except UpdateMessageError:
                continue
            if isinstance(offer, Offer):
                st.sequence = max(st.sequence, offer.sequence)
    return states, agg


def _aggregator_state(payload: bytes) -> dict[str, Any] | None:
    """The aggregator's retained state if it says it is running, else None."""
    try:
        state = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return state if isinstance(state, dict) and state.get("running") is True else None


def _publish(client: Any, topic: str, payload: bytes, retain: bool = False) -> None:
    while client.pending >= WINDOW:
        time.sleep(0.002)
    if not client.publish(topic, payload, qos=1, retain=retain):
        raise PushError(f"{topic}: the MQTT client dropped a message (queue full)")


class _Links:
    """Per-device message queues, sent interleaved across devices; with a bandwidth for a
    device, its messages leave no faster than its link would carry them (bits / bit/s), so a
    BLE node's transfer takes the time BLE takes while the others go at full speed."""

    def __init__(self, client: Any, bandwidth_bps: dict[str, float | None]) -> None:
        self.client = client
        self.bps = bandwidth_bps
        self.free_at: dict[str, float] = {}
        self.queue: list[tuple[str, str, bytes, bool]] = []  # device, topic, payload, retain

    def add(self, device: str, topic: str, payload: bytes, retain: bool = False) -> None:
        self.queue.append((device, topic, payload, retain))

    def pump(self, budget_s: float = 0.05) -> None:
        """Send what is due, for up to `budget_s` (the caller reads acks in between)."""
        end = time.monotonic() + budget_s
        while self.queue and time.monotonic() < end:
            now = time.monotonic()
            due = [i for i, (d, *_) in enumerate(self.queue) if self.free_at.get(d, 0) <= now]
            if not due:  # every queued device's link is busy: sleep until the first frees
                wake = min(self.free_at.get(d, 0) for d, *_ in self.queue)
                time.sleep(max(0.0, min(wake, end) - now))
                continue
            seen, sent = set(), []
            for i in due:  # one message per device per round: devices interleave
                device = self.queue[i][0]
                if device in seen:
                    continue
                seen.add(device)
                _, topic, payload, retain = self.queue[i]
                _publish(self.client, topic, payload, retain)
                bps = self.bps.get(device)
                if bps:
                    self.free_at[device] = max(now, self.free_at.get(device, 0)) \
                        + 8 * len(payload) / bps
                sent.append(i)
            for i in reversed(sent):
                del self.queue[i]

    def idle(self, device: str) -> bool:
        return not any(d == device for d, *_ in self.queue)


def _chunk_messages(up: DeviceUpdate, chunk_bytes: int,
                    ranges: list[list[int]] | None = None) -> list[bytes]:
    out = []
    for c in up.chunks(chunk_bytes):
        if ranges is None or any(c.offset < a + n and a < c.offset + len(c.data)
                                 for a, n in ranges):
            out.append(encode_chunk(c))
    return out


def _deliver(client: Any, fleet: str, updates: list[DeviceUpdate], chunk_bytes: int,
             timeout: float, bandwidth_bps: dict[str, float | None],
             on_message: Callable[[Any], bool] | None = None) -> dict[str, Outcome]:
    """Send every device its update, resend what a device misses, until every device answered
    or `timeout`; `on_message` sees every message first (True: taken, not a device's ack)."""
    outcomes = {u.device: Outcome(bytes=u.manifest.bytes) for u in updates}
    by_device = {u.device: u for u in updates}
    links = _Links(client, bandwidth_bps)
    for up in updates:  # chunks first, then the retained offer that tells what they are
        topic = topics.update(fleet, up.device)
        for msg in _chunk_messages(up, chunk_bytes):
            links.add(up.device, topic, msg)
        links.add(up.device, topic, encode_offer(up.offer(chunk_bytes)), retain=True)
    waiting = set(by_device)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        links.pump()
        while (msg := client.get(timeout=0.0 if links.queue else 0.1)) is not None:
            if on_message is not None and on_message(msg):
                continue
            ack = _ack_of(msg, waiting)
            if ack is None:
                continue
            up, out = by_device[ack.device], outcomes[ack.device]
            if ack.sequence != up.manifest.sequence:
                continue
            if ack.status == MISSING:  # resume: send only what the device lacks
                if links.idle(ack.device):  # else the rest is on its way already
                    resend = _chunk_messages(up, chunk_bytes, ack.missing)
                    for m in resend:
                        links.add(ack.device, topics.update(fleet, ack.device), m)
                    out.resent_chunks += len(resend)
                continue
            out.status, out.reason, out.message = ack.status, ack.reason, ack.message
            out.seconds = round(time.monotonic() - out.started, 4)
            out.device_seconds = ack.seconds
            out.first_frame = ack.first_frame
            waiting.discard(ack.device)
    for device in waiting:
        outcomes[device].message = f"no acknowledgment within {timeout:g} s"
    return outcomes


def _ack_of(msg: Any, waiting: set[str]) -> Ack | None:
    """The acknowledgment in `msg` from a device still waited for, else None."""
    try:
        _, device, kind = topics.device_of(msg.topic)
    except topics.TopicError:
        return None
    if kind != "ack" or device not in waiting:
        return None
    try:
        ack = Ack.from_bytes(msg.payload)
    except UpdateMessageError:
        return None
    return ack if ack.device == device else None


def format_table(summary: dict[str, Any]) -> str:
    """The per-device table `slimedge push` prints."""
    rows = [("device", "status", "seconds", "reason")]
    for device, o in summary["devices"].items():
        secs = "" if o["seconds"] is None else f"{o['seconds']:.2f}"
        why = o["reason"] or ""
        if o["message"] and (o["status"] not in (APPLIED, UNCHANGED) or o.get("late_frames")):
            why = f"{why}: {o['message']}" if why else o["message"]
        rows.append((device, o["status"], secs, why))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"push of {summary['deployment_id']} to fleet {summary['fleet']}, sequence "
             f"{summary['sequence']}"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True))
                     + "  " + r[3])
    agg = summary.get("aggregator")
    if agg is not None:
        secs = "" if agg["seconds"] is None else f" after {agg['seconds']:.2f} s"
        why = f" ({agg['reason']}: {agg['message']})" if agg["reason"] else (
            f" ({agg['message']})" if agg["message"] else "")
        first = "" if agg["first_frame"] is None else f", first frame {agg['first_frame']}"
        lines.append(f"aggregator: {agg['status']} at frame {agg['commit_at_frame']}{first}"
                     f"{secs}{why}")
    return "\n".join(lines)


__all__ = ["APPLIED", "NOT_SENT", "PREPARED", "REFUSED", "TIMED_OUT", "UNCHANGED", "PushError",
           "add_push_options",
           "format_table", "mark_late", "push", "run_push"]
