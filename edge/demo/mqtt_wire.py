"""MQTT 3.1.1 and 5 wire format for the demo broker: untrusted bytes in, checked values out.

Why a module of its own: every length, string and flag a peer sends is untrusted, so all bounds
and validity checks live in one cursor (:class:`Reader`) that raises :class:`MalformedPacket`
(with the MQTT 5 reason code the broker answers with) instead of ``IndexError`` or
``UnicodeDecodeError``; the broker's session logic then never touches raw bytes.

Only what a broker receives is parsed (CONNECT, PUBLISH, the acks, SUBSCRIBE, UNSUBSCRIBE,
PINGREQ, DISCONNECT) and only what it sends is encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from edge.errors import EdgeError

#: Largest value of a Variable Byte Integer (four bytes).
MAX_VARINT = 268_435_455


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class Reason(IntEnum):
    """MQTT 5 reason codes the broker sends (3.1.1 return codes are mapped where needed)."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_ID_NOT_VALID = 0x85
    SERVER_BUSY = 0x89
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_ID_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA1


class Prop(IntEnum):
    """MQTT 5 property identifiers."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


_BYTE, _U16, _U32, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROP_TYPES: dict[int, int] = {
    **dict.fromkeys((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A), _BYTE),
    **dict.fromkeys((0x13, 0x21, 0x22, 0x23), _U16),
    **dict.fromkeys((0x02, 0x11, 0x18, 0x27), _U32),
    0x0B: _VARINT,
    **dict.fromkeys((0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F), _STRING),
    **dict.fromkeys((0x09, 0x16), _BINARY),
    0x26: _PAIR,
}
#: Properties whose value is 0 or 1 only.
_FLAG_PROPS = frozenset((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A))
#: Properties for which 0 is a protocol error.
_NONZERO_PROPS = frozenset((0x0B, 0x21, 0x27))

CONNECT_PROPS = frozenset((0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16))
WILL_PROPS = frozenset((0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26))
PUBLISH_PROPS = frozenset((0x01, 0x02, 0x23, 0x08, 0x09, 0x0B, 0x26, 0x03))
ACK_PROPS = frozenset((0x1F, 0x26))
SUBSCRIBE_PROPS = frozenset((0x0B, 0x26))
UNSUBSCRIBE_PROPS = frozenset((0x26,))
DISCONNECT_PROPS = frozenset((0x11, 0x1F, 0x26, 0x1C))
#: Properties of an application message that a broker passes on to subscribers unchanged
#: (the message expiry is passed on too, but recomputed by the broker).
FORWARDED_PROPS = frozenset((0x01, 0x03, 0x08, 0x09))

PropValue = int | str | bytes


class MalformedPacket(EdgeError):
    """A packet that breaks the MQTT format or protocol; the connection must be closed.

    ``reason`` is the MQTT 5 reason code for the CONNACK or DISCONNECT sent before closing.
    """

    def __init__(self, message: str, reason: Reason = Reason.MALFORMED_PACKET) -> None:
        super().__init__(message)
        self.reason = reason


class UnsupportedProtocol(MalformedPacket):
    """A CONNECT for a protocol level other than 4 (3.1.1) or 5."""

    def __init__(self, level: int) -> None:
        super().__init__(f"unsupported MQTT protocol level {level} (supported: 4, 5)",
                         Reason.UNSUPPORTED_PROTOCOL_VERSION)
        self.level = level


@dataclass(frozen=True)
class Properties:
    """MQTT 5 properties: single-valued ones by id, user properties in order."""

    values: Mapping[int, PropValue] = field(default_factory=dict)
    user: tuple[tuple[str, str], ...] = ()

    def get(self, prop: int, default: PropValue | None = None) -> PropValue | None:
        return self.values.get(prop, default)

    def number(self, prop: int, default: int) -> int:
        value = self.values.get(prop, default)
        return value if isinstance(value, int) else default


NO_PROPERTIES = Properties()


class Reader:
    """Bounds-checked cursor over one packet's variable header and payload."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _take(self, n: int, item: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise MalformedPacket(f"{self._what}: truncated {item}")
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def u8(self, item: str = "byte") -> int:
        return self._take(1, item)[0]

    def u16(self, item: str = "two-byte integer") -> int:
        return int(struct.unpack("!H", self._take(2, item))[0])

    def u32(self, item: str = "four-byte integer") -> int:
        return int(struct.unpack("!I", self._take(4, item))[0])

    def varint(self, item: str = "variable byte integer") -> int:
        value, shift = 0, 0
        for i in range(4):
            byte = self.u8(item)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if i and byte == 0:
                    raise MalformedPacket(f"{self._what}: {item} not minimally encoded")
                return value
            shift += 7
        raise MalformedPacket(f"{self._what}: {item} longer than four bytes")

    def binary(self, item: str = "binary data") -> bytes:
        return self._take(self.u16(item), item)

    def string(self, item: str = "string") -> str:
        raw = self.binary(item)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket(f"{self._what}: {item} is not valid UTF-8") from None
        if "\x00" in text:
            raise MalformedPacket(f"{self._what}: {item} contains U+0000")
        return text

    def rest(self) -> bytes:
        chunk = self._data[self._pos:]
        self._pos = len(self._data)
        return chunk

    def expect_end(self) -> None:
        if self.remaining():
            raise MalformedPacket(f"{self._what}: {self.remaining()} unexpected trailing bytes")

    def properties(self, allowed: frozenset[int]) -> Properties:
        length = self.varint("property length")
        sub = Reader(self._take(length, "properties"), f"{self._what} properties")
        values: dict[int, PropValue] = {}
        user: list[tuple[str, str]] = []
        while sub.remaining():
            pid = sub.varint("property identifier")
            kind = _PROP_TYPES.get(pid)
            if kind is None or pid not in allowed:
                raise MalformedPacket(f"{self._what}: property 0x{pid:02x} is not allowed here",
                                      Reason.PROTOCOL_ERROR)
            value: PropValue
            if kind == _BYTE:
                value = sub.u8()
            elif kind == _U16:
                value = sub.u16()
            elif kind == _U32:
                value = sub.u32()
            elif kind == _VARINT:
                value = sub.varint()
            elif kind == _STRING:
                value = sub.string()
            elif kind == _BINARY:
                value = sub.binary()
            else:
                user.append((sub.string("user property name"), sub.string("user property value")))
                continue
            if pid in values:
                raise MalformedPacket(f"{self._what}: property 0x{pid:02x} appears twice",
                                      Reason.PROTOCOL_ERROR)
            if (pid in _FLAG_PROPS and value not in (0, 1)) or (pid in _NONZERO_PROPS
                                                                and value == 0):
                raise MalformedPacket(f"{self._what}: property 0x{pid:02x} has invalid value "
                                      f"{value!r}", Reason.PROTOCOL_ERROR)
            values[pid] = value
        return Properties(values, tuple(user))


# ----------------------------------------------------------------------------- topics


def check_topic_name(topic: str, what: str = "topic name") -> None:
    """A topic a message is published to: non-empty, no wildcards."""
    if not topic:
        raise MalformedPacket(f"empty {what}", Reason.TOPIC_NAME_INVALID)
    if "+" in topic or "#" in topic:
        raise MalformedPacket(f"{what} {topic!r} contains a wildcard", Reason.TOPIC_NAME_INVALID)


def valid_topic_filter(topic_filter: str) -> bool:
    """``+`` alone in a level, ``#`` alone in the last level, not empty."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching; wildcards in the first level never match topics that start with ``$``."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    wanted = topic_filter.split("/")
    levels = topic.split("/")
    for i, part in enumerate(wanted):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(wanted) == len(levels)


# ------------------------------------------------------------------------ parsed packets


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties


@dataclass(frozen=True)
class Connect:
    level: int
    client_id: str
    clean_start: bool
    keepalive: int
    will: Will | None
    username: str | None
    password: bytes | None
    properties: Properties


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int
    properties: Properties


@dataclass(frozen=True)
class SubscriptionRequest:
    topic_filter: str
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True)
class Subscribe:
    packet_id: int
    requests: tuple[SubscriptionRequest, ...]
    properties: Properties


@dataclass(frozen=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]


@dataclass(frozen=True)
class Ack:
    packet_id: int
    reason: int


@dataclass(frozen=True)
class Disconnect:
    reason: int
    properties: Properties


#: The fixed-header flags every packet but PUBLISH must carry.
REQUIRED_FLAGS = {int(t): (0b0010 if t in (PacketType.PUBREL, PacketType.SUBSCRIBE,
                                           PacketType.UNSUBSCRIBE) else 0)
                  for t in PacketType if t != PacketType.PUBLISH}


def parse_connect(body: bytes) -> Connect:
    r = Reader(body, "CONNECT")
    name = r.string("protocol name")
    level = r.u8("protocol level")
    if name not in ("MQTT", "MQIsdp"):
        raise MalformedPacket(f"CONNECT: unknown protocol name {name!r}", Reason.PROTOCOL_ERROR)
    if name != "MQTT" or level not in (4, 5):
        raise UnsupportedProtocol(level)
    v5 = level == 5
    flags = r.u8("connect flags")
    if flags & 0x01:
        raise MalformedPacket("CONNECT: reserved flag is set")
    has_will, will_qos, will_retain = bool(flags & 0x04), (flags >> 3) & 0x03, bool(flags & 0x20)
    has_password, has_username = bool(flags & 0x40), bool(flags & 0x80)
    if not has_will and (will_qos or will_retain):
        raise MalformedPacket("CONNECT: will QoS or retain set without a will")
    if will_qos == 3:
        raise MalformedPacket("CONNECT: will QoS 3")
    if not v5 and has_password and not has_username:
        raise MalformedPacket("CONNECT: password without user name")
    keepalive = r.u16("keep alive")
    props = r.properties(CONNECT_PROPS) if v5 else NO_PROPERTIES
    client_id = r.string("client identifier")
    will = None
    if has_will:
        will_props = r.properties(WILL_PROPS) if v5 else NO_PROPERTIES
        topic = r.string("will topic")
        check_topic_name(topic, "will topic")
        will = Will(topic, r.binary("will payload"), will_qos, will_retain, will_props)
    username = r.string("user name") if has_username else None
    password = r.binary("password") if has_password else None
    r.expect_end()
    return Connect(level, client_id, bool(flags & 0x02), keepalive, will, username, password,
                   props)


def parse_publish(flags: int, body: bytes, v5: bool) -> Publish:
    qos = (flags >> 1) & 0x03
    dup = bool(flags & 0x08)
    if qos == 3:
        raise MalformedPacket("PUBLISH: QoS 3")
    if qos == 0 and dup:
        raise MalformedPacket("PUBLISH: DUP set on a QoS 0 message")
    r = Reader(body, "PUBLISH")
    topic = r.string("topic name")
    packet_id = r.u16("packet identifier") if qos else 0
    if qos and packet_id == 0:
        raise MalformedPacket("PUBLISH: packet identifier 0")
    props = r.properties(PUBLISH_PROPS) if v5 else NO_PROPERTIES
    if Prop.TOPIC_ALIAS in props.values:
        raise MalformedPacket("PUBLISH: topic aliases are not supported (Topic Alias Maximum 0)",
                              Reason.TOPIC_ALIAS_INVALID)
    if Prop.SUBSCRIPTION_IDENTIFIER in props.values:
        raise MalformedPacket("PUBLISH: a client must not send a subscription identifier",
                              Reason.PROTOCOL_ERROR)
    check_topic_name(topic)
    return Publish(topic, r.rest(), qos, bool(flags & 0x01), dup, packet_id, props)


def parse_ack(kind: PacketType, body: bytes, v5: bool) -> Ack:
    r = Reader(body, kind.name)
    packet_id = r.u16("packet identifier")
    if packet_id == 0:
        raise MalformedPacket(f"{kind.name}: packet identifier 0")
    reason = 0
    if v5:
        if r.remaining():
            reason = r.u8("reason code")
        if r.remaining():
            r.properties(ACK_PROPS)
    r.expect_end()
    return Ack(packet_id, reason)


def parse_subscribe(body: bytes, v5: bool) -> Subscribe:
    r = Reader(body, "SUBSCRIBE")
    packet_id = r.u16("packet identifier")
    if packet_id == 0:
        raise MalformedPacket("SUBSCRIBE: packet identifier 0")
    props = r.properties(SUBSCRIBE_PROPS) if v5 else NO_PROPERTIES
    requests: list[SubscriptionRequest] = []
    while r.remaining():
        topic_filter = r.string("topic filter")
        options = r.u8("subscription options")
        qos = options & 0x03
        if qos == 3 or options & (0xC0 if v5 else 0xFC):
            raise MalformedPacket(f"SUBSCRIBE: invalid subscription options 0x{options:02x}")
        handling = (options >> 4) & 0x03
        if handling == 3:
            raise MalformedPacket("SUBSCRIBE: retain handling 3")
        requests.append(SubscriptionRequest(topic_filter, qos, bool(options & 0x04),
                                            bool(options & 0x08), handling))
    if not requests:
        raise MalformedPacket("SUBSCRIBE without topic filters", Reason.PROTOCOL_ERROR)
    return Subscribe(packet_id, tuple(requests), props)


def parse_unsubscribe(body: bytes, v5: bool) -> Unsubscribe:
    r = Reader(body, "UNSUBSCRIBE")
    packet_id = r.u16("packet identifier")
    if packet_id == 0:
        raise MalformedPacket("UNSUBSCRIBE: packet identifier 0")
    if v5:
        r.properties(UNSUBSCRIBE_PROPS)
    filters: list[str] = []
    while r.remaining():
        filters.append(r.string("topic filter"))
    if not filters:
        raise MalformedPacket("UNSUBSCRIBE without topic filters", Reason.PROTOCOL_ERROR)
    return Unsubscribe(packet_id, tuple(filters))


def parse_disconnect(body: bytes, v5: bool) -> Disconnect:
    r = Reader(body, "DISCONNECT")
    reason, props = 0, NO_PROPERTIES
    if v5:
        if r.remaining():
            reason = r.u8("reason code")
        if r.remaining():
            props = r.properties(DISCONNECT_PROPS)
    r.expect_end()
    return Disconnect(reason, props)


# ------------------------------------------------------------------------------ encoders


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        value, byte = divmod(value, 128)
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_binary(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def encode_string(text: str) -> bytes:
    return encode_binary(text.encode("utf-8"))


def encode_properties(values: Mapping[int, PropValue] | None = None,
                      user: Iterable[tuple[str, str]] = ()) -> bytes:
    """Property block with its length prefix; an empty block is the single byte 0."""
    out = bytearray()
    for pid, value in (values or {}).items():
        out += encode_varint(pid)
        kind = _PROP_TYPES[pid]
        if kind == _BYTE:
            out.append(int(value))  # type: ignore[arg-type]
        elif kind == _U16:
            out += struct.pack("!H", value)
        elif kind == _U32:
            out += struct.pack("!I", value)
        elif kind == _VARINT:
            out += encode_varint(int(value))  # type: ignore[arg-type]
        elif kind == _STRING:
            out += encode_string(str(value))
        else:
            out += encode_binary(bytes(value))  # type: ignore[arg-type]
    for key, val in user:
        out += encode_varint(Prop.USER_PROPERTY) + encode_string(key) + encode_string(val)
    return encode_varint(len(out)) + bytes(out)


def packet(kind: PacketType, body: bytes = b"", flags: int = 0) -> bytes:
    return bytes([(int(kind) << 4) | flags]) + encode_varint(len(body)) + body


def connack(session_present: bool, code: int, v5: bool,
            props: Mapping[int, PropValue] | None = None) -> bytes:
    """``code``: an MQTT 5 reason code for v5, a 3.1.1 return code (0-5) otherwise."""
    body = bytes([1 if session_present else 0, code])
    if v5:
        body += encode_properties(props)
    return packet(PacketType.CONNACK, body)


def publish(topic: str, payload: bytes, qos: int, retain: bool, dup: bool, packet_id: int,
            v5: bool, props: Mapping[int, PropValue] | None = None,
            user: Iterable[tuple[str, str]] = ()) -> bytes:
    body = encode_string(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if v5:
        body += encode_properties(props, user)
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return packet(PacketType.PUBLISH, body + payload, flags)


def ack(kind: PacketType, packet_id: int, v5: bool, reason: int = 0) -> bytes:
    """PUBACK/PUBREC/PUBCOMP; v5 always carries the reason code and an empty property block."""
    body = struct.pack("!H", packet_id)
    if v5:
        body += bytes([reason, 0])
    return packet(kind, body, REQUIRED_FLAGS[kind])


def suback(packet_id: int, codes: Iterable[int], v5: bool) -> bytes:
    body = struct.pack("!H", packet_id) + (b"\x00" if v5 else b"") + bytes(codes)
    return packet(PacketType.SUBACK, body)


def unsuback(packet_id: int, codes: Iterable[int], v5: bool) -> bytes:
    body = struct.pack("!H", packet_id)
    if v5:
        body += b"\x00" + bytes(codes)
    return packet(PacketType.UNSUBACK, body)


def pingresp() -> bytes:
    return packet(PacketType.PINGRESP)


def disconnect(reason: int) -> bytes:
    """Server-sent DISCONNECT exists in MQTT 5 only."""
    return packet(PacketType.DISCONNECT, bytes([reason, 0]))
