"""The MQTT link every fleet process uses (agent, aggregator, update push): paho-mqtt 2.x,
wrapped so the failure modes that bite in production are handled once, here.

- Broker URL `mqtt://[user:pass@]host[:port]` or `mqtts://...` (TLS; optional CA file).
- A unique client id per process (two clients sharing an id knock each other off forever).
- The Will is set before connecting; on every (re)connect the client re-subscribes, publishes
  the retained state, and only then the birth message (so "online" never precedes state).
- A refused CONNACK (bad password, not authorised) stops the client and raises
  `BrokerRefusedError` from `start`/`wait_connected` instead of retrying forever.
- Reconnects by itself with exponential backoff while the broker is away.
- Publishes while disconnected are counted as dropped (paho would lose QoS 0 silently);
  QoS >= 1 messages queue inside paho up to `max_queued`, then are dropped and counted.
- No exception escapes a paho callback (it would kill the network thread): each is caught,
  counted in `stats()["callback_errors"]` and logged.
- Inbound messages go to a bounded, drop-oldest queue read with `get()`: no blocking work runs
  on the network thread.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from slimedge.errors import SlimEdgeError
from slimedge.runtime.bounded import DropOldestQueue

__all__ = [
    "BrokerRefusedError",
    "BrokerUrl",
    "Inbound",
    "Message",
    "MqttClient",
    "MqttError",
    "parse_broker_url",
]

log = logging.getLogger("slimedge.mqtt")

MQTT311 = 4
MQTT5 = 5


class MqttError(SlimEdgeError):
    """A broker URL that cannot be used, or a broker that could not be reached in time."""


class BrokerRefusedError(MqttError):
    """The broker answered CONNECT with a failure reason (credentials, authorisation)."""


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:  # never print the password
        user = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """`mqtt://[user:pass@]host[:port]` (port 1883) or `mqtts://...` (port 8883)."""
    if not isinstance(url, str) or "://" not in url:
        raise MqttError(f"broker URL {url!r}: expected mqtt://[user:pass@]host:port "
                        "or mqtts://...")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttError(f"broker URL {url!r}: scheme must be mqtt or mqtts, "
                        f"got {parts.scheme!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttError(f"broker URL {url!r}: no path, query or fragment allowed")
    if not parts.hostname:
        raise MqttError(f"broker URL {url!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise MqttError(f"broker URL {url!r}: the port must be 1..65535") from None
    tls = parts.scheme == "mqtts"
    if port is None:
        port = 8883 if tls else 1883
    if not 1 <= port <= 65535:
        raise MqttError(f"broker URL {url!r}: the port must be 1..65535")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not user:
        raise MqttError(f"broker URL {url!r}: a password needs a user name")
    return BrokerUrl(parts.hostname, port, tls, user, password)


@dataclass(frozen=True)
class Message:
    """An outgoing message (Will, birth, retained state, a final word before exit)."""

    topic: str
    payload: bytes | str
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True)
class Inbound:
    """A received message, as handed from the network thread to the application."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_ns: int


def _guarded(method: Callable) -> Callable:
    """Wrap a paho callback so an exception is counted and logged, never propagated."""

    @functools.wraps(method)
    def wrapper(self: MqttClient, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception:  # noqa: BLE001 - an escaping exception kills paho's loop thread
            with self._lock:
                self._stats["callback_errors"] += 1
            log.exception("%s: error in MQTT callback %s", self.client_id, method.__name__)
            return None

    return wrapper


class MqttClient:
    """One MQTT connection of one process. Thread-safe: `publish`/`get` from any thread.

    name: a readable prefix of the client id (the id adds the pid and random hex).
    will: the Last Will (set before connecting). birth: published on every connect, after
    `retained_state()`'s messages. subscriptions: (topic filter, qos), renewed on every
    connect. inbound_max: size of the drop-oldest inbound queue. max_queued: paho's bound on
    queued QoS >= 1 messages. protocol: 4 (MQTT 3.1.1, any broker) or 5 (MQTT 5: reason codes
    on PUBACK, e.g. 0x87 for a publish the ACL denies, reach `stats()["publish_refused"]`).
    """

    def __init__(
        self,
        url: str | BrokerUrl,
        *,
        name: str,
        will: Message | None = None,
        birth: Message | None = None,
        retained_state: Callable[[], Iterable[Message]] | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        inbound_max: int = 10_000,
        max_queued: int = 1000,
        keepalive: int = 10,
        reconnect_delay: tuple[float, float] = (0.25, 8.0),
        ca_file: str | os.PathLike | None = None,
        protocol: int = MQTT311,
    ) -> None:
        self.url = url if isinstance(url, BrokerUrl) else parse_broker_url(url)
        if protocol not in (MQTT311, MQTT5):
            raise MqttError(f"protocol: expected 4 (MQTT 3.1.1) or 5 (MQTT 5), got {protocol}")
        self.client_id = f"{name}-{os.getpid()}-{secrets.token_hex(3)}"
        self.birth = birth
        self.protocol = protocol
        self._retained_state = retained_state
        self._subscriptions: dict[str, int] = dict(subscriptions)
        self.inbound: DropOldestQueue[Inbound] = DropOldestQueue(inbound_max)
        self._lock = threading.Lock()
        self._state = threading.Condition(self._lock)
        self._connected = False
        self._refused: BrokerRefusedError | None = None
        self._stopped = False
        # mid -> qos of messages handed to paho and not yet confirmed by on_publish; `_early`
        # holds mids whose on_publish ran before publish() returned (the network thread is fast)
        self._in_flight: dict[int, int] = {}
        self._early: set[int] = set()
        self._stats = {
            "connects": 0, "disconnects": 0, "connect_failures": 0, "refusals": 0, "published": 0,
            "dropped_disconnected": 0, "dropped_queue_full": 0, "lost_in_flight": 0,
            "publish_refused": 0, "received": 0, "callback_errors": 0,
        }

        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=paho.MQTTv5 if protocol == MQTT5 else paho.MQTTv311)
        if self.url.username:
            c.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            c.tls_set(ca_certs=os.fspath(ca_file) if ca_file else None)
        if will is not None:
            c.will_set(will.topic, will.payload, will.qos, will.retain)
        c.reconnect_delay_set(*reconnect_delay)
        c.max_queued_messages_set(max_queued)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        self._keepalive = keepalive
        self._client = c

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self, wait: float | None = 10.0) -> MqttClient:
        """Connect in the background (retrying while the broker is unreachable). With `wait`,
        block until connected: BrokerRefusedError if the broker refuses, MqttError on timeout."""
        self._client.connect_async(self.url.host, self.url.port, keepalive=self._keepalive)
        self._client.loop_start()
        if wait is not None and not self.wait_connected(wait):
            raise MqttError(f"broker {self.url}: not connected within {wait:g} s "
                            f"({self._stats['connect_failures']} failed attempts)")
        return self

    def wait_connected(self, timeout: float | None = None) -> bool:
        """True once connected; False on timeout; BrokerRefusedError if the broker refused us."""
        with self._state:
            self._state.wait_for(lambda: self._connected or self._refused or self._stopped,
                                 timeout)
            if self._refused is not None:
                raise self._refused
            return self._connected

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def refused(self) -> BrokerRefusedError | None:
        with self._lock:
            return self._refused

    def stop(self, final: Iterable[Message] = (), timeout: float = 5.0) -> None:
        """Publish `final` (e.g. a retained "stopped") if connected, wait up to `timeout` for
        them to leave, disconnect cleanly (the broker then discards the Will) and stop."""
        infos = []
        if self.connected:
            for m in final:
                info = self._client.publish(m.topic, m.payload, max(m.qos, 1), m.retain)
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    infos.append(info)
        deadline = time.monotonic() + timeout
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):  # connection lost meanwhile
                break
        with self._state:
            self._stopped = True
            self._state.notify_all()
        self._client.disconnect()
        self._client.loop_stop()
        with self._state:
            self._connected = False

    # ---- traffic -----------------------------------------------------------------------

    def subscribe(self, topic: str, qos: int = 0) -> None:
        """Subscribe now (if connected) and on every later reconnect."""
        with self._lock:
            self._subscriptions[topic] = qos
            connected = self._connected
        if connected:
            self._client.subscribe(topic, qos)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0,
                retain: bool = False) -> bool:
        """Hand one message to the link. False (and counted) when it was dropped: QoS 0 while
        disconnected, or paho's queue of QoS >= 1 messages full."""
        with self._lock:
            if not self._connected and qos == 0:
                self._stats["dropped_disconnected"] += 1
                return False
        info = self._client.publish(topic, payload, qos, retain)
        with self._lock:
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
                qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
            ):  # QoS >= 1 while disconnected: queued by paho, sent after reconnecting
                self._stats["published"] += 1
                self._track(info.mid, qos)
                return True
            if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                self._stats["dropped_queue_full"] += 1
            else:
                self._stats["dropped_disconnected"] += 1
            return False

    @property
    def pending(self) -> int:
        """Messages handed to the link and not yet written (QoS 0) or acknowledged (QoS >= 1):
        a sender keeps this under a window so a slow link backs up into its own bounded queue
        rather than into paho's memory."""
        with self._lock:
            return len(self._in_flight)

    def _track(self, mid: int, qos: int) -> None:  # caller holds self._lock
        if mid in self._early:
            self._early.discard(mid)
        else:
            self._in_flight[mid] = qos

    def get(self, timeout: float | None = None) -> Inbound | None:
        """The oldest received message, waiting up to `timeout` s; None if none arrived."""
        return self.inbound.get(timeout)

    def stats(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._stats)
        out["inbound_dropped"] = self.inbound.dropped
        out["inbound_queued"] = len(self.inbound)
        return out

    # ---- paho callbacks (network thread) ------------------------------------------------

    @_guarded
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            err = BrokerRefusedError(f"broker {self.url} refused the connection of "
                                f"{self.client_id}: {reason_code} (check the user name, "
                                "password and ACL)")
            log.error("%s", err)
            with self._state:
                self._refused = err
                self._stats["refusals"] += 1
                self._state.notify_all()
            client.disconnect()  # ends paho's loop: no retrying a refusal forever
            return
        with self._lock:
            subs = list(self._subscriptions.items())
            # QoS 0 packets not written before the last disconnect are gone for good (paho
            # resends only QoS >= 1)
            lost = [mid for mid, qos in self._in_flight.items() if qos == 0]
            for mid in lost:
                del self._in_flight[mid]
            self._stats["lost_in_flight"] += len(lost)
            self._early.clear()
        for topic, qos in subs:
            client.subscribe(topic, qos)
        first = list(self._retained_state()) if self._retained_state else []
        for m in first + ([self.birth] if self.birth is not None else []):
            info = client.publish(m.topic, m.payload, m.qos, m.retain)
            with self._lock:  # on_publish runs on this thread: it cannot come before this
                self._in_flight[info.mid] = m.qos
        with self._state:
            self._connected = True
            self._stats["connects"] += 1
            self._state.notify_all()
        log.info("%s: connected to %s", self.client_id, self.url)

    @_guarded
    def _on_connect_fail(self, client, userdata) -> None:
        with self._lock:
            self._stats["connect_failures"] += 1

    @_guarded
    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._state:
            was = self._connected
            self._connected = False
            if was and not self._stopped:  # connections lost, not our own clean stop
                self._stats["disconnects"] += 1
            self._state.notify_all()
        if was and not self._stopped:
            log.warning("%s: disconnected from %s (%s); reconnecting", self.client_id,
                        self.url, reason_code)

    @_guarded
    def _on_message(self, client, userdata, message) -> None:
        self.inbound.put(Inbound(message.topic, bytes(message.payload), message.qos,
                                 bool(message.retain), time.time_ns()))
        with self._lock:
            self._stats["received"] += 1

    @_guarded
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            if self._in_flight.pop(mid, None) is None and len(self._early) < 65536:
                self._early.add(mid)
        if reason_code.is_failure:  # MQTT 5 PUBACK with e.g. 0x87 Not authorized
            with self._lock:
                self._stats["publish_refused"] += 1
            log.warning("%s: broker refused publish %d: %s", self.client_id, mid, reason_code)
