"""A real mosquitto per test, plus a real paho subscriber and a throw-away TLS PKI.

Why a real broker: the properties that matter (retained status, Last Will on a killed process,
redelivery after a broker restart, CONNACK refusals, TLS client certificates) live in the broker
and the wire protocol; a fake would only test our assumptions about them.

Usage from a test module (or re-export from ``conftest.py``)::

    from mqtt_broker import broker_factory, mqtt_broker  # noqa: F401  (pytest fixtures)

``mqtt_broker`` is one anonymous broker on a free 127.0.0.1 port; ``broker_factory(**opts)``
starts more (password file, TLS, a fixed port to restart on). All are stopped at teardown.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt import client as mqtt_client
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


def mosquitto_binary() -> str:
    """Path of mosquitto; a missing broker is a setup error, not a reason to skip."""
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("mosquitto is not installed: run `make test` (it installs it) or "
                "`sudo apt-get install mosquitto mosquitto-clients`", pytrace=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a one-off CA, a server certificate for 127.0.0.1/localhost and a client."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls_files(directory: Path, client_cn: str = "edge-face-test") -> TlsFiles:
    """Generate the PKI with ``cryptography`` (EC P-256: fast to make, accepted everywhere)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-face test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                     directory / "client.pem", directory / "client.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key = leaf("localhost", server=True)
    client_cert, client_key = leaf(client_cn, server=False)
    files.server_cert.write_bytes(server_cert)
    files.server_key.write_bytes(server_key)
    files.client_cert.write_bytes(client_cert)
    files.client_key.write_bytes(client_key)
    for key_file in (files.server_key, files.client_key):
        key_file.chmod(0o600)
    return files


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file made by the real ``mosquitto_passwd -b``."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.fail("mosquitto_passwd is missing (Debian package mosquitto)", pytrace=False)
    for i, (user, password) in enumerate(users.items()):
        args = [tool, "-b", *(["-c"] if i == 0 else []), str(path), user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=30)
    return path


@dataclass
class Broker:
    """One mosquitto process; ``stop()``/``start()`` keep the port so clients reconnect to it."""

    workdir: Path
    port: int
    password_file: Path | None = None
    tls: TlsFiles | None = None
    require_certificate: bool = False
    persistence: bool = False
    acl_file: Path | None = None
    host: str = HOST
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _write_conf(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            # Persistence keeps subscriber sessions (and their queued messages) across a broker
            # restart, like a production broker; tests that restart the broker turn it on.
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_file}",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to 'mosquitto' and cannot read
        if self.password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}",
                      f"keyfile {self.tls.server_key}",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> Broker:
        if self.process is not None and self.process.poll() is None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr \
                    else ""
                log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
                pytest.fail(f"mosquitto exited with {self.process.returncode}: {err}\n{log}",
                            pytrace=False)
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"mosquitto did not listen on {self.host}:{self.port} "
                    f"within {START_TIMEOUT_S} s", pytrace=False)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its ACL and password files without dropping clients."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def restart(self) -> None:
        self.stop()
        self.start()

    def env(self, **extra: str) -> dict[str, str]:
        """``EDGE_FACE_MQTT__*`` overrides that point the daemon at this broker."""
        env = {"EDGE_FACE_MQTT__HOST": self.host, "EDGE_FACE_MQTT__PORT": str(self.port)}
        env.update(extra)
        return env


BrokerFactory = Callable[..., Broker]


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """``make(port=, password_file=, tls=, require_certificate=, persistence=, acl_file=,
    start=True)``: keyword options of :class:`Broker`."""
    brokers: list[Broker] = []

    def make(*, port: int | None = None, password_file: Path | None = None,
             tls: TlsFiles | None = None, require_certificate: bool = False,
             persistence: bool = False, acl_file: Path | None = None,
             start: bool = True) -> Broker:
        workdir = tmp_path / f"mosquitto-{len(brokers)}"
        broker = Broker(workdir, port or free_port(), password_file, tls, require_certificate,
                        persistence, acl_file)
        brokers.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mqtt_broker(broker_factory: BrokerFactory) -> Broker:
    """One anonymous mosquitto on a free 127.0.0.1 port for this test."""
    return broker_factory()


class TcpProxy:
    """A real TCP relay between a client and the broker that can lose the broker's replies.

    Why: to prove that messages *in flight* (sent, not yet acknowledged) survive a dropped
    connection, the test must be sure some are in flight when it drops; stopping the broker
    cannot guarantee that (mosquitto acks within microseconds). ``hold_replies()`` makes the
    relay swallow broker-to-client bytes (a one-way network failure), ``cut()`` closes every
    relayed connection, ``release()`` restores normal service for new connections.
    """

    def __init__(self, broker: Broker) -> None:
        self.target = (broker.host, broker.port)
        self._listener = socket.create_server((HOST, 0))
        self.host, self.port = HOST, int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._hold = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_broker: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_broker and self._hold.is_set():
                    continue  # lost on the way back
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def hold_replies(self) -> None:
        self._hold.set()

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def release(self) -> None:
        self._hold.clear()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._listener.close()
        self.cut()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)

    def __iter__(self) -> Iterator[Any]:
        """``topic, payload, retain = message``: tests that compare plain tuples unpack it."""
        return iter((self.topic, self.payload, self.retain))


class Subscriber:
    """A real paho client that records every message it gets; bounded waits, never sleeps."""

    def __init__(self, broker: Broker, topic: str = "#", *, tls: TlsFiles | None = None,
                 username: str | None = None, password: str | None = None,
                 persistent: bool = False) -> None:
        """``persistent``: a session that outlives disconnects (and, with broker persistence,
        broker restarts), so messages published while it is away are queued for it."""
        self.messages: list[Received] = []
        self._cv = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt_client.Client(CallbackAPIVersion.VERSION2,
                                          client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
                                          protocol=mqtt_client.MQTTv5)
        self._client.reconnect_delay_set(0.1, 1.0)
        if username:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert),
                                 keyfile=str(tls.client_key))
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self._client.on_message = self._on_message
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self._client.connect(broker.host, broker.port, keepalive=30,
                             clean_start=not persistent, properties=props)
        self._client.loop_start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            self.close()
            pytest.fail("test subscriber could not subscribe", pytrace=False)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt_client.MQTTMessage) -> None:
        with self._cv:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cv.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool],
                 timeout: float = 20.0) -> list[Received]:
        """Wait until ``predicate(messages)`` holds; return a copy of the messages either way."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            return list(self.messages)

    def snapshot(self) -> list[Received]:
        with self._cv:
            return list(self.messages)

    def on(self, suffix: str) -> list[Received]:
        with self._cv:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
