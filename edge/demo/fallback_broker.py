"""The demo's fallback MQTT broker: ``amqtt`` on 127.0.0.1, used only when mosquitto is missing.

Why a library and not our own: a broker is a lot of protocol (sessions, QoS handshakes, retained
messages, Last Will) that the demo needs only so that a laptop without root still shows the
whole pipeline; ``amqtt`` is a maintained asyncio broker that does exactly that. mosquitto stays
the first choice and the only broker the tests trust for delivery guarantees.

amqtt speaks MQTT 3.1.1 only, so a daemon pointed at it must use ``[mqtt] protocol = "3.1.1"``
(:data:`PROTOCOL`). It runs on its own event loop in a daemon thread, bound to loopback with
anonymous access and none of amqtt's optional plugins (``$SYS`` topics, packet logging), so the
demo's subscriber sees only the device's own messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from types import TracebackType
from typing import Any

from edge.errors import EdgeError

#: The only MQTT version amqtt's broker speaks.
PROTOCOL = "3.1.1"
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
#: amqtt logs every connection at INFO; the demo prints its own lines instead.
_QUIET_LOGGERS = ("amqtt", "transitions")


class FallbackBrokerError(EdgeError):
    """amqtt is not installed, or its broker could not listen."""


def free_port() -> int:
    """A TCP port nobody listens on at the moment (for the demo's broker and daemon)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _config(port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                    {"allow_anonymous": True}},
    }


class FallbackBroker:
    """``with FallbackBroker() as b:`` runs amqtt on ``127.0.0.1:b.port`` for the block."""

    def __init__(self, port: int = 0) -> None:
        self._want_port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> FallbackBroker:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise FallbackBrokerError(
                f"the demo's fallback broker needs amqtt ({exc}): pip install 'edge-face[demo]' "
                "or install mosquitto") from None
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        port = self._want_port or free_port()
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def boot() -> None:
            self._broker = Broker(_config(port), loop=loop)
            await self._broker.start()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except Exception as exc:  # reported to start(), which raises it in the caller
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="demo-amqtt", daemon=True)
        self._thread.start()
        try:
            started.result(START_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            self.stop()
            raise FallbackBrokerError(
                f"amqtt did not start on {HOST}:{port} within {START_TIMEOUT_S:.0f} s") from None
        except Exception as exc:
            self._loop = None
            raise FallbackBrokerError(f"amqtt cannot listen on {HOST}:{port}: {exc}") from None
        self.port = port
        return self

    def stop(self) -> None:
        """Shut the broker down (clients see their connection close); idempotent."""
        loop, self._loop = self._loop, None
        if loop is None or self._thread is None:
            return
        if self._broker is not None and loop.is_running():
            done = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop)
            try:
                done.result(STOP_TIMEOUT_S)
            except Exception as exc:  # a broker that fails to stop must not hide the demo's result
                logging.getLogger(__name__).warning("amqtt shutdown: %s", exc)
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> FallbackBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
