"""A readers/writer lock: many searches at once, one writer alone.

Chosen over copy-on-write because a write touches one row of a matrix that may be 640 MB;
copying it per enrollment is out of the question, and copying only the small index arrays
still leaves the matrix rows themselves shared. Writers are preferred (a waiting writer stops
new readers), so a steady stream of probes cannot starve an enrollment or a deletion; a write
is O(1) amortised, so readers wait at most one write. Not re-entrant.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        # Plain methods, not a context manager: a search at 1k templates takes tens of
        # microseconds and a generator-based ``with`` would be a visible share of it.
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
