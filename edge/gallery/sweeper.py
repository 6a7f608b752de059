"""The consent sweeper: removes templates whose consent lapsed, at start-up and every minute.

Why a thread of its own and not a check at match time: an expired consent must remove the
templates from the database (and the matcher, through the store's events), not just hide
them, and that has to happen even when nobody walks past the camera.
"""

from __future__ import annotations

import logging
import threading

from edge.gallery.errors import GalleryError
from edge.gallery.store import GalleryStore

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0


class ConsentSweeper:
    """``start()`` sweeps once synchronously, then every ``interval_s`` until ``stop()``."""

    def __init__(self, store: GalleryStore, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._store = store
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def run_once(self) -> int:
        """One sweep; returns how many persons lost their templates. Errors are logged."""
        try:
            swept = self._store.sweep_consent()
        except GalleryError as exc:
            log.error("consent sweep failed", extra={"error": str(exc)})
            return 0
        finally:
            self.runs += 1
        return len(swept)

    def start(self) -> None:
        if self._thread is not None:
            return
        self.run_once()  # start-up: nothing lapsed may be matched even for the first minute
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="consent-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.run_once()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
