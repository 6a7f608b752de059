"""A bounded pool for on-demand recognition work (the API's identify and enroll).

Why bounded and why low priority: the door's camera pipeline is the product; an operator's
upload is not. Requests beyond ``workers`` running plus ``queue`` waiting are refused at once
with an estimate of when to retry (the API turns that into 429 and ``Retry-After``), instead of
queueing without bound and timing out later. With a camera running, the workers also lower
their own scheduling priority (``nice``), and the API's engine runs its models on the calling
thread only (one-thread sessions), so all of a request's compute sits on a nice'd thread: the
kernel then gives the camera thread the cores first, and the door keeps its frame rate while
the API takes what is left.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from edge.errors import EdgeError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Assumed duration of a job before any has been timed (decode, detect, embed on a small CPU).
INITIAL_JOB_S = 0.1
MAX_RETRY_AFTER_S = 60


class PoolBusy(EdgeError):
    """Every worker is busy and the queue is full; retry after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"recognition workers are busy; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PoolStats:
    workers: int
    queue: int
    running: int
    waiting: int
    completed: int
    refused: int


class WorkerPool:
    """``workers`` threads and ``queue`` waiting places; ``submit`` refuses beyond them."""

    def __init__(self, workers: int, queue: int, *, nice: int = 0,
                 name: str = "edge-work") -> None:
        if workers < 1 or queue < 0:
            raise ValueError("a pool needs at least one worker and a queue of 0 or more")
        self.workers = workers
        self.queue = queue
        self._nice = nice
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._completed = 0
        self._refused = 0
        self._job_s = INITIAL_JOB_S
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name,
                                            initializer=self._lower_priority)

    def _lower_priority(self) -> None:
        if self._nice <= 0:
            return
        # Relative to the thread's current niceness (what the service runs at), never an
        # absolute value: under a unit with Nice=15, an absolute 10 would put the workers
        # *ahead* of the camera. On Linux a thread id names one thread: only this worker moves.
        try:
            tid = threading.get_native_id()
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + self._nice))
        except (OSError, AttributeError) as exc:
            log.warning("cannot lower the worker's priority", extra={"error": str(exc)})

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, drained by every worker."""
        with self._lock:
            ahead = self._admitted + 1
            estimate = self._job_s * ahead / self.workers
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(estimate)))

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            if self._admitted >= self.workers + self.queue:
                self._refused += 1
                refused = True
            else:
                self._admitted += 1
                refused = False
        if refused:
            raise PoolBusy(self.retry_after())
        try:
            return self._executor.submit(self._timed, fn, args, kwargs)
        except BaseException:
            with self._lock:
                self._admitted -= 1
            raise

    def _timed(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        with self._lock:
            self._running += 1
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            took = time.monotonic() - start
            with self._lock:
                self._running -= 1
                self._admitted -= 1
                self._completed += 1
                self._job_s = 0.8 * self._job_s + 0.2 * took

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``submit`` for a coroutine: refused at once when full, else awaited."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(self.workers, self.queue, self._running,
                             self._admitted - self._running, self._completed, self._refused)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
