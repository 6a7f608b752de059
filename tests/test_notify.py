"""sd_notify against real AF_UNIX datagram sockets (a path and an abstract name)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.daemon.notify import BuildKeepalive, Notifier, NotifyError
from edge.inference.engine_cache import EngineCache, EngineKey, build_hook, get_or_build


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


# -- EXTEND_TIMEOUT_USEC while an engine build runs (the TensorRT build itself needs a GPU: a
# function that waits for the keepalive's datagrams stands in for it) -------------------------

def _build_key() -> EngineKey:
    return EngineKey(model="yunet", onnx_sha256="ab" * 32, tensorrt="10.3.0.30", gpu="Orin",
                     compute_capability="8.7", precision="fp16")


def test_a_build_extends_the_start_timeout_and_pets_the_watchdog(
        path_socket: tuple[socket.socket, str], tmp_path: Path) -> None:
    sock, path = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000",
                         "WATCHDOG_PID": str(os.getpid())})
    keepalive = BuildKeepalive(notifier, extend_s=60.0, period_s=0.05)
    seen: list[str] = []

    def build() -> bytes:
        while seen.count("EXTEND_TIMEOUT_USEC=60000000") < 2:
            seen.append(sock.recv(4096).decode())
        return b"engine"

    with build_hook(keepalive):
        get_or_build(EngineCache(tmp_path), _build_key(), build, lambda d: d)
    assert "WATCHDOG=1" in seen
    assert keepalive.sent >= 2 and keepalive._thread is None  # stopped with the build


def test_no_keepalive_without_a_build(path_socket: tuple[socket.socket, str],
                                      tmp_path: Path) -> None:
    sock, path = path_socket
    cache = EngineCache(tmp_path)
    cache.store(_build_key(), b"cached")
    keepalive = BuildKeepalive(Notifier({"NOTIFY_SOCKET": path}), extend_s=60.0,
                               period_s=0.05)
    with build_hook(keepalive):
        assert get_or_build(cache, _build_key(), lambda: b"x", lambda d: d) == (b"cached", False)
    assert keepalive.sent == 0
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_keepalive_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        BuildKeepalive(Notifier({}), extend_s=10.0, period_s=10.0)
