"""A small MQTT 3.1.1 / 5 broker so that ``make demo`` runs where mosquitto is not installed.

Why it exists: the demo must work on a fresh laptop with one command, and the daemon needs a
broker to talk to. It is for the demo on this machine only: it binds to a loopback address, has
no authentication, TLS or persistence across restarts, and bounds everything (packet size,
clients, sessions, subscriptions, queues, retained messages) so that a misbehaving client gets
its connection closed with a log line instead of hanging or exhausting the broker. Devices use a
real broker.

What it implements: CONNECT/CONNACK for protocol levels 4 and 5 (v5 properties are parsed and
validated; Session Expiry, Receive Maximum, Maximum Packet Size and the will's delay and
properties are honoured), persistent sessions (subscriptions, unacknowledged and queued QoS 1
messages kept for a client that comes back, ``session present`` set), PUBLISH at QoS 0, 1 and 2
(QoS 2 is accepted with PUBREC/PUBREL/PUBCOMP, exactly once into the broker; subscriptions are
granted at most QoS 1, so deliveries are QoS 0 or 1), ``+``/``#`` wildcards, retained messages,
Last Will on any close without a normal DISCONNECT (including a missed keep alive, 1.5 x the
client's interval), and session take-over.
Refused with their reason codes: topic aliases (maximum advertised as 0), subscription
identifiers and shared subscriptions (advertised as unavailable), enhanced authentication.

Design: one asyncio loop on one thread owns every piece of state, so nothing needs a lock;
:class:`EmbeddedBroker` starts that thread and stops it through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from types import TracebackType

from edge.demo import mqtt_wire as wire
from edge.demo.mqtt_wire import MalformedPacket, PacketType, Prop, Reason
from edge.errors import EdgeError

log = logging.getLogger(__name__)

#: Session Expiry Interval meaning "never" (MQTT 5); also used for 3.1.1 persistent sessions.
NEVER_EXPIRES = 0xFFFFFFFF
START_TIMEOUT_S = 10.0
#: How long a refused client (too many connections) gets to send its CONNECT for a CONNACK.
REFUSE_READ_TIMEOUT_S = 2.0
#: 3.1.1 CONNACK return codes.
_V311_IDENTIFIER_REJECTED = 0x02
_V311_SERVER_UNAVAILABLE = 0x03
_V311_UNSUPPORTED_VERSION = 0x01
_V311_SUBSCRIBE_FAILURE = 0x80


class BrokerError(EdgeError):
    """The embedded broker cannot start (non-loopback address, port in use, bad limits)."""


@dataclass(frozen=True)
class BrokerLimits:
    """Upper bounds on everything a client can make the broker hold."""

    max_packet_size: int = 256 * 1024  # bytes, whole packet, both directions
    max_clients: int = 64  # open connections; more get CONNACK "server busy"
    max_sessions: int = 128  # persistent sessions; the oldest absent one is evicted
    max_subscriptions: int = 256  # topic filters per session
    max_queued_messages: int = 1000  # per session, oldest dropped first
    max_queued_bytes: int = 4 * 1024 * 1024  # per session
    max_retained: int = 10_000
    max_retained_bytes: int = 32 * 1024 * 1024
    max_inflight: int = 32  # QoS 1 deliveries awaiting PUBACK, per client
    receive_maximum: int = 64  # inbound QoS 2 awaiting PUBREL, per client
    write_buffer_limit: int = 1024 * 1024  # QoS 0 is dropped for a client that stops reading
    connect_timeout_s: float = 10.0  # a new connection must send CONNECT within this

    def __post_init__(self) -> None:
        for name in ("max_clients", "max_sessions", "max_subscriptions", "max_queued_messages",
                     "max_retained", "max_inflight", "write_buffer_limit"):
            if getattr(self, name) < 1:
                raise BrokerError(f"broker limit {name} must be at least 1")
        if not 128 <= self.max_packet_size <= wire.MAX_VARINT:
            raise BrokerError(f"broker limit max_packet_size {self.max_packet_size} is out of "
                              f"range 128..{wire.MAX_VARINT}")
        if not 1 <= self.receive_maximum <= 65535:
            raise BrokerError("broker limit receive_maximum must be within 1..65535")
        if self.max_sessions < self.max_clients:
            raise BrokerError("broker limit max_sessions must be at least max_clients")
        if self.connect_timeout_s <= 0:
            raise BrokerError("broker limit connect_timeout_s must be positive")


@dataclass(frozen=True)
class BrokerStats:
    """Counters since start; read from another thread, so a snapshot, not a transaction."""

    clients: int  # connections open now (CONNECTed or not yet)
    sessions: int
    retained: int
    received: int  # PUBLISH packets accepted from clients
    delivered: int  # PUBLISH packets written to clients (re-sends included)
    dropped: int  # deliveries lost to queue, buffer, size or expiry bounds
    malformed: int  # connections closed for a malformed packet or protocol error
    refused: int  # CONNECTs refused (busy, protocol level, client id, auth method)


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    origin: str  # publishing client id, for the No Local option
    props: dict[int, wire.PropValue]  # application properties passed on to v5 subscribers
    user: tuple[tuple[str, str], ...]
    expires_at: float | None  # monotonic deadline from the Message Expiry Interval

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic)


@dataclass(frozen=True)
class _Outgoing:
    """One message as one session receives it (its QoS and retain flag may differ)."""

    message: _Message
    qos: int
    retain: bool


class _Connection:
    """One client socket; written to by any handler on the loop, read by its own task only."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 window: int) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self.v5 = False
        self.client_id = ""
        self.session: _Session | None = None
        self.keepalive = 0
        self.will: wire.Will | None = None
        self.window = window
        self.max_packet: int | None = None
        self.closed = False  # detached from its session: nothing is written or routed any more

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    def log_fields(self) -> dict[str, object]:
        protocol = ("5" if self.v5 else "3.1.1") if self.client_id else "unknown"
        return {"peer": self.peer, "client_id": self.client_id, "protocol": protocol}


@dataclass(eq=False)
class _Session:
    client_id: str
    expiry_s: int = 0
    subscriptions: dict[str, wire.SubscriptionRequest] = field(default_factory=dict)
    conn: _Connection | None = None
    inflight: dict[int, _Outgoing] = field(default_factory=dict)
    queue: deque[_Outgoing] = field(default_factory=deque)
    queued_bytes: int = 0
    awaiting_rel: set[int] = field(default_factory=set)
    next_packet_id: int = 1
    expiry_timer: asyncio.TimerHandle | None = None
    disconnected_at: float = 0.0
    dropped: int = 0

    def new_packet_id(self) -> int:
        while True:  # the window bounds inflight far below 65535, so this ends quickly
            packet_id = self.next_packet_id
            self.next_packet_id = packet_id % 65535 + 1
            if packet_id not in self.inflight:
                return packet_id


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is None or not addr.is_loopback:
        raise BrokerError(f"embedded broker host {host!r}: it binds to a loopback address only "
                          "(127.0.0.1, ::1 or localhost)")
    return str(addr)


def _is_v5_connect(body: bytes) -> bool:
    return body[:7] == b"\x00\x04MQTT\x05"


class EmbeddedBroker:
    """An MQTT broker on a loopback port, run on a background thread.

    ``start()`` returns once the port is listening (``port`` then holds the real port when 0 was
    asked for); ``stop()`` disconnects every client and ends the thread. Also a context manager.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 limits: BrokerLimits | None = None) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise BrokerError(f"embedded broker port {port!r} is not within 0..65535")
        self.host = _loopback_host(host)
        self.port = port
        self.limits = limits or BrokerLimits()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._reset()

    def _reset(self) -> None:
        """Fresh loop-owned state: a broker that is started again starts empty."""
        self._connections: set[_Connection] = set()
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, _Message] = {}
        self._retained_bytes = 0
        self._pending_wills: dict[str, tuple[asyncio.TimerHandle, wire.Will]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing = 0
        self._stopping = False
        self._received = 0
        self._delivered = 0
        self._dropped = 0
        self._malformed = 0
        self._refused = 0

    # ------------------------------------------------------------------ public API

    def start(self) -> EmbeddedBroker:
        if self._thread is not None:
            raise BrokerError("embedded broker is already started")
        self._ready.clear()
        self._start_error = None
        self._reset()
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise BrokerError(f"embedded broker did not start within {START_TIMEOUT_S:.0f} s")
        if self._start_error is not None:
            self._thread.join(START_TIMEOUT_S)
            self._thread = None
            raise BrokerError(f"embedded broker cannot listen on {self.host}:{self.port}: "
                              f"{self._start_error}")
        log.info("embedded MQTT broker listening", extra={"host": self.host, "port": self.port})
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect every client (v5: reason "server shutting down"; no wills) and stop."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop_evt = self._loop, self._stop_requested
        if loop is not None and stop_evt is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop_evt.set)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("embedded MQTT broker did not stop within %.1f s", timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> BrokerStats:
        return BrokerStats(
            clients=len(self._connections), sessions=len(self._sessions),
            retained=len(self._retained), received=self._received, delivered=self._delivered,
            dropped=self._dropped, malformed=self._malformed, refused=self._refused,
        )

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---------------------------------------------------------------- loop thread

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(); the thread must not die silently
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                log.exception("embedded MQTT broker stopped on an unexpected error")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                reuse_address=True)
        except OSError as exc:
            self._start_error = exc
            self._ready.set()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        await self._stop_requested.wait()
        self._stopping = True
        server.close()
        for conn in list(self._connections):
            conn.will = None
            if conn.v5 and conn.session is not None:
                conn.send(wire.disconnect(Reason.SERVER_SHUTTING_DOWN))
            conn.writer.close()
        for handle, _ in self._pending_wills.values():
            handle.cancel()
        for session in self._sessions.values():
            if session.expiry_timer is not None:
                session.expiry_timer.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)
        log.info("embedded MQTT broker stopped", extra={"host": self.host, "port": self.port})

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer, self.limits.max_inflight)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self._stopping:
                return
            if len(self._connections) >= self.limits.max_clients:
                await self._refuse_busy(conn)
                return
            self._connections.add(conn)
            await self._serve(conn)
        except Exception:  # a bug must end this connection, never the broker
            log.exception("embedded MQTT broker: connection failed unexpectedly",
                          extra=conn.log_fields())
        finally:
            self._connection_lost(conn)
            if writer.transport.get_write_buffer_size() > self.limits.write_buffer_limit:
                writer.transport.abort()
            else:
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        first = (await reader.readexactly(1))[0]
        length, shift, size = 0, 0, 0
        for size in range(1, 5):
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if size > 1 and byte == 0:
                    raise MalformedPacket("remaining length is not minimally encoded")
                break
            shift += 7
        else:
            raise MalformedPacket("remaining length is longer than four bytes")
        total = 1 + size + length
        if total > self.limits.max_packet_size:
            raise MalformedPacket(f"packet of {total} bytes exceeds the maximum of "
                                  f"{self.limits.max_packet_size}", Reason.PACKET_TOO_LARGE)
        body = await reader.readexactly(length) if length else b""
        return first >> 4, first & 0x0F, body

    async def _next_packet(self, conn: _Connection) -> tuple[int, int, bytes]:
        # Waiting for our own writes to drain first makes a client that sends without reading
        # its acks slow itself down instead of growing our buffer.
        await conn.writer.drain()
        return await self._read_packet(conn.reader)

    async def _serve(self, conn: _Connection) -> None:
        try:
            if not await self._connect(conn):
                return
            while not conn.closed:
                timeout = conn.keepalive * 1.5 if conn.keepalive else None
                try:
                    kind, flags, body = await asyncio.wait_for(self._next_packet(conn), timeout)
                except asyncio.TimeoutError:
                    log.warning("closing MQTT connection: no packet within 1.5 x keep alive "
                                "(%d s)", conn.keepalive, extra=conn.log_fields())
                    if conn.v5:
                        conn.send(wire.disconnect(Reason.KEEP_ALIVE_TIMEOUT))
                    return
                if conn.closed or not self._dispatch(conn, kind, flags, body):
                    return
        except MalformedPacket as exc:
            self._malformed += 1
            log.warning("closing MQTT connection: malformed packet or protocol error: %s", exc,
                        extra={**conn.log_fields(), "reason_code": int(exc.reason)})
            if conn.v5 and conn.session is not None:
                conn.send(wire.disconnect(exc.reason))
        except asyncio.TimeoutError:
            log.warning("closing MQTT connection: no CONNECT within %.1f s",
                        self.limits.connect_timeout_s, extra=conn.log_fields())
        except (asyncio.IncompleteReadError, ConnectionError):
            if conn.session is not None and not conn.closed:
                log.info("MQTT client connection lost without DISCONNECT",
                         extra=conn.log_fields())

    # ------------------------------------------------------------------- connect

    async def _refuse_busy(self, conn: _Connection) -> None:
        self._refused += 1
        log.warning("refusing MQTT connection: %d clients are connected (the maximum)",
                    len(self._connections), extra={"peer": conn.peer})
        if self._refusing >= self.limits.max_clients:
            return  # a flood: close without reading
        self._refusing += 1
        try:
            kind, _, body = await asyncio.wait_for(self._read_packet(conn.reader),
                                                   REFUSE_READ_TIMEOUT_S)
            if kind == PacketType.CONNECT:
                v5 = _is_v5_connect(body)
                conn.send(wire.connack(False, Reason.SERVER_BUSY if v5
                                       else _V311_SERVER_UNAVAILABLE, v5))
        except (MalformedPacket, asyncio.TimeoutError, asyncio.IncompleteReadError,
                ConnectionError):
            pass
        finally:
            self._refusing -= 1

    def _refuse(self, conn: _Connection, v5_reason: Reason, v311_code: int, why: str) -> bool:
        self._refused += 1
        log.warning("refusing MQTT connection: %s", why, extra=conn.log_fields())
        conn.send(wire.connack(False, v5_reason if conn.v5 else v311_code, conn.v5))
        return False

    async def _connect(self, conn: _Connection) -> bool:
        kind, flags, body = await asyncio.wait_for(self._read_packet(conn.reader),
                                                   self.limits.connect_timeout_s)
        if kind != PacketType.CONNECT:
            raise MalformedPacket(f"first packet has type {kind}, not CONNECT",
                                  Reason.PROTOCOL_ERROR)
        if flags:
            raise MalformedPacket(f"CONNECT: invalid fixed header flags 0x{flags:x}")
        try:
            c = wire.parse_connect(body)
        except wire.UnsupportedProtocol as exc:
            return self._refuse(conn, Reason.UNSUPPORTED_PROTOCOL_VERSION,
                                _V311_UNSUPPORTED_VERSION, str(exc))
        except MalformedPacket as exc:
            if _is_v5_connect(body):
                conn.v5 = True
                conn.send(wire.connack(False, exc.reason, True))
            raise
        conn.v5 = c.level == 5
        conn.keepalive = c.keepalive
        if conn.v5 and Prop.AUTHENTICATION_METHOD in c.properties.values:
            return self._refuse(conn, Reason.BAD_AUTHENTICATION_METHOD, 0,
                                "enhanced authentication is not supported")
        client_id, assigned = c.client_id, False
        if not client_id:
            if not conn.v5 and not c.clean_start:
                return self._refuse(conn, Reason.CLIENT_ID_NOT_VALID, _V311_IDENTIFIER_REJECTED,
                                    "empty client id with a persistent session")
            client_id, assigned = f"auto-{uuid.uuid4().hex}", True
        conn.client_id = client_id
        conn.will = c.will
        if conn.v5:
            expiry = c.properties.number(Prop.SESSION_EXPIRY_INTERVAL, 0)
            conn.window = min(c.properties.number(Prop.RECEIVE_MAXIMUM, 65535),
                              self.limits.max_inflight)
            max_packet = c.properties.get(Prop.MAXIMUM_PACKET_SIZE)
            conn.max_packet = max_packet if isinstance(max_packet, int) else None
        else:
            expiry = 0 if c.clean_start else NEVER_EXPIRES

        session = self._sessions.get(client_id)
        if session is not None and session.conn is not None:
            self._take_over(session.conn)
            session = self._sessions.get(client_id)
        pending = self._pending_wills.pop(client_id, None)
        if pending is not None:
            pending[0].cancel()
            if c.clean_start:  # the old session ends now, and with it the will's delay
                self._route(self._will_message(client_id, pending[1]))
        if session is not None and c.clean_start:
            self._end_session(session)
            session = None
        present = session is not None
        if session is None:
            session = self._new_session(client_id)
        elif session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        session.expiry_s = expiry
        session.conn = conn
        conn.session = session
        props: dict[int, wire.PropValue] = {
            Prop.RECEIVE_MAXIMUM: self.limits.receive_maximum,
            Prop.MAXIMUM_PACKET_SIZE: self.limits.max_packet_size,
            Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
            Prop.SHARED_SUBSCRIPTION_AVAILABLE: 0,
        }
        if assigned:
            props[Prop.ASSIGNED_CLIENT_IDENTIFIER] = client_id
        conn.send(wire.connack(present, 0, conn.v5, props))
        log.info("MQTT client connected", extra={
            **conn.log_fields(), "clean_start": c.clean_start, "session_present": present,
            "keepalive": c.keepalive, "session_expiry_s": expiry,
        })
        if present:
            for packet_id, out in list(session.inflight.items()):
                if not self._send(conn, session, out, dup=True, packet_id=packet_id):
                    session.inflight.pop(packet_id, None)
            self._pump(session)
        return True

    def _take_over(self, old: _Connection) -> None:
        log.info("MQTT client id taken over by a new connection", extra=old.log_fields())
        if old.v5:
            old.send(wire.disconnect(Reason.SESSION_TAKEN_OVER))
        self._connection_lost(old)
        old.writer.close()

    def _new_session(self, client_id: str) -> _Session:
        if len(self._sessions) >= self.limits.max_sessions:
            absent = [s for s in self._sessions.values() if s.conn is None]
            if absent:
                oldest = min(absent, key=lambda s: s.disconnected_at)
                log.warning("too many MQTT sessions: ending the oldest absent one",
                            extra={"client_id": oldest.client_id})
                self._end_session(oldest)
        session = _Session(client_id)
        self._sessions[client_id] = session
        return session

    def _end_session(self, session: _Session) -> None:
        if session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        pending = self._pending_wills.pop(session.client_id, None)
        if pending is not None:  # the session ended before the will's delay did
            pending[0].cancel()
            self._route(self._will_message(session.client_id, pending[1]))

    def _expire_session(self, session: _Session) -> None:
        session.expiry_timer = None
        if session.conn is None:
            log.info("MQTT session expired", extra={"client_id": session.client_id})
            self._end_session(session)

    def _connection_lost(self, conn: _Connection) -> None:
        """Detach ``conn`` from its session once; publish or schedule its will if still set."""
        if conn.closed:
            return
        conn.closed = True
        self._connections.discard(conn)
        session = conn.session
        if session is None or session.conn is not conn:
            return
        will, conn.will = conn.will, None
        if will is not None and not self._stopping:
            delay = min(will.properties.number(Prop.WILL_DELAY_INTERVAL, 0), session.expiry_s)
            if delay > 0:
                assert self._loop is not None
                handle = self._loop.call_later(delay, self._fire_will, conn.client_id)
                self._pending_wills[conn.client_id] = (handle, will)
            else:
                log.info("publishing the will of a client that left without DISCONNECT",
                         extra=conn.log_fields())
                self._route(self._will_message(conn.client_id, will))
        session.conn = None
        session.disconnected_at = time.monotonic()
        if self._stopping:
            return
        if session.expiry_s == 0:
            self._end_session(session)
        elif session.expiry_s != NEVER_EXPIRES:
            assert self._loop is not None
            session.expiry_timer = self._loop.call_later(session.expiry_s,
                                                         self._expire_session, session)

    def _fire_will(self, client_id: str) -> None:
        pending = self._pending_wills.pop(client_id, None)
        if pending is not None:
            log.info("publishing a delayed will", extra={"client_id": client_id})
            self._route(self._will_message(client_id, pending[1]))

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, conn: _Connection, kind: int, flags: int, body: bytes) -> bool:
        """Handle one packet; False once the client has disconnected normally."""
        if kind == 0 or (kind == PacketType.AUTH and not conn.v5):
            raise MalformedPacket(f"reserved packet type {kind}")
        ptype = PacketType(kind)
        if ptype != PacketType.PUBLISH and flags != wire.REQUIRED_FLAGS[kind]:
            raise MalformedPacket(f"{ptype.name}: invalid fixed header flags 0x{flags:x}")
        if ptype == PacketType.PUBLISH:
            self._on_publish(conn, wire.parse_publish(flags, body, conn.v5))
        elif ptype == PacketType.PUBACK:
            self._on_puback(conn, wire.parse_ack(ptype, body, conn.v5))
        elif ptype == PacketType.PUBREL:
            self._on_pubrel(conn, wire.parse_ack(ptype, body, conn.v5))
        elif ptype == PacketType.SUBSCRIBE:
            self._on_subscribe(conn, wire.parse_subscribe(body, conn.v5))
        elif ptype == PacketType.UNSUBSCRIBE:
            self._on_unsubscribe(conn, wire.parse_unsubscribe(body, conn.v5))
        elif ptype == PacketType.PINGREQ:
            if body:
                raise MalformedPacket("PINGREQ with a body")
            conn.send(wire.pingresp())
        elif ptype == PacketType.DISCONNECT:
            self._on_disconnect(conn, wire.parse_disconnect(body, conn.v5))
            return False
        else:  # CONNECT again, AUTH, PUBREC/PUBCOMP (never sent QoS 2), server-to-client types
            raise MalformedPacket(f"unexpected {ptype.name} from a client", Reason.PROTOCOL_ERROR)
        return True

    def _on_publish(self, conn: _Connection, pub: wire.Publish) -> None:
        session = conn.session
        assert session is not None
        if pub.qos == 2 and pub.packet_id in session.awaiting_rel:
            conn.send(wire.ack(PacketType.PUBREC, pub.packet_id, conn.v5))
            return  # a re-send of a message already routed; exactly once
        if pub.qos == 2 and len(session.awaiting_rel) >= self.limits.receive_maximum:
            raise MalformedPacket("more QoS 2 messages awaiting PUBREL than Receive Maximum",
                                  Reason.RECEIVE_MAXIMUM_EXCEEDED)
        self._received += 1
        log.debug("message received", extra={**conn.log_fields(), "topic": pub.topic,
                                              "qos": pub.qos, "retain": pub.retain})
        matched = self._route(self._message(pub.topic, pub.payload, pub.qos, pub.retain,
                                            conn.client_id, pub.properties))
        reason = Reason.SUCCESS if matched else Reason.NO_MATCHING_SUBSCRIBERS
        if pub.qos == 1:
            conn.send(wire.ack(PacketType.PUBACK, pub.packet_id, conn.v5, reason))
        elif pub.qos == 2:
            session.awaiting_rel.add(pub.packet_id)
            conn.send(wire.ack(PacketType.PUBREC, pub.packet_id, conn.v5, reason))

    def _on_puback(self, conn: _Connection, ack: wire.Ack) -> None:
        session = conn.session
        assert session is not None
        if session.inflight.pop(ack.packet_id, None) is None:
            log.debug("PUBACK for an unknown packet id", extra={**conn.log_fields(),
                                                                "packet_id": ack.packet_id})
        self._pump(session)

    def _on_pubrel(self, conn: _Connection, ack: wire.Ack) -> None:
        session = conn.session
        assert session is not None
        known = ack.packet_id in session.awaiting_rel
        session.awaiting_rel.discard(ack.packet_id)
        conn.send(wire.ack(PacketType.PUBCOMP, ack.packet_id, conn.v5,
                           Reason.SUCCESS if known else Reason.PACKET_ID_NOT_FOUND))

    def _on_subscribe(self, conn: _Connection, sub: wire.Subscribe) -> None:
        session = conn.session
        assert session is not None
        if Prop.SUBSCRIPTION_IDENTIFIER in sub.properties.values:
            raise MalformedPacket("SUBSCRIBE: subscription identifiers are not supported",
                                  Reason.SUBSCRIPTION_IDS_NOT_SUPPORTED)
        codes: list[int] = []
        # By filter: a SUBSCRIBE repeating one filter thousands of times scans retained once.
        send_retained: dict[str, wire.SubscriptionRequest] = {}
        for req in sub.requests:
            if conn.v5 and req.topic_filter.startswith("$share/"):
                codes.append(Reason.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
                continue
            if not wire.valid_topic_filter(req.topic_filter):
                codes.append(Reason.TOPIC_FILTER_INVALID if conn.v5
                              else _V311_SUBSCRIBE_FAILURE)
                continue
            new = req.topic_filter not in session.subscriptions
            if new and len(session.subscriptions) >= self.limits.max_subscriptions:
                codes.append(Reason.QUOTA_EXCEEDED if conn.v5 else _V311_SUBSCRIBE_FAILURE)
                continue
            granted = replace(req, qos=min(req.qos, 1))
            session.subscriptions[req.topic_filter] = granted
            codes.append(granted.qos)
            if req.retain_handling == 0 or (req.retain_handling == 1 and new):
                send_retained[req.topic_filter] = granted
        conn.send(wire.suback(sub.packet_id, codes, conn.v5))
        now = time.monotonic()
        for granted in send_retained.values():
            for topic, msg in list(self._retained.items()):
                if msg.expires_at is not None and msg.expires_at <= now:
                    self._drop_retained(topic)
                elif wire.topic_matches(granted.topic_filter, topic):
                    self._deliver(session, _Outgoing(msg, min(msg.qos, granted.qos), True))

    def _on_unsubscribe(self, conn: _Connection, unsub: wire.Unsubscribe) -> None:
        session = conn.session
        assert session is not None
        codes = [Reason.SUCCESS if session.subscriptions.pop(f, None) is not None
                 else Reason.NO_SUBSCRIPTION_EXISTED for f in unsub.topic_filters]
        conn.send(wire.unsuback(unsub.packet_id, codes, conn.v5))

    def _on_disconnect(self, conn: _Connection, disc: wire.Disconnect) -> None:
        session = conn.session
        assert session is not None
        if Prop.SESSION_EXPIRY_INTERVAL in disc.properties.values:
            expiry = disc.properties.number(Prop.SESSION_EXPIRY_INTERVAL, 0)
            if session.expiry_s == 0 and expiry != 0:
                raise MalformedPacket("DISCONNECT: a session without expiry cannot get one",
                                      Reason.PROTOCOL_ERROR)
            session.expiry_s = expiry
        if disc.reason != Reason.DISCONNECT_WITH_WILL:
            conn.will = None
        log.info("MQTT client disconnected", extra={**conn.log_fields(),
                                                    "reason_code": disc.reason})

    # ------------------------------------------------------------------- routing

    def _message(self, topic: str, payload: bytes, qos: int, retain: bool, origin: str,
                 props: wire.Properties) -> _Message:
        forwarded = {k: v for k, v in props.values.items() if k in wire.FORWARDED_PROPS}
        expiry = props.get(Prop.MESSAGE_EXPIRY_INTERVAL)
        expires_at = time.monotonic() + expiry if isinstance(expiry, int) else None
        return _Message(topic, payload, qos, retain, origin, forwarded, props.user, expires_at)

    def _will_message(self, client_id: str, will: wire.Will) -> _Message:
        return self._message(will.topic, will.payload, will.qos, will.retain, client_id,
                             will.properties)

    def _route(self, msg: _Message) -> int:
        """Hand ``msg`` to every session with a matching subscription; returns their count."""
        if msg.retain:
            self._store_retained(msg)
        matched = 0
        for session in list(self._sessions.values()):
            best: wire.SubscriptionRequest | None = None
            as_published = False
            for sub in session.subscriptions.values():
                if sub.no_local and msg.origin == session.client_id:
                    continue
                if wire.topic_matches(sub.topic_filter, msg.topic):
                    if best is None or sub.qos > best.qos:
                        best = sub
                    as_published = as_published or sub.retain_as_published
            if best is not None:
                matched += 1
                self._deliver(session, _Outgoing(msg, min(msg.qos, best.qos),
                                                 msg.retain and as_published))
        return matched

    def _store_retained(self, msg: _Message) -> None:
        self._drop_retained(msg.topic)
        if not msg.payload:
            return  # an empty retained message clears the topic
        if (len(self._retained) >= self.limits.max_retained
                or self._retained_bytes + msg.size > self.limits.max_retained_bytes):
            log.warning("retained message not stored: the broker's retained limit is reached",
                        extra={"topic": msg.topic, "retained": len(self._retained)})
            return
        self._retained[msg.topic] = msg
        self._retained_bytes += msg.size

    def _drop_retained(self, topic: str) -> None:
        old = self._retained.pop(topic, None)
        if old is not None:
            self._retained_bytes -= old.size

    def _deliver(self, session: _Session, out: _Outgoing) -> None:
        conn = session.conn
        if out.qos == 0:
            if conn is None:
                return  # QoS 0 is not kept for an absent client
            if session.queue:
                self._enqueue(session, out)  # behind queued QoS 1 messages: keeps the order
            elif conn.buffered() > self.limits.write_buffer_limit:
                self._drop(session, "the client does not read")
            else:
                self._send(conn, session, out)
            return
        if conn is None or session.queue or len(session.inflight) >= conn.window:
            self._enqueue(session, out)
        else:
            self._send(conn, session, out)

    def _enqueue(self, session: _Session, out: _Outgoing) -> None:
        session.queue.append(out)
        session.queued_bytes += out.message.size
        while (len(session.queue) > self.limits.max_queued_messages
               or session.queued_bytes > self.limits.max_queued_bytes):
            old = session.queue.popleft()
            session.queued_bytes -= old.message.size
            self._drop(session, "its queue is full")

    def _drop(self, session: _Session, why: str) -> None:
        self._dropped += 1
        session.dropped += 1
        level = logging.WARNING if session.dropped in (1, 100, 10_000) else logging.DEBUG
        log.log(level, "message dropped for an MQTT client: %s", why,
                extra={"client_id": session.client_id, "dropped": session.dropped})

    def _pump(self, session: _Session) -> None:
        """Move queued messages to the client while its window has room."""
        conn = session.conn
        while conn is not None and not conn.closed and session.queue:
            head = session.queue[0]
            if head.qos and len(session.inflight) >= conn.window:
                return
            session.queue.popleft()
            session.queued_bytes -= head.message.size
            self._send(conn, session, head)

    def _send(self, conn: _Connection, session: _Session, out: _Outgoing, *, dup: bool = False,
              packet_id: int = 0) -> bool:
        msg = out.message
        props = msg.props
        if msg.expires_at is not None:
            left = msg.expires_at - time.monotonic()
            if left <= 0:
                return False  # expired: MQTT 5 says it is simply not delivered
            props = {**props, Prop.MESSAGE_EXPIRY_INTERVAL: math.ceil(left)}
        if out.qos and not packet_id:
            packet_id = session.new_packet_id()
        data = wire.publish(msg.topic, msg.payload, out.qos, out.retain, dup, packet_id,
                            conn.v5, props, msg.user)
        if len(data) > min(conn.max_packet or self.limits.max_packet_size,
                           self.limits.max_packet_size):
            self._drop(session, "the message is larger than the client's maximum packet size")
            return False
        if out.qos:
            session.inflight[packet_id] = out
        conn.send(data)
        self._delivered += 1
        return True
