"""The demo's embedded MQTT broker, driven by real paho clients (3.1.1 and 5) and raw sockets.

Everything here talks to a real ``EmbeddedBroker`` on a real loopback port: paho clients for the
behaviour a subscriber or the daemon relies on, hand-written bytes for what paho never sends
(malformed packets, unacknowledged deliveries, a missed keep alive), and the daemon's own
``Publisher`` for the end-to-end path. Waits are bounded; nothing asserts on durations.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as mqtt_client
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.config import load_config
from edge.demo.broker import BrokerError, BrokerLimits, EmbeddedBroker
from edge.demo.mqtt_wire import topic_matches, valid_topic_filter
from edge.events.publisher import Publisher
from edge.events.schema import camera_event, recognized_event, unknown_event

PROTOCOLS = ("3.1.1", "5")
WAIT_S = 10.0


# ---------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool


def _wait(predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Peer:
    """A real paho client (callback API v2) recording what it gets; bounded waits only.

    ``loop=False`` drives the network loop by hand until connected and then never again: the
    client goes silent (no PINGREQ), and ``kill()`` closes its socket without a DISCONNECT.
    """

    def __init__(self, broker: EmbeddedBroker, protocol: str = "5", client_id: str | None = None,
                 *, clean: bool = True, session_expiry: int | None = None, keepalive: int = 30,
                 will: tuple[str, bytes, int, bool] | None = None,
                 will_props: Properties | None = None, loop: bool = True,
                 expect_refusal: bool = False) -> None:
        self.v5 = protocol == "5"
        self.client_id = client_id or f"peer-{uuid.uuid4().hex[:8]}"
        kwargs: dict[str, Any] = {} if self.v5 else {"clean_session": clean}
        self.client = mqtt_client.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=mqtt_client.MQTTv5 if self.v5 else mqtt_client.MQTTv311, **kwargs)
        self.client.reconnect_delay_set(0.1, 1.0)
        self._cv = threading.Condition()
        self.messages: list[Msg] = []
        self.connects: list[tuple[bool, ReasonCode]] = []
        self.disconnects: list[ReasonCode] = []
        self.acks: dict[int, list[ReasonCode]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_ack
        self.client.on_unsubscribe = self._on_ack
        if will is not None:
            self.client.will_set(*will, properties=will_props)
        connect_kw: dict[str, Any] = {}
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                props.SessionExpiryInterval = session_expiry
            connect_kw = {"clean_start": clean, "properties": props}
        self._looping = loop
        self.client.connect(broker.host, broker.port, keepalive, **connect_kw)
        if loop:
            self.client.loop_start()
            assert self.wait(lambda: bool(self.connects)), "no CONNACK"
        else:
            deadline = time.monotonic() + WAIT_S
            while not self.connects and time.monotonic() < deadline:
                self.client.loop(0.05)
            assert self.connects, "no CONNACK"
        if not expect_refusal:
            assert not self.connects[0][1].is_failure, self.connects[0][1]

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        with self._cv:
            self.connects.append((bool(flags.session_present), reason))
            self._cv.notify_all()

    def _on_disconnect(self, c: Any, u: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        with self._cv:
            self.disconnects.append(reason)
            self._cv.notify_all()

    def _on_message(self, c: Any, u: Any, msg: mqtt_client.MQTTMessage) -> None:
        with self._cv:
            self.messages.append(Msg(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cv.notify_all()

    def _on_ack(self, c: Any, u: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        with self._cv:
            self.acks[mid] = list(codes)
            self._cv.notify_all()

    @property
    def session_present(self) -> bool:
        return self.connects[0][0]

    def wait(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(remaining)
            return True

    def received(self, timeout: float = WAIT_S, *, until: str | None = None,
                 count: int | None = None) -> list[Msg]:
        """Messages so far, after waiting for one on topic ``until`` or for ``count`` of them."""
        if until is not None:
            self.wait(lambda: any(m.topic == until for m in self.messages), timeout)
        if count is not None:
            self.wait(lambda: len(self.messages) >= count, timeout)
        with self._cv:
            return list(self.messages)

    def subscribe(self, topic: str, qos: int = 1, **options: bool | int) -> list[int]:
        if options:
            result, mid = self.client.subscribe(topic, options=SubscribeOptions(qos=qos,
                                                                                **options))
        else:
            result, mid = self.client.subscribe(topic, qos)
        assert result == mqtt_client.MQTT_ERR_SUCCESS
        assert self.wait(lambda: mid in self.acks), "no SUBACK"
        return [rc.value for rc in self.acks[mid]]

    def unsubscribe(self, *topics: str) -> list[int]:
        result, mid = self.client.unsubscribe(list(topics))
        assert result == mqtt_client.MQTT_ERR_SUCCESS
        assert self.wait(lambda: mid in self.acks), "no UNSUBACK"
        return [rc.value for rc in self.acks[mid]]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), f"{topic}: not acknowledged"

    def kill(self) -> None:
        """Close the socket without DISCONNECT, as a crashed process or a pulled cable would."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        if self._looping:
            self.client.disconnect()
            self.client.loop_stop()
        else:
            with contextlib.suppress(OSError, AttributeError):
                self.client.socket().close()


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        p.close()


@pytest.fixture
def peer(broker: EmbeddedBroker, peers: list[Peer]) -> Callable[..., Peer]:
    def make(*args: Any, **kwargs: Any) -> Peer:
        p = Peer(broker, *args, **kwargs)
        peers.append(p)
        return p
    return make


def _roundtrip(broker: EmbeddedBroker) -> None:
    """The broker still serves: a fresh subscriber gets a fresh publisher's message."""
    sub = Peer(broker, "5")
    pub = Peer(broker, "3.1.1")
    try:
        sub.subscribe("alive/#")
        pub.publish("alive/check", b"yes")
        assert [m.payload for m in sub.received(until="alive/check")] == [b"yes"]
    finally:
        sub.close()
        pub.close()


# Raw MQTT bytes, written here by hand so the tests do not trust the broker's own encoder.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def _pkt(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _connect(client_id: str = "raw", level: int = 4, flags: int = 0x02, keepalive: int = 30,
             props: bytes = b"\x00") -> bytes:
    body = _s("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    return _pkt(0x10, body + (props if level == 5 else b"") + _s(client_id))


class Raw:
    """A bare TCP MQTT peer for what paho never sends."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.sock = socket.create_connection((broker.host, broker.port), timeout=WAIT_S)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def packet(self) -> tuple[int, int, bytes] | None:
        """(type, flags, body) of the next packet, None when the broker closed the socket."""
        head = self._exact(1)
        if head is None:
            return None
        length, shift = 0, 0
        while True:
            byte = self._exact(1)
            assert byte is not None, "closed inside a fixed header"
            length |= (byte[0] & 0x7F) << shift
            shift += 7
            if not byte[0] & 0x80:
                break
        body = self._exact(length) if length else b""
        assert body is not None, "closed inside a packet"
        return head[0] >> 4, head[0] & 0x0F, body

    def connect(self, client_id: str = "raw", level: int = 4, **kw: Any) -> bytes:
        self.send(_connect(client_id, level, **kw))
        pkt = self.packet()
        assert pkt is not None and pkt[0] == 2, pkt
        return pkt[2]

    def until_closed(self) -> list[tuple[int, int, bytes]]:
        """Every packet until the broker closes; socket.timeout fails the test if it never does."""
        out = []
        while (pkt := self.packet()) is not None:
            out.append(pkt)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raws() -> Iterator[Callable[[EmbeddedBroker], Raw]]:
    made: list[Raw] = []

    def make(b: EmbeddedBroker) -> Raw:
        made.append(Raw(b))
        return made[-1]
    yield make
    for r in made:
        r.close()


# ------------------------------------------------------------------------ topic rules


@pytest.mark.parametrize(("topic_filter", "topic", "match"), [
    ("a/b", "a/b", True), ("a/b", "a/c", False), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
    ("a/#", "a", True), ("a/#", "a/b/c", True), ("#", "a/b", True), ("+/+", "a/b", True),
    ("+", "a/b", False), ("a/+/c", "a/x/c", True), ("a/+/c", "a//c", True),
    ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True),
])
def test_topic_matching(topic_filter: str, topic: str, match: bool) -> None:
    assert topic_matches(topic_filter, topic) is match


@pytest.mark.parametrize(("topic_filter", "valid"), [
    ("a/b", True), ("#", True), ("a/#", True), ("+/b/+", True), ("", False), ("a/#/b", False),
    ("a#", False), ("a/b+", False), ("a/+b/c", False),
])
def test_topic_filter_validity(topic_filter: str, valid: bool) -> None:
    assert valid_topic_filter(topic_filter) is valid


# ------------------------------------------------------------------------- pub / sub


@pytest.mark.parametrize("sub_protocol", PROTOCOLS)
@pytest.mark.parametrize("pub_protocol", PROTOCOLS)
def test_publish_subscribe_qos_and_wildcards(peer: Callable[..., Peer], pub_protocol: str,
                                             sub_protocol: str) -> None:
    sub = peer(sub_protocol)
    assert sub.subscribe("sensors/+/temp", qos=2) == [1]  # granted min(requested, 1)
    assert sub.subscribe("alerts/#", qos=0) == [0]
    pub = peer(pub_protocol)
    sent = [("sensors/kitchen/temp", 0), ("sensors/hall/temp", 1), ("sensors/attic/temp", 2),
            ("sensors/kitchen/humidity", 1), ("sensors/a/b/temp", 1), ("alerts", 1),
            ("alerts/fire/kitchen", 1), ("other/topic", 0), ("end", 0)]
    sub.subscribe("end", qos=0)
    for i, (topic, qos) in enumerate(sent):
        pub.publish(topic, f"m{i}".encode(), qos=qos)
    got = sub.received(until="end")
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        ("sensors/kitchen/temp", b"m0", 0), ("sensors/hall/temp", b"m1", 1),
        ("sensors/attic/temp", b"m2", 1),  # QoS 2 accepted (PUBREC/PUBREL/PUBCOMP), sent at 1
        ("alerts", b"m5", 0), ("alerts/fire/kitchen", b"m6", 0), ("end", b"m8", 0),
    ]
    assert not any(m.retain for m in got)


def test_overlapping_subscriptions_deliver_once_at_the_highest_qos(
        peer: Callable[..., Peer]) -> None:
    sub = peer("5")
    sub.subscribe("a/+", qos=1)
    sub.subscribe("a/#", qos=0)
    pub = peer("5")
    pub.publish("a/b", b"x", qos=1)
    pub.publish("a", b"end", qos=0)
    got = sub.received(until="a")
    assert [(m.topic, m.qos) for m in got] == [("a/b", 1), ("a", 0)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unsubscribe_stops_delivery(peer: Callable[..., Peer], protocol: str) -> None:
    sub = peer(protocol)
    sub.subscribe("a/#")
    sub.subscribe("b/#")
    codes = sub.unsubscribe("a/#", "never/subscribed")
    if protocol == "5":
        assert codes == [0x00, 0x11]  # success, no subscription existed
    pub = peer(protocol)
    pub.publish("a/1", b"gone")
    pub.publish("b/1", b"kept")
    assert [m.topic for m in sub.received(until="b/1")] == ["b/1"]


def test_subscribe_refusals_per_filter(broker: EmbeddedBroker,
                                       raws: Callable[..., Raw]) -> None:
    # Raw bytes: paho refuses to send an invalid filter in the first place.
    v5 = raws(broker)
    v5.connect("v5", level=5)
    v5.send(_pkt(0x82, b"\x00\x07\x00" + _s("a/#/b") + b"\x01" + _s("$share/g/a") + b"\x01"
                 + _s("ok/#") + b"\x02"))
    # topic filter invalid, shared subscriptions not supported, granted QoS 1 (asked 2)
    assert v5.packet() == (9, 0, b"\x00\x07\x00\x8f\x9e\x01")
    v311 = raws(broker)
    v311.connect("v311")
    v311.send(_pkt(0x82, b"\x00\x08" + _s("a/b#") + b"\x01" + _s("ok") + b"\x00"))
    assert v311.packet() == (9, 0, b"\x00\x08\x80\x00")


def test_no_local_and_retain_as_published_v5(peer: Callable[..., Peer]) -> None:
    me = peer("5")
    me.subscribe("chat/#", qos=1, noLocal=True)
    me.subscribe("flags/#", qos=1, retainAsPublished=True)
    other = peer("5")
    me.publish("chat/mine", b"own")  # not echoed back to me
    other.publish("chat/theirs", b"theirs")
    other.publish("flags/r", b"retained", retain=True)
    other.publish("flags/end", b"end")
    got = me.received(until="flags/end")
    assert [(m.topic, m.retain) for m in got] == [
        ("chat/theirs", False), ("flags/r", True), ("flags/end", False)]


@pytest.mark.parametrize("level", [4, 5])
def test_qos2_publish_is_routed_exactly_once(broker: EmbeddedBroker, peer: Callable[..., Peer],
                                             raws: Callable[..., Raw], level: int) -> None:
    sub = peer("5")
    sub.subscribe("q2/#", qos=1)
    raw = raws(broker)
    raw.connect("q2-publisher", level=level)
    props = b"\x00" if level == 5 else b""
    ok = b"\x00\x00" if level == 5 else b""  # v5: reason code and empty properties
    publish = _s("q2/a") + b"\x00\x05" + props + b"first"
    raw.send(_pkt(0x34, publish))
    assert raw.packet() == (5, 0, b"\x00\x05" + ok)  # PUBREC
    raw.send(_pkt(0x3C, publish))  # the same packet again, DUP set: not routed twice
    assert raw.packet() == (5, 0, b"\x00\x05" + ok)
    raw.send(_pkt(0x62, b"\x00\x05"))  # PUBREL
    assert raw.packet() == (7, 0, b"\x00\x05" + ok)  # PUBCOMP
    raw.send(_pkt(0x34, _s("q2/a") + b"\x00\x05" + props + b"second"))  # id free again
    assert raw.packet() == (5, 0, b"\x00\x05" + ok)
    raw.send(_pkt(0x62, b"\x00\x09"))  # PUBREL for an id never used
    assert raw.packet() == (7, 0, b"\x00\x09" + (b"\x92\x00" if level == 5 else b""))
    raw.send(_pkt(0x30, _s("q2/end") + props))
    got = sub.received(until="q2/end")
    assert [(m.topic, m.payload) for m in got] == [("q2/a", b"first"), ("q2/a", b"second"),
                                                   ("q2/end", b"")]


# ----------------------------------------------------------------------- retained


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retained_store_replace_clear(broker: EmbeddedBroker, peer: Callable[..., Peer],
                                      protocol: str) -> None:
    pub = peer(protocol)
    pub.publish("home/door/status", b"online", retain=True)
    pub.publish("home/window/status", b"open", qos=0, retain=True)

    first = peer(protocol)
    first.subscribe("home/+/status")
    assert sorted((m.topic, m.payload, m.retain) for m in first.received(count=2)) == [
        ("home/door/status", b"online", True), ("home/window/status", b"open", True)]
    assert broker.stats().retained == 2

    pub.publish("home/door/status", b"offline", retain=True)  # replaces
    # An established subscription gets it as a normal message (retain flag cleared).
    assert first.received(count=3)[-1] == Msg("home/door/status", b"offline", 1, False)
    second = peer(protocol)
    second.subscribe("home/door/#")
    assert [(m.payload, m.retain) for m in second.received(count=1)] == [(b"offline", True)]

    pub.publish("home/door/status", b"", retain=True)  # clears
    pub.publish("home/window/status", b"", retain=True)
    assert _wait(lambda: broker.stats().retained == 0)
    third = peer(protocol)
    third.subscribe("home/#")
    pub.publish("home/marker", b"m")  # retained messages come right after the SUBACK
    assert [m.topic for m in third.received(until="home/marker")] == ["home/marker"]


# -------------------------------------------------------------------------- wills


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_will_on_killed_socket(broker: EmbeddedBroker, peer: Callable[..., Peer],
                               protocol: str) -> None:
    watcher = peer("5")
    watcher.subscribe("dev/+/status")
    doomed = peer(protocol, will=("dev/d1/status", b"offline", 1, True), loop=False)
    doomed.kill()
    got = watcher.received(until="dev/d1/status")
    assert [(m.topic, m.payload) for m in got] == [("dev/d1/status", b"offline")]
    late = peer("3.1.1")
    late.subscribe("dev/d1/status")
    assert late.received(count=1) == [Msg("dev/d1/status", b"offline", 1, True)]  # retained


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_will_when_client_process_is_killed(peer: Callable[..., Peer], broker: EmbeddedBroker,
                                            protocol: str) -> None:
    watcher = peer("5")
    watcher.subscribe("dev/+/status")
    script = (
        "import sys\n"
        "from paho.mqtt import client as m\n"
        "from paho.mqtt.enums import CallbackAPIVersion as V\n"
        "p = m.MQTTv5 if sys.argv[3] == '5' else m.MQTTv311\n"
        "c = m.Client(V.VERSION2, client_id='doomed', protocol=p)\n"
        "c.will_set('dev/doomed/status', b'offline', qos=1, retain=True)\n"
        "c.on_connect = lambda *a: print('connected', flush=True)\n"
        "c.connect(sys.argv[1], int(sys.argv[2]), 30)\n"
        "c.loop_forever()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, broker.host, str(broker.port),
                             protocol], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
    finally:
        proc.kill()  # SIGKILL: no DISCONNECT, no FIN from paho, only the kernel closing
        proc.wait(WAIT_S)
        if proc.stdout is not None:
            proc.stdout.close()
    got = watcher.received(until="dev/doomed/status")
    assert [m.payload for m in got] == [b"offline"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_will_after_normal_disconnect(broker: EmbeddedBroker, peer: Callable[..., Peer],
                                         protocol: str) -> None:
    watcher = peer("5")
    watcher.subscribe("dev/#")
    polite = Peer(broker, protocol, will=("dev/p/status", b"offline", 1, True))
    polite.close()
    assert _wait(lambda: broker.stats().clients == 1)  # the broker has handled its leaving
    watcher.publish("dev/marker", b"m")
    assert [m.topic for m in watcher.received(until="dev/marker")] == ["dev/marker"]


def test_v5_disconnect_with_will_message_publishes_it(peer: Callable[..., Peer]) -> None:
    watcher = peer("5")
    watcher.subscribe("dev/#")
    leaving = peer("5", will=("dev/w/status", b"bye", 0, False))
    leaving.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT,
                                                    "Disconnect with will message"))
    assert [m.payload for m in watcher.received(until="dev/w/status")] == [b"bye"]


def test_v5_will_delay_is_held_until_the_session_ends(broker: EmbeddedBroker,
                                                      peer: Callable[..., Peer]) -> None:
    watcher = peer("5")
    watcher.subscribe("dev/#")
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = 600
    doomed = peer("5", "delayed", clean=False, session_expiry=600, loop=False,
                  will=("dev/delayed/status", b"gone", 1, False), will_props=will_props)
    doomed.kill()
    assert _wait(lambda: broker.stats().clients == 1)
    watcher.publish("dev/marker", b"m")
    assert [m.topic for m in watcher.received(until="dev/marker")] == ["dev/marker"]
    # Coming back with a clean start ends the old session, and with it the delay.
    peer("5", "delayed", clean=True)
    got = watcher.received(until="dev/delayed/status")
    assert [m.topic for m in got] == ["dev/marker", "dev/delayed/status"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keepalive_timeout_publishes_the_will(peer: Callable[..., Peer],
                                              protocol: str) -> None:
    watcher = peer("5")
    watcher.subscribe("dev/+/status")
    # keepalive 1 s and a network loop that is never run again: no PINGREQ ever comes.
    peer(protocol, keepalive=1, loop=False, will=("dev/silent/status", b"lost", 1, False))
    assert [m.payload for m in watcher.received(until="dev/silent/status")] == [b"lost"]


def test_keepalive_timeout_v5_sends_reason_then_closes(broker: EmbeddedBroker,
                                                       raws: Callable[..., Raw]) -> None:
    raw = raws(broker)
    assert raw.connect("silent", level=5, keepalive=1)[:2] == b"\x00\x00"
    assert raw.until_closed() == [(14, 0, b"\x8d\x00")]  # DISCONNECT, keep alive timeout


def test_pingreq_gets_pingresp(broker: EmbeddedBroker, raws: Callable[..., Raw]) -> None:
    raw = raws(broker)
    raw.connect("pinger")
    raw.send(b"\xc0\x00")
    assert raw.packet() == (13, 0, b"")


# ----------------------------------------------------------------------- sessions


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_persistent_session_queues_qos1_while_away(peer: Callable[..., Peer],
                                                   protocol: str) -> None:
    first = peer(protocol, "keeper", clean=False, session_expiry=600)
    assert not first.session_present
    first.subscribe("jobs/#", qos=1)
    first.close()
    pub = peer(protocol)
    for i in range(5):
        pub.publish(f"jobs/{i}", f"job{i}".encode(), qos=1)
    pub.publish("jobs/volatile", b"q0", qos=0)  # QoS 0 is not kept for an absent client
    back = peer(protocol, "keeper", clean=False, session_expiry=600)
    assert back.session_present
    pub.publish("jobs/end", b"end", qos=1)
    got = back.received(until="jobs/end")
    assert [m.payload for m in got] == [f"job{i}".encode() for i in range(5)] + [b"end"]
    back.close()
    fresh = peer(protocol, "keeper", clean=True)
    assert not fresh.session_present


def test_v5_session_without_expiry_ends_at_disconnect(peer: Callable[..., Peer]) -> None:
    first = peer("5", "short", clean=False, session_expiry=0)
    first.subscribe("x/#")
    first.close()
    again = peer("5", "short", clean=False, session_expiry=0)
    assert not again.session_present


def test_unacknowledged_delivery_is_resent_with_dup(broker: EmbeddedBroker,
                                                    peer: Callable[..., Peer],
                                                    raws: Callable[..., Raw]) -> None:
    raw = raws(broker)
    assert raw.connect("slowpoke", flags=0x00) == b"\x00\x00"  # persistent, no session yet
    raw.send(_pkt(0x82, struct.pack("!H", 1) + _s("work/#") + b"\x01"))
    assert raw.packet() == (9, 0, b"\x00\x01\x01")
    peer("3.1.1").publish("work/a", b"payload", qos=1)
    kind, flags, body = raw.packet() or (0, 0, b"")
    assert (kind, flags & 0x08) == (3, 0)  # PUBLISH, first send: no DUP
    packet_id = body[len(_s("work/a")):][:2]
    raw.close()  # never acknowledged
    again = raws(broker)
    assert again.connect("slowpoke", flags=0x00) == b"\x01\x00"  # session present
    kind, flags, body2 = again.packet() or (0, 0, b"")
    assert (kind, flags & 0x08, (flags >> 1) & 3) == (3, 0x08, 1)  # re-sent with DUP, QoS 1
    assert body2 == body and body2[len(_s("work/a")):][:2] == packet_id
    again.send(_pkt(0x40, packet_id))  # PUBACK: now it is done
    again.send(b"\xc0\x00")
    assert again.packet() == (13, 0, b"")


def test_session_takeover_disconnects_the_old_connection(broker: EmbeddedBroker,
                                                         peer: Callable[..., Peer],
                                                         raws: Callable[..., Raw]) -> None:
    old = raws(broker)
    old.connect("same-id", level=5)
    peer("5", "same-id")
    assert old.until_closed() == [(14, 0, b"\x8e\x00")]  # DISCONNECT, session taken over


# --------------------------------------------------------------- bad input, limits


def _v5_connected(raws: Callable[..., Raw], broker: EmbeddedBroker) -> Raw:
    raw = raws(broker)
    raw.connect("bad-v5", level=5)
    return raw


MALFORMED = {
    # name: (protocol level to CONNECT with first, or None; bytes; text in the log line)
    "reserved type 0 first": (None, b"\x00\x00", "not CONNECT"),
    "publish before connect": (None, _pkt(0x30, _s("a") + b"x"), "not CONNECT"),
    "five-byte remaining length": (None, b"\x10\xff\xff\xff\xff\x01", "longer than four"),
    "oversized packet": (None, b"\x10\x80\x80\x80\x01", "exceeds the maximum"),
    "non-minimal length": (None, b"\xc0\x80\x00", "minimally encoded"),
    "unknown protocol name": (None, _pkt(0x10, _s("MQTX") + b"\x04\x02\x00\x1e" + _s("x")),
                              "unknown protocol name"),
    "reserved connect flag": (None, _connect(flags=0x03), "reserved flag"),
    "connect flags on header": (None, b"\x11" + _connect()[1:], "flags"),
    "subscribe wrong flags": (4, _pkt(0x80, b"\x00\x01" + _s("a") + b"\x01"), "flags"),
    "subscribe no filters": (4, _pkt(0x82, b"\x00\x01"), "without topic filters"),
    "subscribe qos 3": (4, _pkt(0x82, b"\x00\x01" + _s("a") + b"\x03"), "subscription options"),
    "publish qos 3": (4, _pkt(0x36, _s("a") + b"\x00\x01x"), "QoS 3"),
    "publish wildcard topic": (4, _pkt(0x30, _s("a/+") + b"x"), "wildcard"),
    "publish packet id 0": (4, _pkt(0x32, _s("a") + b"\x00\x00x"), "packet identifier 0"),
    "publish truncated topic": (4, _pkt(0x30, b"\x00\x09ab"), "truncated"),
    "pingreq with body": (4, _pkt(0xC0, b"x"), "PINGREQ with a body"),
    "second connect": (4, _connect(), "unexpected CONNECT"),
    "pubrec from client": (4, _pkt(0x50, b"\x00\x01"), "unexpected PUBREC"),
    "auth in 3.1.1": (4, _pkt(0xF0, b""), "reserved packet type"),
    "v5 topic alias": (5, _pkt(0x30, _s("a") + b"\x03\x23\x00\x01x"), "topic aliases"),
    "v5 unknown property": (5, _pkt(0x30, _s("a") + b"\x02\x7f\x00x"), "not allowed"),
    "v5 duplicate property": (5, _pkt(0x30, _s("a") + b"\x04\x01\x00\x01\x00x"),
                              "appears twice"),
    "v5 oversized publish": (5, b"\x30\x80\x80\x20", "exceeds the maximum"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_packet_closes_the_connection_not_the_broker(
        broker: EmbeddedBroker, raws: Callable[..., Raw], caplog: pytest.LogCaptureFixture,
        case: str) -> None:
    level, data, expected_log = MALFORMED[case]
    caplog.set_level(logging.WARNING, logger="edge.demo.broker")
    raw = raws(broker)
    if level is not None:
        raw.connect("bad", level=level)
    raw.send(data)
    packets = raw.until_closed()  # the broker closes; a hang would time the socket out
    if level == 5:
        assert [p[0] for p in packets] == [14] and packets[0][2][0] >= 0x80  # DISCONNECT
    assert broker.stats().malformed == 1
    lines = [r.getMessage() for r in caplog.records if "closing MQTT connection" in r.getMessage()]
    assert any(expected_log in line for line in lines), lines
    _roundtrip(broker)


def test_client_id_that_is_not_utf8_is_malformed(broker: EmbeddedBroker,
                                                 raws: Callable[..., Raw],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.demo.broker")
    raw = raws(broker)
    body = _s("MQTT") + b"\x04\x02\x00\x1e" + b"\x00\x02\xff\xfe"
    raw.send(_pkt(0x10, body))
    assert raw.until_closed() == []
    assert any("client identifier is not valid UTF-8" in r.getMessage() for r in caplog.records)
    _roundtrip(broker)


def test_malformed_v5_connect_gets_a_connack_with_the_reason(broker: EmbeddedBroker,
                                                             raws: Callable[..., Raw]) -> None:
    raw = raws(broker)
    raw.send(_connect(level=5, props=b"\x03\x21\x00\x00"))  # Receive Maximum 0: protocol error
    assert raw.until_closed() == [(2, 0, b"\x00\x82\x00")]


def test_truncated_packet_then_close_does_not_hurt(broker: EmbeddedBroker,
                                                   raws: Callable[..., Raw]) -> None:
    raw = raws(broker)
    raw.send(b"\x10\x20\x00\x04MQ")  # says 32 bytes, sends 6, then leaves
    raw.sock.shutdown(socket.SHUT_WR)
    assert raw.until_closed() == []
    _roundtrip(broker)


def test_silent_connection_is_closed_after_the_connect_timeout(raws: Callable[..., Raw]) -> None:
    with EmbeddedBroker(limits=BrokerLimits(connect_timeout_s=0.2)) as b:
        raw = raws(b)  # connects, never sends CONNECT
        assert raw.until_closed() == []


@pytest.mark.parametrize(("level", "expected"), [(3, b"\x00\x01"), (6, b"\x00\x01")])
def test_unsupported_protocol_level_is_refused(broker: EmbeddedBroker,
                                               raws: Callable[..., Raw], level: int,
                                               expected: bytes) -> None:
    raw = raws(broker)
    raw.send(_connect(level=level))
    assert raw.until_closed() == [(2, 0, expected)]
    assert broker.stats().refused == 1


def test_empty_client_id_v311_needs_clean_session(broker: EmbeddedBroker,
                                                  raws: Callable[..., Raw]) -> None:
    persistent = raws(broker)
    persistent.send(_connect(client_id="", flags=0x00))
    assert persistent.until_closed() == [(2, 0, b"\x00\x02")]  # identifier rejected
    clean = raws(broker)
    assert clean.connect(client_id="", flags=0x02) == b"\x00\x00"


def test_empty_client_id_v5_is_assigned(broker: EmbeddedBroker, raws: Callable[..., Raw]) -> None:
    raw = raws(broker)
    body = raw.connect(client_id="", level=5)
    assert body[:2] == b"\x00\x00" and b"\x12" in body and b"auto-" in body


def test_many_clients(broker: EmbeddedBroker, peer: Callable[..., Peer]) -> None:
    subs = [peer(PROTOCOLS[i % 2]) for i in range(40)]
    for s in subs:
        s.subscribe("fan/#", qos=1)
    pub = peer("5")
    for i in range(20):
        pub.publish(f"fan/{i}", str(i).encode(), qos=1)
    for s in subs:
        assert [m.payload for m in s.received(count=20)] == [str(i).encode() for i in range(20)]
    assert broker.stats().clients == 41


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_max_clients_refuses_with_connack(peers: list[Peer], protocol: str) -> None:
    with EmbeddedBroker(limits=BrokerLimits(max_clients=3)) as b:
        for _ in range(3):
            peers.append(Peer(b, protocol))
        extra = Peer(b, protocol, expect_refusal=True)
        reason = extra.connects[0][1]
        extra.close()
        assert reason.is_failure
        assert str(reason) == ("Server busy" if protocol == "5" else "Server unavailable")
        assert b.stats().refused >= 1
        peers.pop().close()
        peers.pop().close()
        assert _wait(lambda: b.stats().clients == 1)
        peers.append(Peer(b, protocol))  # room again


def test_a_client_that_does_not_read_loses_qos0_not_the_broker(
        broker: EmbeddedBroker, peer: Callable[..., Peer], raws: Callable[..., Raw]) -> None:
    raw = raws(broker)
    raw.connect("deaf")
    raw.send(_pkt(0x82, b"\x00\x01" + _s("flood/#") + b"\x00"))
    assert raw.packet() == (9, 0, b"\x00\x01\x00")
    pub = peer("5")
    chunk = b"x" * 200_000
    for _ in range(60):  # 12 MB to a reader that never reads: the socket buffers fill up
        pub.publish("flood/data", chunk, qos=0)
    pub.publish("flood/end", b"end", qos=1)
    assert _wait(lambda: broker.stats().dropped > 0)
    _roundtrip(broker)


# ------------------------------------------------------------------------- lifecycle


def test_binds_to_loopback_only() -> None:
    with pytest.raises(BrokerError, match="loopback"):
        EmbeddedBroker("0.0.0.0")
    with pytest.raises(BrokerError, match="loopback"):
        EmbeddedBroker("example.org")
    with pytest.raises(BrokerError, match="port"):
        EmbeddedBroker(port=70000)
    with pytest.raises(BrokerError, match="max_sessions"):
        BrokerLimits(max_clients=10, max_sessions=5)


def test_port_in_use_is_a_clear_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match=f"cannot listen on 127.0.0.1:{broker.port}"):
        EmbeddedBroker(port=broker.port).start()


def test_stop_disconnects_clients_and_frees_the_port(raws: Callable[..., Raw]) -> None:
    b = EmbeddedBroker("localhost").start()
    assert b.running and b.port > 0
    v5 = raws(b)
    v5.connect("v5", level=5)
    v311 = raws(b)
    v311.connect("v311")
    b.stop()
    assert v5.until_closed() == [(14, 0, b"\x8b\x00")]  # server shutting down
    assert v311.until_closed() == []
    assert not b.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((b.host, b.port), timeout=WAIT_S).close()
    b.stop()  # idempotent


# ----------------------------------------------------------- the daemon's publisher


def _events(n: int, device: str) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        if i % 5 == 4:
            out.append(camera_event(device_id=device, camera_id="cam0", state="lost",
                                    attempts=i))
        elif i % 2:
            out.append(unknown_event(device_id=device, camera_id="cam0", track_id=i,
                                     similarity=0.1, decision="attempts", votes=6,
                                     latency_ms=310.0))
        else:
            out.append(recognized_event(device_id=device, camera_id="cam0", track_id=i,
                                        person_id=f"P-{i:03d}", similarity=0.7, decision="votes",
                                        votes=2, latency_ms=120.5))
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_daemon_publisher_delivers_events_in_order(broker: EmbeddedBroker,
                                                   peer: Callable[..., Peer], tmp_path: Path,
                                                   protocol: str) -> None:
    device = "door-1"
    conf = tmp_path / "config.toml"
    conf.write_text(
        f'[device]\nid = "{device}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nprotocol = "{protocol}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\nkey_file = "{tmp_path / "key" / "k"}"\n',
        encoding="utf-8")
    sub = peer("3.1.1")
    sub.subscribe(f"edge-face/{device}/#", qos=1)
    pub = Publisher.from_config(load_config(conf, env={}), reconnect_min_s=0.1,
                                reconnect_max_s=1.0)
    try:
        pub.start()
        assert pub.wait_connected(WAIT_S)
        sent = _events(30, device)
        for payload in sent:
            pub.publish_event(payload)
        assert pub.flush(WAIT_S)
        got = sub.received(count=31)
        stats = pub.stats()
    finally:
        drained = pub.close(timeout=5)
    assert drained
    events = [json.loads(m.payload) for m in got if "/events/" in m.topic]
    assert [e["event_id"] for e in events] == [e["event_id"] for e in sent]
    assert [m.topic for m in got if "/events/" in m.topic] == [
        f"edge-face/{device}/events/{e['type']}" for e in sent]
    assert stats.acked == 30 and stats.outbox_depth == 0 and stats.rejected == 0
    status = [json.loads(m.payload)["state"] for m in sub.received(count=32)
              if m.topic.endswith("/status")]
    assert status == ["online", "offline"]
    later = peer("5")
    later.subscribe(f"edge-face/{device}/status")
    retained = later.received(count=1)
    assert retained[0].retain and json.loads(retained[0].payload)["state"] == "offline"
