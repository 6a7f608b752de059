"""uvicorn inside the daemon process, on a thread of its own, over a socket bound up front.

Why in the daemon: the API must share the daemon's gallery store and live matcher, so that an
enrollment is searched by the camera pipeline on its very next frame and a deletion stops
matching at once, with no second process to keep in step. Why bind the socket here: a port in
use, a bad address or a TLS file that does not load must stop start-up with a message naming
the key, on the main thread, before systemd is told the service is ready.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from edge.config import ApiConfig
from edge.errors import ConfigError, EdgeError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0


class ApiStartError(EdgeError):
    """The API cannot listen (address in use, not permitted, not an address of this host)."""


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"[api] host = {host!r} is not an address of this machine: "
                          f"{exc.strerror}") from None
    family, _, _, _, address = infos[0]
    # IPPROTO_TCP said explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and without it every keep-alive answer waited ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ApiStartError(f"admin API cannot listen on {host}:{port} ([api] host, port): "
                            f"{exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class ApiServer:
    """Serve ``app`` on ``[api] host:port`` (TLS when configured) until ``stop()``."""

    def __init__(self, app: Any, api: ApiConfig) -> None:
        self.sock = bind(api.host, api.port)
        self.tls = bool(api.tls_cert)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False,
            date_header=True, proxy_headers=False, timeout_keep_alive=5,
            timeout_graceful_shutdown=3, ssl_certfile=api.tls_cert or None,
            ssl_keyfile=api.tls_key or None)
        try:
            config.load()  # TLS files are read here, on the main thread, or not at all
        except (OSError, ValueError) as exc:
            self.sock.close()
            raise ConfigError(f"[api] tls_cert / tls_key cannot be loaded: {exc}") from None
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _serve(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # reported by start() or noticed by the daemon's loop
            self._error = exc
            log.exception("admin API server stopped with an error")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="edge-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ApiStartError(f"admin API did not start: {self._error or 'timed out'}")
            time.sleep(0.01)
        log.info("admin API listening", extra={"host": self.sock.getsockname()[0],
                                               "port": self.port, "tls": self.tls})

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()
