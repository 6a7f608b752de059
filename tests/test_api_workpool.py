"""The bounded pool behind identify and enroll: refuse at once when full, never queue unbounded.

Why unit tests next to the daemon's burst test (``test_api_live.py``): the burst shows the
429s happen under real load, but only here is the exact bound (workers running plus queue
waiting, then refusal) pinned down without depending on how fast the machine is. Jobs are held
with events, never with sleeps, so nothing here is timed.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest

from edge.api.errors import status_of
from edge.workpool import MAX_RETRY_AFTER_S, PoolBusy, WorkerPool


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    pool = WorkerPool(1, 2, name="test-work")
    yield pool
    pool.close()


def test_beyond_workers_plus_queue_is_refused_at_once(pool: WorkerPool) -> None:
    gate, started = threading.Event(), threading.Event()

    def held(value: int) -> int:
        started.set()
        gate.wait()
        return value

    running = pool.submit(held, 1)
    assert started.wait(30)
    waiting = [pool.submit(held, 2), pool.submit(held, 3)]
    stats = pool.stats()
    assert (stats.running, stats.waiting, stats.refused) == (1, 2, 0)
    with pytest.raises(PoolBusy) as busy:
        pool.submit(held, 4)
    assert 1 <= busy.value.retry_after_s <= MAX_RETRY_AFTER_S
    assert status_of(busy.value) == 429  # the API's answer, with Retry-After
    assert pool.stats().refused == 1
    gate.set()
    assert [f.result(30) for f in (running, *waiting)] == [1, 2, 3]
    stats = pool.stats()
    assert (stats.running, stats.waiting, stats.completed) == (0, 0, 3)
    assert pool.submit(lambda: "free again").result(30) == "free again"


def test_a_failing_job_gives_its_place_back(pool: WorkerPool) -> None:
    def broken() -> None:
        raise ValueError("bad photo")

    for _ in range(pool.workers + pool.queue + 2):  # more failures than places
        with pytest.raises(ValueError, match="bad photo"):
            pool.submit(broken).result(30)
    stats = pool.stats()
    assert (stats.running, stats.waiting, stats.refused, stats.completed) == (0, 0, 0, 5)


def test_run_awaits_the_job_or_refuses_without_waiting(pool: WorkerPool) -> None:
    gate = threading.Event()

    async def scenario() -> tuple[int, int]:
        blockers = [pool.submit(gate.wait) for _ in range(pool.workers + pool.queue)]
        with pytest.raises(PoolBusy):
            await pool.run(lambda: 0)
        gate.set()
        for blocker in blockers:
            await asyncio.wrap_future(blocker)
        return await pool.run(lambda a, b=0: a + b, 2, b=3), pool.stats().refused

    assert asyncio.run(scenario()) == (5, 1)


def test_workers_run_nicer_than_the_caller() -> None:
    """With a camera, the daemon's pool is niced so the pipeline thread gets the cores first."""
    pool = WorkerPool(1, 0, nice=5, name="test-nice")
    try:
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        theirs = pool.submit(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(30)
    finally:
        pool.close()
    assert theirs == min(19, mine + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # caller untouched


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError):
        WorkerPool(0, 4)
    with pytest.raises(ValueError):
        WorkerPool(1, -1)
