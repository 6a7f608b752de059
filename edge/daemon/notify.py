"""sd_notify for ``Type=notify`` with a watchdog, with or without systemd-python.

Why not require systemd-python: on PyPI it needs ``libsystemd-dev`` and a compiler, and the
protocol is one datagram of ``KEY=value`` lines to ``$NOTIFY_SOCKET``. So the library is used when
it imports (Debian's ``python3-systemd``), and otherwise this module sends the datagram itself.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op returning False, so the daemon code
calls these unconditionally.

Why ``watchdog_interval`` honours ``$WATCHDOG_PID``: the variable is inherited by children, and a
child that pets the watchdog for its parent would hide a hung daemon.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from types import ModuleType

from edge.errors import EdgeError

log = logging.getLogger(__name__)


class NotifyError(EdgeError):
    """``$NOTIFY_SOCKET`` or ``$WATCHDOG_USEC`` holds something this daemon cannot use."""


def _load_systemd_daemon() -> ModuleType | None:
    try:
        import systemd.daemon  # type: ignore[import-not-found]
    except ImportError:
        return None
    return systemd.daemon  # type: ignore[no-any-return]


def _address(raw: str) -> str:
    """Socket address of ``$NOTIFY_SOCKET``: a path, or an abstract name written ``@name``."""
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    raise NotifyError(
        f"NOTIFY_SOCKET={raw!r}: unsupported address (expected an absolute path or @abstract)"
    )


class Notifier:
    """Tell systemd about readiness, status, watchdog pets, slow start-up and stopping.

    ``environ`` defaults to the process environment; passing one (tests, a supervisor that
    hands the variables over) always uses the built-in datagram sender, because
    systemd-python reads only ``os.environ``.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw) if raw else None
        self._sd = _load_systemd_daemon() if environ is None and raw else None
        self._watchdog_s = self._read_watchdog(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @staticmethod
    def _read_watchdog(env: Mapping[str, str]) -> float | None:
        usec = env.get("WATCHDOG_USEC", "")
        if not usec:
            return None
        pid = env.get("WATCHDOG_PID", "")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None  # meant for another process (our parent)
            except ValueError:
                raise NotifyError(f"WATCHDOG_PID={pid!r} is not a process id") from None
        try:
            value = int(usec)
        except ValueError:
            raise NotifyError(f"WATCHDOG_USEC={usec!r} is not a number of microseconds") from None
        if value <= 0:
            raise NotifyError(f"WATCHDOG_USEC={usec!r} must be positive")
        return value / 2 / 1_000_000

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pets: half of ``WATCHDOG_USEC``; None if no watchdog."""
        return self._watchdog_s

    def notify(self, state: str) -> bool:
        """Send raw ``KEY=value`` lines; False when not under systemd or the send failed."""
        if self._address is None:
            return False
        if self._sd is not None:
            return bool(self._sd.notify(state))
        data = state.encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    # Python sockets are close-on-exec already: children do not inherit it.
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(data, self._address)
            except OSError as exc:
                # Never take the daemon down for a notification; say it once.
                if not self._warned:
                    self._warned = True
                    log.warning("sd_notify failed: %s", exc, extra={"state": state.split("=")[0]})
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: models loaded and the camera open (or ``none``)."""
        return self.notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def status(self, text: str) -> bool:
        """``STATUS=``: the line ``systemctl status`` shows (fps, faces, outbox depth)."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: call from the processing loop itself, so a hung loop gets killed."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, usec: int) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for more start-up/stop time (model build, slow camera)."""
        if usec <= 0:
            raise NotifyError(f"extend_timeout needs a positive number of microseconds: {usec}")
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(usec)}")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (what ``Type=notify-reload`` expects)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class BuildKeepalive:
    """While an engine build runs, keep asking systemd for more start-up time.

    Why: a first TensorRT build takes minutes on a Jetson, longer than any sensible
    ``TimeoutStartSec``, and the daemon cannot send READY before its models are loaded. So for
    as long as a build runs, a thread sends ``EXTEND_TIMEOUT_USEC`` (``extend_s`` each time,
    every ``period_s``) and, when a watchdog is set, ``WATCHDOG=1``: the main loop that normally
    pets it has not started yet. Use it as the hook of ``edge.inference.engine_cache.build_hook``.
    """

    def __init__(self, notifier: Notifier, *, extend_s: float = 60.0,
                 period_s: float = 20.0) -> None:
        if not 0 < period_s < extend_s:
            raise ValueError("BuildKeepalive needs 0 < period_s < extend_s")
        self._notifier = notifier
        self._extend_us = int(extend_s * 1_000_000)
        self._period = period_s
        self._lock = threading.Lock()
        self._active = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def __call__(self, model: str, started: bool) -> None:
        with self._lock:
            self._active += 1 if started else -1
            if started and self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="build-keepalive",
                                                daemon=True)
                self._thread.start()
                log.info("engine build under way; extending the start-up timeout",
                         extra={"model": model, "extend_s": self._extend_us / 1e6})
            if self._active <= 0 and self._thread is not None:
                self._active = 0
                self._stop.set()
                thread, self._thread = self._thread, None
            else:
                thread = None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            self._notifier.extend_timeout(self._extend_us)
            if self._notifier.watchdog_interval() is not None:
                self._notifier.watchdog()
            self.sent += 1
            if self._stop.wait(self._period):
                return


def _one_line(text: str) -> str:
    # A newline would start a new KEY=value assignment in the datagram.
    return " ".join(text.split())
