"""sd_notify against real AF_UNIX datagram sockets (a path and an abstract name)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.daemon.notify import Notifier, NotifyError


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"edge-face-test-{uuid.uuid4().hex}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    yield sock, "@" + name
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_messages_on_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    sock, path = path_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready()
    assert _recv(sock) == "READY=1"
    assert n.status("fps 29.8\nfaces 1  outbox 0")
    assert _recv(sock) == "STATUS=fps 29.8 faces 1 outbox 0"  # one line, whatever was passed
    assert n.watchdog()
    assert _recv(sock) == "WATCHDOG=1"
    assert n.extend_timeout(30_000_000)
    assert _recv(sock) == "EXTEND_TIMEOUT_USEC=30000000"
    assert n.stopping()
    assert _recv(sock) == "STOPPING=1"
    assert n.ready(status="ready: 2 people")
    assert _recv(sock) == "READY=1\nSTATUS=ready: 2 people"
    assert n.reloading()
    lines = _recv(sock).split("\n")
    assert lines[0] == "RELOADING=1" and int(lines[1].removeprefix("MONOTONIC_USEC=")) > 0
    n.close()


def test_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, name = abstract_socket
    n = Notifier({"NOTIFY_SOCKET": name})
    assert n.watchdog()
    assert _recv(sock) == "WATCHDOG=1"
    n.close()


def test_no_op_outside_systemd() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.status("x") and not n.watchdog() and not n.stopping()
    assert n.watchdog_interval() is None


def test_vanished_socket_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not n.ready()
    assert not n.watchdog()
    assert len([r for r in caplog.records if "sd_notify failed" in r.getMessage()]) == 1


def test_watchdog_interval_is_half_and_respects_pid() -> None:
    me = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "20000000"}).watchdog_interval() == 10.0
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": me}).watchdog_interval() == 1.5
    other = str(os.getpid() + 100_000)
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": other}).watchdog_interval() is None


@pytest.mark.parametrize(("env", "match"), [
    ({"NOTIFY_SOCKET": "relative.sock"}, "NOTIFY_SOCKET"),
    ({"NOTIFY_SOCKET": "vsock:2:1234"}, "unsupported address"),
    ({"WATCHDOG_USEC": "soon"}, "WATCHDOG_USEC"),
    ({"WATCHDOG_USEC": "0"}, "positive"),
    ({"WATCHDOG_USEC": "100", "WATCHDOG_PID": "me"}, "WATCHDOG_PID"),
])
def test_bad_environment_is_named(env: dict[str, str], match: str) -> None:
    with pytest.raises(NotifyError, match=match):
        Notifier(env)


def test_extend_timeout_rejects_nonsense(path_socket: tuple[socket.socket, str]) -> None:
    with pytest.raises(NotifyError, match="positive"):
        Notifier({"NOTIFY_SOCKET": path_socket[1]}).extend_timeout(0)
