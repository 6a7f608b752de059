"""Capture on its own thread and always hand the pipeline the freshest frame.

A queue between a 30 fps camera and a pipeline that manages 12 fps grows without bound, and
every queued frame is latency added to the answer at the door. So there is one slot: capture
overwrites it, the pipeline takes whatever is newest, and what was overwritten unseen is counted
as dropped. The thread also owns the camera's life: a lost camera is closed and reopened with
exponential backoff for as long as the daemon runs; nothing a camera does can kill the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from edge.camera.errors import CameraError, CameraUnavailable
from edge.camera.frame import Frame, FrameSource

log = logging.getLogger(__name__)

StateName = Literal["open", "lost", "reopened"]
StateCallback = Callable[[StateName, int], None]


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """``initial * 2**(attempt-1)``, never above ``cap``; attempt 1 is the first failure."""
    exponent = min(max(attempt - 1, 0), 62)  # 2**62 s is already far beyond any cap
    return min(cap, initial * float(2**exponent))


@dataclass(frozen=True)
class ReaderStats:
    """Counters for metrics and ``STATUS=``; a snapshot, safe to keep."""

    state: str  # "starting", "open", "lost", "reopened", "ended", "failed" or "closed"
    captured: int
    delivered: int
    dropped: int
    failed_attempts: int  # open/read failures since start, over all outages
    outages: int
    last_backoff_s: float


class LatestFrameReader:
    """Runs ``source`` on a daemon thread; ``get()`` returns the newest frame not yet seen.

    ``drop_frames`` defaults to the source's ``realtime``: a clip replayed as fast as possible
    (``realtime = false``) is meant to have every frame processed, so capture waits for the
    consumer instead of overwriting. ``on_state(state, attempts)`` is called from the capture
    thread on each change: ``"open"`` (first success; ``attempts`` failures before it), ``"lost"``
    (``attempts`` = 1, the failure that started the outage) and ``"reopened"`` (``attempts`` it
    took). An end of stream (a clip without ``loop``) ends the thread; a ``CameraError`` that is
    not ``CameraUnavailable`` (the clip was deleted) ends it too and is raised by ``get()``.
    """

    def __init__(self, source: FrameSource, *, on_state: StateCallback | None = None,
                 drop_frames: bool | None = None, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, join_timeout_s: float = 2.0,
                 name: str = "camera") -> None:
        if not (backoff_initial_s > 0 and backoff_max_s >= backoff_initial_s):
            raise ValueError("backoff needs 0 < initial <= max")
        self.source = source
        self.name = name
        self._on_state = on_state
        self._drop = source.realtime if drop_frames is None else drop_frames
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._join_timeout = join_timeout_s
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._slot: Frame | None = None
        self._done = False
        self._error: CameraError | None = None
        self._state = "starting"
        self._captured = 0
        self._delivered = 0
        self._dropped = 0
        self._failed_attempts = 0
        self._outages = 0
        self._last_backoff = 0.0
        self._thread: threading.Thread | None = None

    # -- consumer side -------------------------------------------------------------------------

    def start(self) -> LatestFrameReader:
        if self._thread is not None:
            raise RuntimeError("LatestFrameReader already started")
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """Newest unseen frame; None after ``timeout`` seconds or once the stream has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self._done:
                    if self._error is not None:
                        raise self._error
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._delivered += 1
            self._cond.notify_all()  # a lossless capture may be waiting for the slot
            return frame

    @property
    def finished(self) -> bool:
        """True once the stream has ended (or failed for good) and its last frame was taken."""
        with self._cond:
            return self._done and self._slot is None

    @property
    def running(self) -> bool:
        """The capture thread is alive (it only stops at an end of stream or on close)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> CameraError | None:
        return self._error

    @property
    def stats(self) -> ReaderStats:
        with self._cond:
            return ReaderStats(self._state, self._captured, self._delivered, self._dropped,
                               self._failed_attempts, self._outages, self._last_backoff)

    def wait_open(self, timeout: float | None = None) -> bool:
        """Block until the source first opened (True) or ``timeout`` passed / it ended (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._opened.is_set():
            with self._cond:
                if self._done:
                    return False
            step = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if step <= 0:
                return False
            self._opened.wait(step)
        return True

    def close(self) -> None:
        """Stop capture; waits at most ``join_timeout_s`` for a read stuck in a driver."""
        self._stop.set()
        interrupt = getattr(self.source, "interrupt", None)
        if callable(interrupt):
            interrupt()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(self._join_timeout)
            if self._thread.is_alive():
                log.warning("capture thread did not stop in time; leaving it to exit on its own",
                            extra={"camera": self.name, "timeout_s": self._join_timeout})
        with self._cond:
            self._state = "closed"
            self._slot = None  # do not keep the last picture alive after close
            self._done = True
            self._cond.notify_all()

    def __enter__(self) -> LatestFrameReader:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- capture thread ------------------------------------------------------------------------

    def _run(self) -> None:
        attempts = 0  # consecutive failures of the current outage
        was_open = False
        is_open = False
        try:
            while not self._stop.is_set():
                try:
                    if not is_open:
                        self.source.open()
                        is_open = True
                        self._change("reopened" if was_open else "open", attempts)
                        was_open = True
                        attempts = 0
                        self._opened.set()
                    frame = self.source.read()
                except CameraUnavailable as exc:
                    reason = str(exc)
                except CameraError as exc:
                    log.error("camera failed for good", extra={"camera": self.name,
                                                               "error": str(exc)})
                    with self._cond:
                        self._error = exc
                        self._state = "failed"
                    return
                except Exception as exc:  # a backend bug must not end capture for good
                    log.exception("camera read raised; treating the camera as lost",
                                  extra={"camera": self.name})
                    reason = f"{type(exc).__name__}: {exc}"
                else:
                    if frame is None:
                        log.info("camera stream ended", extra={"camera": self.name})
                        with self._cond:
                            self._state = "ended"
                        return
                    self._publish(frame)
                    continue
                # The camera is lost (or never came up): close, back off, try again, forever.
                is_open = False
                self._close_source()
                attempts += 1
                delay = backoff_delay(attempts, *self._backoff)
                with self._cond:
                    self._failed_attempts += 1
                    self._last_backoff = delay
                if attempts == 1:
                    with self._cond:
                        self._outages += 1
                    self._change("lost", attempts)
                log.warning("camera unavailable; retrying",
                            extra={"camera": self.name, "attempt": attempts,
                                   "retry_in_s": round(delay, 3), "error": reason})
                self._stop.wait(delay)
        finally:
            self._close_source()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if not self._drop:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            if self._slot is not None:
                self._dropped += 1
            self._slot = frame
            self._captured += 1
            self._cond.notify_all()

    def _change(self, state: StateName, attempts: int) -> None:
        with self._cond:
            self._state = state
        log.info("camera state", extra={"camera": self.name, "state": state,
                                        "attempts": attempts})
        if self._on_state is not None:
            try:
                self._on_state(state, attempts)
            except Exception:  # a faulty callback must not stop capture
                log.exception("camera state callback raised", extra={"camera": self.name})

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            log.exception("closing the camera raised", extra={"camera": self.name})
