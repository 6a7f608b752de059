"""Move events from the outbox to MQTT, in order, without ever blocking or crashing the daemon.

How ordering survives reconnects: one pump thread owns the send window. It publishes entries
from the head of the outbox (``seq`` order), at most ``max_inflight`` at a time, and deletes a
row only when its PUBACK comes back (QoS 0: when paho has written it). When the connection is
re-established, paho's own copies of unacknowledged messages are dropped in ``on_connect``
(``Client.drop_out_messages``) and the pump re-sends everything still in the outbox from the
head, in order. A message the broker had already accepted may therefore arrive twice — the
QoS 1 contract — and consumers dedupe by ``event_id``; nothing arrives out of order and nothing is
lost. A lock shared by ``on_connect``/``on_disconnect`` and the pump's publish call, plus a
connection epoch, makes sure no publish slips in between the drop and the re-send.

paho's callbacks run on its network thread, some with paho's internal locks held, so they only
enqueue facts for the pump; the pump alone touches the window and the outbox's delete side.
"""

from __future__ import annotations

import logging
import math
import queue
import ssl
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt import client as mqtt_client
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge import __version__
from edge.config import Config, MqttConfig
from edge.errors import EdgeError
from edge.events.discovery import discovery_messages
from edge.events.outbox import Outbox
from edge.events.recent import RecentEvents
from edge.events.schema import EventSchemaError, encode, status_offline, status_online
from edge.events.schema import rfc3339_utc as _now_rfc3339
from edge.events.topics import event_topic, status_topic

log = logging.getLogger(__name__)

#: MQTT 5 session lifetime on the broker after a disconnect (MQTT 5 defaults to 0 = no session).
SESSION_EXPIRY_S = 24 * 3600
#: How often the age bound is applied while no new event arrives (broker down for days).
PRUNE_INTERVAL_S = 60.0
#: A connection problem that repeats unchanged is logged again at most this often.
REPEAT_LOG_S = 300.0
#: Events sent but not yet acknowledged, at most; the rest wait in the outbox.
DEFAULT_MAX_INFLIGHT = 16
#: Status messages are retained and must arrive: always at least QoS 1.
STATUS_QOS = 1


class PublisherError(EdgeError):
    """MQTT settings that cannot work (unreadable TLS or password files, inconsistent keys)."""


@dataclass(frozen=True)
class PublisherStats:
    """Counters for ``/metrics`` and the systemd ``STATUS=`` line."""

    connected: bool
    published: int  # PUBLISH packets handed to paho, re-sends included
    acked: int  # acknowledged by the broker (QoS 0: written to the socket)
    rejected: int  # MQTT 5 negative PUBACKs; the event stays queued and is retried
    dropped: int  # removed by the outbox bounds (count or age) before delivery
    outbox_depth: int
    inflight: int
    connects: int
    connect_failures: int
    last_error: str


def _read_password(mqtt: MqttConfig) -> str | None:
    if mqtt.password and mqtt.password_file:
        raise PublisherError("[mqtt] set either password or password_file, not both")
    password = mqtt.password or None
    if mqtt.password_file:
        try:
            password = Path(mqtt.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise PublisherError(
                f"[mqtt] password_file {mqtt.password_file}: cannot read: {exc}"
            ) from None
        if not password:
            raise PublisherError(f"[mqtt] password_file {mqtt.password_file}: file is empty")
    if password and not mqtt.username:
        raise PublisherError("[mqtt] a password needs [mqtt] username as well")
    return password


def _tls_context(mqtt: MqttConfig) -> ssl.SSLContext:
    """Verified TLS: the broker's certificate must chain to ``ca_file`` and match ``host``."""
    if bool(mqtt.cert_file) != bool(mqtt.key_file):
        raise PublisherError("[mqtt] cert_file and key_file must be set together")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(mqtt, key)
        if path and not Path(path).is_file():
            raise PublisherError(f"[mqtt] {key} {path}: file not found")
    try:
        ctx = ssl.create_default_context(cafile=mqtt.ca_file or None)
    except (ssl.SSLError, OSError) as exc:
        raise PublisherError(
            f"[mqtt] ca_file {mqtt.ca_file}: not a usable CA file: {exc}"
        ) from None
    if mqtt.cert_file:
        try:
            ctx.load_cert_chain(mqtt.cert_file, mqtt.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise PublisherError(
                f"[mqtt] cert_file {mqtt.cert_file} / key_file {mqtt.key_file}: "
                f"cannot load the client certificate: {exc}"
            ) from None
    return ctx


def make_client(mqtt: MqttConfig, client_id: str, *, persistent: bool) -> mqtt_client.Client:
    """A paho client with the device's protocol, credentials and verified TLS; not connected.

    ``persistent``: an MQTT 3.1.1 session that outlives the connection (the daemon's); an MQTT 5
    client chooses that at connect time instead.
    """
    password = _read_password(mqtt)
    tls = _tls_context(mqtt) if mqtt.tls else None
    if not mqtt.tls and (mqtt.ca_file or mqtt.cert_file or mqtt.key_file):
        raise PublisherError("[mqtt] ca_file/cert_file/key_file are set but [mqtt] tls = false")
    if mqtt.protocol == "5":
        client = mqtt_client.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                    protocol=mqtt_client.MQTTv5)
    else:
        client = mqtt_client.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                    protocol=mqtt_client.MQTTv311, clean_session=not persistent)
    if mqtt.username:
        client.username_pw_set(mqtt.username, password)
    if tls is not None:
        client.tls_set_context(tls)
    return client


def publish_retained(mqtt: MqttConfig, client_id: str, messages: Sequence[tuple[str, bytes]],
                     timeout: float = 10.0) -> None:
    """Connect, publish each message retained at QoS 1, wait for every acknowledgement, leave.

    For one-shot commands (``edge-face mqtt discovery``) that must not wait in an outbox: the
    operator is at the terminal and wants to know now whether the broker took them. The client
    id must differ from the daemon's, or the broker would disconnect the running daemon.
    """
    client = make_client(mqtt, client_id, persistent=False)
    where = f"MQTT broker {mqtt.host}:{mqtt.port}"
    connected = threading.Event()
    outcome: dict[str, Any] = {}
    refused: dict[int, str] = {}

    def on_connect(c: Any, u: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        outcome["reason"] = reason
        connected.set()

    def on_publish(c: Any, u: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            refused[mid] = str(reason)

    client.on_connect = on_connect
    client.on_publish = on_publish
    deadline = time.monotonic() + timeout
    client.connect_timeout = timeout  # paho's own default is 5 s, whatever --timeout says
    try:
        client.connect(mqtt.host, mqtt.port, mqtt.keepalive)
    except (OSError, ValueError) as exc:
        raise PublisherError(f"cannot connect to {where}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(max(0.0, deadline - time.monotonic())):
            raise PublisherError(f"{where} did not accept the connection within {timeout:.0f} s")
        if outcome["reason"].is_failure:
            raise PublisherError(f"{where} refused the connection: {outcome['reason']}")
        sent = [(topic, client.publish(topic, payload, qos=STATUS_QOS, retain=True))
                for topic, payload in messages]
        for topic, info in sent:
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:  # the connection was lost meanwhile
                raise PublisherError(f"{where}: {topic} was not sent: {exc}") from None
            if not info.is_published():
                raise PublisherError(f"{where} did not acknowledge {topic} within {timeout:.0f} s")
            if info.mid in refused:
                raise PublisherError(f"{where} refused {topic}: {refused[info.mid]}")
    finally:
        client.disconnect()
        client.loop_stop()


class Publisher:
    """Outbox-backed MQTT publisher for one device; thread-safe ``publish_event``."""

    def __init__(
        self,
        mqtt: MqttConfig,
        device_id: str,
        outbox: Outbox,
        *,
        online_payload: Mapping[str, Any] | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        client_id: str | None = None,
        own_outbox: bool = False,
        retained_on_connect: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """``retained_on_connect``: (topic, payload) pairs published retained at QoS 1 on every
        connect, before the online status (Home Assistant discovery configs)."""
        if max_inflight < 1:
            raise PublisherError(f"max_inflight must be at least 1, got {max_inflight}")
        self._mqtt = mqtt
        self._device_id = device_id
        self._outbox = outbox
        self._own_outbox = own_outbox
        #: What the admin API's live feed shows (``GET /v1/events``); memory only.
        self.recent = RecentEvents()
        self._max_inflight = max_inflight
        self._qos = mqtt.qos
        self._status_topic = status_topic(mqtt.topic_prefix, device_id)
        online = online_payload or status_online(
            device_id=device_id, version=__version__, backend="unknown",
            detector_model="unknown", embedder_model="unknown",
        )
        encode(online)
        self._online = dict(online)
        self._retained_on_connect = tuple(retained_on_connect)
        self.client_id = client_id or f"edge-face-{device_id}"

        client = make_client(mqtt, self.client_id, persistent=True)
        client.will_set(self._status_topic,
                        encode(status_offline(device_id=device_id, reason="will")),
                        qos=STATUS_QOS, retain=True)
        client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        # paho never queues behind our window; ours is the only flow control (the extra room
        # is for the status messages and the retained ones sent on connect).
        client.max_inflight_messages_set(max_inflight + 4 + len(self._retained_on_connect))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

        self._conn_lock = threading.RLock()  # orders drop_out_messages vs. the pump's publish
        self._link_up = False
        self._refused = False
        self._epoch = 0
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._cv = threading.Condition()
        self._connected_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._close_result = False
        self._closed_depth: int | None = None
        # Pump-owned window state.
        self._pump_epoch = 0
        self._inflight: dict[int, int] = {}
        self._cursor = 0
        self._retry_at: float | None = None
        self._retry_delay = float(reconnect_min_s)
        self._retry_min = float(reconnect_min_s)
        self._retry_max = float(reconnect_max_s)
        # Counters.
        self._published = 0
        self._acked = 0
        self._rejected = 0
        self._connects = 0
        self._connect_failures = 0
        self._last_error = ""
        self._last_problem: tuple[str, float] = ("", -math.inf)

    @classmethod
    def from_config(cls, config: Config, *, online_payload: Mapping[str, Any] | None = None,
                    outbox_path: str | Path | None = None, **kwargs: Any) -> Publisher:
        """Publisher with its own outbox at ``[storage] data_dir/outbox.sqlite3``; with
        ``[mqtt] discovery`` it announces the device to Home Assistant on every connect."""
        if config.mqtt.discovery and "retained_on_connect" not in kwargs:
            kwargs["retained_on_connect"] = [(m.topic, m.payload)
                                             for m in discovery_messages(config)]
        outbox = Outbox.from_config(config, outbox_path)
        try:
            return cls(config.mqtt, config.device.id, outbox, online_payload=online_payload,
                       own_outbox=True, **kwargs)
        except BaseException:
            outbox.close()
            raise

    # ----------------------------------------------------------------- public API

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    @property
    def status_topic(self) -> str:
        return self._status_topic

    @property
    def connected(self) -> bool:
        return self._connected_evt.is_set()

    def start(self) -> None:
        """Start connecting in the background; returns at once even if the broker is down."""
        if self._started:
            return
        self._started = True
        kwargs: dict[str, Any] = {}
        if self._mqtt.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kwargs = {"clean_start": False, "properties": props}
        self._client.connect_async(self._mqtt.host, self._mqtt.port, self._mqtt.keepalive,
                                   **kwargs)
        self._thread = threading.Thread(target=self._pump, name="edge-mqtt-pump", daemon=True)
        self._thread.start()
        self._client.loop_start()
        log.info("mqtt publisher started", extra={
            "host": self._mqtt.host, "port": self._mqtt.port, "protocol": self._mqtt.protocol,
            "tls": self._mqtt.tls, "qos": self._qos, "client_id": self.client_id,
            "outbox_depth": self._outbox.depth(),
        })

    def publish_event(self, payload: Mapping[str, Any]) -> int:
        """Commit the event to the outbox, then let the pump send it; returns its outbox seq.

        Returns as soon as the event is durable; delivery is asynchronous and survives
        outages and restarts.
        """
        if self._closed:
            raise PublisherError("publisher is closed; the event was not stored")
        data = encode(payload)
        if payload.get("device_id") != self._device_id:
            raise EventSchemaError(
                f"event device_id {payload.get('device_id')!r} is not this device "
                f"({self._device_id!r})"
            )
        topic = event_topic(self._mqtt.topic_prefix, self._device_id, str(payload.get("type")))
        event_id = payload.get("event_id")
        if not isinstance(event_id, str):
            raise EventSchemaError("event payload has no event_id")
        seq = self._outbox.put(topic, data, event_id)
        self.recent.add(seq, payload)
        self._events.put(("wake",))
        log.debug("event queued", extra={"event_id": event_id, "topic": topic, "seq": seq})
        return seq

    def set_online(self, payload: Mapping[str, Any]) -> None:
        """Replace the retained ``online`` status (e.g. once models are loaded)."""
        encode(payload)
        self._online = dict(payload)
        self._events.put(("online",))

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (or ``timeout`` seconds); for readiness checks and tests."""
        return self._connected_evt.wait(timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty and nothing is in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while not (not self._inflight and self._outbox.depth() == 0):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(min(remaining, 0.5))
        return True

    def stats(self) -> PublisherStats:
        with self._cv:
            return PublisherStats(
                connected=self.connected, published=self._published, acked=self._acked,
                rejected=self._rejected, dropped=self._outbox.dropped,
                outbox_depth=self._depth(), inflight=len(self._inflight),
                connects=self._connects, connect_failures=self._connect_failures,
                last_error=self._last_error,
            )

    def _depth(self) -> int:
        """Outbox depth; after ``close`` of an owned outbox, the depth it was closed with."""
        if self._closed_depth is not None:
            return self._closed_depth
        return self._outbox.depth()

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for at most ``timeout`` s, publish retained ``offline``, disconnect cleanly.

        Returns True when the outbox was empty at the end. Undelivered events stay in the
        outbox for the next start.
        """
        if self._closed:
            return self._close_result
        self._closed = True
        deadline = time.monotonic() + timeout
        drained = False
        if self._started:
            if self.connected:
                drained = self._flush_while_connected(deadline)
            # Offline goes out while the pump still runs, so the acks that precede its own
            # PUBACK on this connection are applied to the outbox before the pump stops.
            self._publish_offline(deadline)
            self._events.put(("stop",))
            if self._thread is not None:
                self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
            self._client.disconnect()
            self._client.loop_stop()
            self._connected_evt.clear()
        depth = self._outbox.depth()
        drained = drained or depth == 0
        self._close_result = drained
        log.info("mqtt publisher closed", extra={"outbox_depth": depth, "drained": drained})
        if self._own_outbox:
            self._closed_depth = depth
            self._outbox.close()
        return drained

    # ------------------------------------------------------------ paho callbacks
    # Network thread; they only record facts and enqueue them for the pump.

    def _on_connect(self, client: mqtt_client.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            self._refused = True  # the disconnect that follows is this same failure
            with self._cv:
                self._connect_failures += 1
                self._last_error = f"connection refused: {reason}"
            self._problem(
                f"refused:{reason}",
                "MQTT broker %s:%d refused the connection: %s (retrying with backoff)",
                self._mqtt.host, self._mqtt.port, str(reason),
            )
            return
        with self._conn_lock:
            # paho would re-send its copies after this callback; the pump re-sends from the
            # outbox instead, in order, so paho's copies must go.
            client.drop_out_messages()
            self._epoch += 1
            self._link_up = True
            self._events.put(("connect", self._epoch, bool(flags.session_present)))

    def _on_connect_fail(self, client: mqtt_client.Client, userdata: Any) -> None:
        exc = sys.exc_info()[1]  # paho calls this from inside its ``except OSError``
        detail = f"{type(exc).__name__}: {exc}" if exc else "connection failed"
        with self._cv:
            self._connect_failures += 1
            self._last_error = f"cannot connect: {detail}"
        self._problem(f"fail:{type(exc).__name__}",
                      "cannot connect to MQTT broker %s:%d: %s (retrying with backoff)",
                      self._mqtt.host, self._mqtt.port, detail)

    def _on_disconnect(self, client: mqtt_client.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        # No lock here: paho may call this while holding its own message lock, which the pump
        # needs for publish(); a plain flag write is enough (the epoch check covers the rest).
        was_up = self._link_up
        self._link_up = False
        self._connected_evt.clear()
        refused, self._refused = self._refused, False
        if was_up:
            self._events.put(("disconnect", str(reason)))
        elif not refused and not self._closed:
            # Closed before any CONNACK: with TLS 1.3 a rejected client certificate shows up
            # here (the handshake completes, the broker then drops the connection).
            with self._cv:
                self._connect_failures += 1
                self._last_error = f"connection closed before CONNACK: {reason}"
            self._problem(f"closed:{reason}",
                          "MQTT broker %s:%d closed the connection before accepting it: %s "
                          "(check TLS client certificate and broker logs; retrying with backoff)",
                          self._mqtt.host, self._mqtt.port, str(reason))

    def _on_publish(self, client: mqtt_client.Client, userdata: Any, mid: int,
                    reason: ReasonCode, properties: Any) -> None:
        self._events.put(("ack", mid, reason.is_failure, str(reason)))

    def _problem(self, key: str, msg: str, *args: Any) -> None:
        """Log a connection problem loudly once, then quietly while it repeats unchanged."""
        now = time.monotonic()
        last_key, last_at = self._last_problem
        level = logging.ERROR if key != last_key or now - last_at >= REPEAT_LOG_S else logging.DEBUG
        if level == logging.ERROR:
            self._last_problem = (key, now)
        log.log(level, msg, *args, extra={"host": self._mqtt.host, "port": self._mqtt.port,
                                          "client_id": self.client_id})

    # --------------------------------------------------------------------- pump

    def _pump(self) -> None:
        next_prune = time.monotonic() + PRUNE_INTERVAL_S
        while True:
            now = time.monotonic()
            wake_at = min(next_prune, self._retry_at if self._retry_at is not None else math.inf)
            try:
                items = [self._events.get(timeout=max(0.0, wake_at - now))]
            except queue.Empty:
                items = []
            while True:
                try:
                    items.append(self._events.get_nowait())
                except queue.Empty:
                    break
            try:
                acked: list[int] = []
                stop = False
                for item in items:
                    stop = self._handle(item, acked) or stop
                if acked:
                    self._outbox.remove_many(acked)
                if time.monotonic() >= next_prune:
                    self._outbox.prune()
                    next_prune = time.monotonic() + PRUNE_INTERVAL_S
                if stop:
                    return
                self._fill()
            except Exception:
                # A full disk or a broken file must not end delivery for good.
                log.exception("mqtt pump error; retrying")
                time.sleep(1.0)
            finally:
                with self._cv:
                    self._cv.notify_all()

    def _handle(self, item: tuple[Any, ...], acked: list[int]) -> bool:
        kind = item[0]
        if kind == "stop":
            return True
        if kind == "connect":
            _, epoch, session_present = item
            with self._cv:
                self._pump_epoch = epoch
                self._inflight.clear()
                self._cursor = 0
                self._connects += 1
                self._last_error = ""
            self._last_problem = ("", -math.inf)
            self._publish_retained()
            self._publish_online()
            with self._conn_lock:
                if self._link_up and self._epoch == epoch:
                    self._connected_evt.set()
            log.info("connected to MQTT broker", extra={
                "host": self._mqtt.host, "port": self._mqtt.port, "client_id": self.client_id,
                "session_present": session_present, "outbox_depth": self._outbox.depth(),
            })
        elif kind == "disconnect":
            if not self._link_up:
                self._connected_evt.clear()
            with self._cv:
                self._inflight.clear()
                self._cursor = 0
            log.warning("disconnected from MQTT broker: %s", item[1], extra={
                "host": self._mqtt.host, "port": self._mqtt.port, "reason": item[1],
            })
        elif kind == "ack":
            _, mid, failed, reason = item
            with self._cv:
                seq = self._inflight.pop(mid, None)
            if seq is None:
                return False  # a status message, or a window already reset
            if failed:
                self._reject(seq, reason)
            else:
                acked.append(seq)
                with self._cv:
                    self._acked += 1
                self._retry_delay = self._retry_min
        elif kind == "online":
            self._publish_online()
        return False

    def _reject(self, seq: int, reason: str) -> None:
        """MQTT 5 negative PUBACK: keep the event and resend from the head after a backoff."""
        with self._cv:
            self._rejected += 1
            self._last_error = f"broker rejected event #{seq}: {reason}"
            self._inflight.clear()  # later acks of this window are ignored; re-sent anyway
            self._cursor = 0
        self._retry_at = time.monotonic() + self._retry_delay
        log.error("MQTT broker rejected an event: %s (kept in the outbox, retry in %.1f s)",
                  reason, self._retry_delay, extra={"seq": seq, "reason": reason})
        self._retry_delay = min(self._retry_delay * 2, self._retry_max)

    def _publish_retained(self) -> None:
        with self._conn_lock:
            if self._link_up:
                for topic, payload in self._retained_on_connect:
                    self._client.publish(topic, payload, qos=STATUS_QOS, retain=True)

    def _publish_online(self) -> None:
        payload = encode(dict(self._online, time=_now_rfc3339()))
        with self._conn_lock:
            if self._link_up:
                self._client.publish(self._status_topic, payload, qos=STATUS_QOS, retain=True)

    def _fill(self) -> None:
        if self._retry_at is not None:
            if time.monotonic() < self._retry_at:
                return
            self._retry_at = None
        room = self._max_inflight - len(self._inflight)
        if room <= 0 or not self._connected_evt.is_set():
            return
        for entry in self._outbox.peek(self._cursor, room):
            with self._conn_lock:
                if not self._link_up or self._epoch != self._pump_epoch:
                    return  # a reconnect is pending; it restarts the window from the head
                info = self._client.publish(entry.topic, entry.payload, qos=self._qos)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    log.debug("publish deferred: %s", mqtt_client.error_string(info.rc),
                              extra={"seq": entry.seq})
                    return
                with self._cv:
                    self._inflight[info.mid] = entry.seq
                    self._cursor = entry.seq
                    self._published += 1

    def _flush_while_connected(self, deadline: float) -> bool:
        with self._cv:
            while True:
                if not self._inflight and self._outbox.depth() == 0:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.connected:
                    return False
                self._cv.wait(min(remaining, 0.5))

    def _publish_offline(self, deadline: float) -> None:
        payload = encode(status_offline(device_id=self._device_id, reason="shutdown"))
        with self._conn_lock:
            if not self._link_up:
                return
            info = self._client.publish(self._status_topic, payload, qos=STATUS_QOS, retain=True)
        try:
            info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
        except (RuntimeError, ValueError) as exc:
            log.warning("could not publish the offline status: %s", exc)
