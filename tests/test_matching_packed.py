"""The packed int8 scan: same answers as exact search, current after every write, never stale.

Real onnxruntime sessions on real (synthetic) galleries; ``pack_min_rows`` is lowered so a few
thousand rows exercise what a 1M-row gallery uses.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from edge.matching import Matcher
from edge.matching import packed as packed_mod
from edge.matching.packed import PackedScan, Repacker, transposed_codes
from edge.matching.quantize import GALLERY_LEVELS, PROBE_LEVELS, ZERO_POINT

DIM = 128
ROWS = 3000


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def gallery(seed: int = 5) -> tuple[list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return ([f"t{i}" for i in range(ROWS)], [f"p{i // 3}" for i in range(ROWS)],
            unit(rng, ROWS))


def packed_matcher(**kw) -> Matcher:
    kw.setdefault("pack_delay", 0.05)
    return Matcher(DIM, strategy="int8", pack_min_rows=64, **kw)


def exact_matcher(tids: list[str], pids: list[str], vecs: np.ndarray) -> Matcher:
    m = Matcher(DIM, strategy="exact")
    m.load(tids, pids, vecs)
    return m


def is_packed(m: Matcher) -> bool:
    current = m._packed
    return current is not None and current[0] == m.version


def probes_near(vecs: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    picks = vecs[rng.integers(0, len(vecs), n)] + 0.6 * unit(rng, n)
    return (picks / np.linalg.norm(picks, axis=1, keepdims=True)).astype(np.float32)


def same_answers(a: Matcher, b: Matcher, probes: np.ndarray) -> None:
    for batch in (probes[:1], probes[:8], probes):
        for x, y in zip(a.search(batch), b.search(batch), strict=True):
            assert (x.person_id, x.template_id, x.second_person_id, x.decision) == \
                (y.person_id, y.template_id, y.second_person_id, y.decision)
            assert x.similarity == pytest.approx(y.similarity, abs=1e-6)
            assert x.second_similarity == pytest.approx(y.second_similarity, abs=1e-6)


def test_packed_scan_is_exact_integer_arithmetic_at_the_code_limits() -> None:
    rng = np.random.default_rng(1)
    xq = rng.integers(-GALLERY_LEVELS, GALLERY_LEVELS + 1, size=(500, DIM))
    xq[:4], xq[4:8] = GALLERY_LEVELS, -GALLERY_LEVELS  # where a saturating kernel goes wrong
    qq = rng.integers(-PROBE_LEVELS, PROBE_LEVELS + 1, size=(DIM, 3))
    qq[:, 0], qq[:, 1] = PROBE_LEVELS, -PROBE_LEVELS
    scan = PackedScan(transposed_codes((xq + ZERO_POINT).astype(np.uint8)), threads=2)
    got = scan.scores(qq.astype(np.int8), 0.5).astype(np.float64)
    np.testing.assert_array_equal(got, (xq @ qq).T * 0.5)


def test_support_check_answers_once_and_the_matcher_obeys_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = packed_mod.packed_support()
    assert first[0] is True  # this machine's onnxruntime packs exactly
    assert packed_mod.packed_support() is first
    # A CPU whose kernel got the limits wrong: the matcher must stay on the plain scan.
    monkeypatch.setattr("edge.matching.matcher.packed_support", lambda: (False, True))
    tids, pids, vecs = gallery()
    m = packed_matcher()
    m.load(tids, pids, vecs)
    assert m.settle(10)
    assert m._packed is None and m.scan_kind() == "int8"
    same_answers(m, exact_matcher(tids, pids, vecs),
                 probes_near(vecs, np.random.default_rng(9), 8))


def test_searches_through_the_packed_copy_equal_exact_search() -> None:
    tids, pids, vecs = gallery()
    m = packed_matcher()
    m.load(tids, pids, vecs)
    assert m.settle(30)
    assert is_packed(m)
    calls = []
    original = PackedScan.scores

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    PackedScan.scores = counting
    try:
        same_answers(m, exact_matcher(tids, pids, vecs),
                     probes_near(vecs, np.random.default_rng(2), 40))
    finally:
        PackedScan.scores = original
    assert calls  # the packed copy really answered
    assert m.memory_bytes() >= m._table.nbytes() + ROWS * DIM


def test_a_write_is_visible_at_once_and_the_copy_catches_up() -> None:
    tids, pids, vecs = gallery()
    m = packed_matcher()
    m.load(tids, pids, vecs)
    assert m.settle(30)
    rng = np.random.default_rng(3)
    newcomer = unit(rng, 1)
    m.add("new", "p-new", newcomer[0])
    assert not is_packed(m)  # stale copies are never used
    assert m.search(newcomer)[0].template_id == "new"
    m.remove_person(pids[0])
    probe = vecs[:1]
    assert m.search(probe)[0].person_id != pids[0]
    deadline = time.monotonic() + 30
    while not is_packed(m) and time.monotonic() < deadline:  # no settle(): the pause alone
        time.sleep(0.02)
    assert is_packed(m)
    assert m.search(newcomer)[0].template_id == "new"
    assert m.search(probe)[0].person_id != pids[0]
    keep = [i for i, p in enumerate(pids) if p != pids[0]]
    ref = exact_matcher([tids[i] for i in keep] + ["new"], [pids[i] for i in keep] + ["p-new"],
                        np.concatenate([vecs[keep], newcomer]))
    same_answers(m, ref, probes_near(vecs, rng, 16))


def test_a_burst_of_writes_is_packed_once_after_the_pause() -> None:
    tids, pids, vecs = gallery()
    m = packed_matcher(pack_delay=0.3)
    m.load(tids, pids, vecs)
    assert m.settle(30)
    builds = []
    original = m._build_pack

    def counting() -> bool:
        builds.append(time.monotonic())
        return original()

    m._repacker._build = counting
    rng = np.random.default_rng(4)
    start = time.monotonic()
    for i, v in enumerate(unit(rng, 5)):
        m.add(f"burst{i}", "p-burst", v)
        time.sleep(0.1)  # each write restarts the 0.3 s pause
    deadline = time.monotonic() + 30
    while not is_packed(m) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert is_packed(m)
    assert len(builds) == 1 and builds[0] - start >= 0.4 + 0.3 - 0.05


def test_a_failed_build_leaves_the_plain_scan_answering(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no memory for the packed copy")

    monkeypatch.setattr("edge.matching.matcher.PackedScan", broken)
    tids, pids, vecs = gallery()
    m = packed_matcher()
    with caplog.at_level(logging.ERROR, logger="edge.matching.packed"):
        m.load(tids, pids, vecs)
        deadline = time.monotonic() + 10
        while m._repacker.busy and time.monotonic() < deadline:
            time.sleep(0.02)
    assert "packing the gallery failed" in caplog.text
    assert not is_packed(m)
    same_answers(m, exact_matcher(tids, pids, vecs),
                 probes_near(vecs, np.random.default_rng(6), 8))


def test_readers_stay_exact_while_writers_and_the_repacker_run() -> None:
    tids, pids, vecs = gallery()
    m = packed_matcher(pack_delay=0.0)
    m.load(tids, pids, vecs)
    m.settle(30)
    rng = np.random.default_rng(7)
    extra = unit(rng, 40)
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        # Template rows of the original gallery never move in score; whatever the writers do,
        # each probe's own row must stay its best match (the extras are far from it).
        local = np.random.default_rng(8)
        while not stop.is_set():
            i = int(local.integers(0, ROWS))
            got = m.search(vecs[i:i + 1])[0].template_id
            if got != tids[i]:
                errors.append(f"{tids[i]} -> {got}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i, v in enumerate(extra):
        m.add(f"x{i}", f"px{i}", v)
        if i % 3 == 0:
            m.remove_template(f"x{i}")
        time.sleep(0.01)
    assert m.settle(30)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert is_packed(m)


def test_scan_kind_names_the_packed_scan_from_its_thresholds() -> None:
    m = Matcher(DIM, strategy="int8", pack_min_rows=1000)
    assert m.scan_kind(rows=999) == "int8"
    assert m.scan_kind(rows=1000) == "int8-packed"
    assert m.scan_kind(rows=1999, probes=8) == "int8"
    assert m.scan_kind(rows=2000, probes=8) == "int8-packed"
    assert Matcher(DIM, strategy="int8", pack_min_rows=1, packed=False).scan_kind(
        rows=10**6) == "int8"
    assert Matcher(DIM).scan_kind(rows=10**6) == "int8-packed"  # the defaults pack at 1M


def test_small_galleries_and_exact_strategy_keep_no_packed_copy() -> None:
    tids, pids, vecs = gallery()
    small = Matcher(DIM, strategy="int8", pack_min_rows=ROWS + 1)
    small.load(tids, pids, vecs)
    assert small.settle(5) and small._packed is None
    exact = Matcher(DIM, strategy="exact", pack_min_rows=1)
    exact.load(tids, pids, vecs)
    assert exact.settle(5) and exact._packed is None
    off = Matcher(DIM, strategy="int8", pack_min_rows=1, packed=False)
    off.load(tids, pids, vecs)
    assert off.settle(5) and off._packed is None


def test_repacker_thread_exists_only_while_there_is_work() -> None:
    done = threading.Event()
    r = Repacker(lambda: done.set() or True, delay=0.0)
    r.request(now=True)
    assert done.wait(5)
    deadline = time.monotonic() + 5
    while r.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not r.busy
