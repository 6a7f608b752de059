"""Replay at the speed a camera would deliver.

A clip read as fast as the disk allows is not what a door camera does: with ``realtime`` the
pipeline sees frames at the clip's own rate, drops what it cannot keep up with, and the latency
figures mean what they would mean in front of a real door.
"""

from __future__ import annotations

import threading
import time


class Pacer:
    """Hands out release times one frame period apart on the monotonic clock.

    If the reader falls behind by more than one period (a slow disk, a stalled consumer) the
    schedule restarts from now instead of releasing a burst of stale frames to catch up, as a
    camera would simply have delivered fewer frames.
    """

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be above 0, got {fps!r}")
        self.period = 1.0 / fps
        self._next: float | None = None
        self._wake = threading.Event()

    def wait(self) -> None:
        """Block until the next frame is due (at once for the first frame)."""
        now = time.monotonic()
        if self._next is None or now - self._next > self.period:
            self._next = now
        delay = self._next - now
        if delay > 0:
            self._wake.wait(delay)
        self._next += self.period

    def reset(self) -> None:
        """Start a fresh schedule (after a reopen) and re-arm waiting after an interrupt."""
        self._next = None
        self._wake.clear()

    def interrupt(self) -> None:
        """Cut a pending wait short (on close), so stopping never waits a whole period."""
        self._wake.set()
