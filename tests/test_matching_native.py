"""The compiled int8 search (edge/matching/_int8scan.c through native.py): built by the install,
exact against float64 brute force at every kernel level this CPU runs, and replaced by numpy
when missing or wrong.

The Arm dot-product kernel cannot run on this x86 machine; the portable kernel it falls back to
on Arm CPUs without dot products is tested here like the others.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge.matching import Matcher
from edge.matching import native as native_mod
from edge.matching.grouped import GroupedCodes
from edge.matching.native import (
    LEVELS,
    Gallery,
    NativeError,
    NativeSearch,
    grouped,
    native_search,
    self_check,
    stride_for,
)
from edge.matching.quantize import ZERO_POINT, gallery_step, limit_codes, quantize_rows

DIM = 128
ROOT = Path(__file__).resolve().parents[1]


def runnable_levels() -> list[int]:
    best = NativeSearch().best_level
    if best == 4:
        return [1, 4]
    return [level for level in (1, 2, 3) if level <= best]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def setup_gallery(vectors: np.ndarray, person: np.ndarray) -> tuple[Gallery, float, float, float]:
    step = gallery_step(vectors)
    quant = quantize_rows(vectors, step)
    gallery = Gallery(grouped(quant.codes, stride_for(len(vectors))), vectors,
                      person.astype(np.int32))
    return gallery, step, quant.max_code_norm, quant.max_residual


def brute_top2(vectors: np.ndarray, person: np.ndarray,
               probe: np.ndarray) -> tuple[int, float, int, float]:
    q = probe.astype(np.float64) / np.linalg.norm(probe.astype(np.float64))
    scores = vectors.astype(np.float64) @ q
    best = int(scores.argmax())
    others = np.where(person != person[best], scores, -np.inf)
    second = int(others.argmax()) if np.isfinite(others.max()) else -1
    return best, float(scores[best]), second, float(others[second]) if second >= 0 else -np.inf


def test_the_install_built_the_library_and_it_passes_its_check() -> None:
    """`make setup` (the README's commands) compiles it; with a C compiler present, a missing
    library is a broken install, not a fallback."""
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler on this machine: the numpy paths serve")
    assert native_mod.LIBRARY.is_file()
    found = native_search(DIM)
    assert found is not None and found.level == found.best_level
    assert Matcher(DIM).scan_kind(rows=1000) == "int8-native"


@pytest.mark.parametrize("level", [1, 2, 3, 4])
@pytest.mark.parametrize("per_person", [1, 3, 1000])
def test_every_kernel_level_equals_brute_force(level: int, per_person: int) -> None:
    if level not in runnable_levels():
        pytest.skip(f"{LEVELS[level]} does not run on this CPU")
    lib = NativeSearch(level=level)
    rng = np.random.default_rng(level * 10 + per_person)
    for rows in (1, 15, 16, 17, 63, 64, 65, 200, 1000):
        vectors = unit(rng, rows)
        person = np.arange(rows) // per_person
        gallery, step, norm, residual = setup_gallery(vectors, person)
        for n in (1, 2, 3, 4, 5, 8, 9, 16):
            near = vectors[rng.integers(0, rows, n // 2)] + 0.05 * rng.standard_normal(
                (n // 2, DIM))
            probes = (3.0 * np.concatenate([near, unit(rng, n - n // 2)])).astype(np.float32)
            found = lib.search(gallery, rows, step, norm, residual, probes)
            for (best, value, second, second_value, rescored), probe in zip(
                    found, probes, strict=True):
                want = brute_top2(vectors, person, probe)
                assert (best, second) == (want[0], want[2]), (rows, n)
                assert value == pytest.approx(want[1], abs=1e-9)
                if second >= 0:
                    assert second_value == pytest.approx(want[3], abs=1e-9)
                assert 1 <= rescored <= rows


@pytest.mark.parametrize("level", [1, 2, 3])
def test_near_ties_and_duplicates_are_resolved_exactly(level: int) -> None:
    """Rows closer together than the int8 error: ranking them is the re-scoring's job.
    Exact duplicates across persons tie; the earlier row wins, as numpy's argmax decides."""
    if level not in runnable_levels():
        pytest.skip(f"{LEVELS[level]} does not run on this CPU")
    rng = np.random.default_rng(31)
    q = unit(rng, 1)[0]
    base = unit(rng, 300)
    # 40 rows within 1e-4 of each other in score, one template each, plus a duplicate pair.
    close = q + 1e-4 * rng.standard_normal((40, DIM)).astype(np.float32)
    vectors = np.concatenate([base, close, close[:1]])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    person = np.arange(len(vectors))
    gallery, step, norm, residual = setup_gallery(vectors, person)
    ((best, _, second, _, rescored),) = NativeSearch(level=level).search(
        gallery, len(vectors), step, norm, residual, q[None, :])
    want = brute_top2(vectors, person, q)
    assert (best, second) == (want[0], want[2])
    assert rescored >= 40  # every close row had to be re-scored


@pytest.mark.parametrize("level", [1, 2, 3])
def test_integer_scores_equal_exact_arithmetic_at_the_code_limits(level: int) -> None:
    if level not in runnable_levels():
        pytest.skip(f"{LEVELS[level]} does not run on this CPU")
    xq, qq = limit_codes(DIM)
    codes = (xq + ZERO_POINT).astype(np.uint8)
    layout = grouped(codes, stride_for(len(codes)))
    for n in (1, 2, 3):
        got = NativeSearch(level=level).int_scores(layout, len(codes), qq[:, :n].T)
        assert np.array_equal(got, qq[:, :n].T.astype(np.int64) @ xq.T.astype(np.int64))
    with pytest.raises(NativeError, match="returned -1"):  # 64 is outside 7 bits
        NativeSearch(level=level).int_scores(layout, len(codes), np.full((1, DIM), 64))


def test_self_check_rejects_a_library_that_computes_wrongly() -> None:
    class OffByOne(NativeSearch):
        def int_scores(self, codes4: np.ndarray, rows: int, probe_codes: np.ndarray
                       ) -> np.ndarray:
            return super().int_scores(codes4, rows, probe_codes) + 1

    class Swapped(NativeSearch):
        def search(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return [(s, w, b, v, c) for b, v, s, w, c in super().search(*args, **kwargs)]

    assert "integer scores differ" in (self_check(OffByOne(), DIM) or "")
    assert "search differs" in (self_check(Swapped(), DIM) or "")
    assert self_check(NativeSearch(), DIM) is None
    assert self_check(NativeSearch(), 4) is None  # the smallest dimension it takes


def test_a_missing_library_leaves_numpy_serving(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(native_mod, "LIBRARY", ROOT / "no-such-library.so")
    monkeypatch.setattr(native_mod, "_loaded", {})
    with caplog.at_level(logging.WARNING):
        m = Matcher(DIM)
    assert any(r.__dict__.get("event") == "matcher_native_unavailable"
               and "was not built" in r.__dict__.get("reason", "") for r in caplog.records)
    assert m._table.grouped is None and m._table.columns is not None
    assert m.scan_kind(rows=1000) == "fp32"
    rng = np.random.default_rng(5)
    vectors = unit(rng, 300)
    m.load([f"t{i}" for i in range(300)], [f"p{i // 3}" for i in range(300)], vectors)
    assert m.search(vectors[7])[0].template_id == "t7"
    monkeypatch.setattr(native_mod, "_loaded", {})
    assert native_search(130) is None  # and dims the kernel cannot take


def test_wrong_version_is_refused(tmp_path: Path) -> None:
    source = (ROOT / "edge/matching/_int8scan.c").read_text(encoding="utf-8")
    old = source.replace("int edge_int8_version(void) { return EDGE_INT8_VERSION; }",
                         "int edge_int8_version(void) { return 1; }")
    assert old != source
    (tmp_path / "edge/matching").mkdir(parents=True)
    (tmp_path / "edge/matching/_int8scan.c").write_text(old, encoding="utf-8")
    shutil.copy(ROOT / "edge/matching/_int8scan.h", tmp_path / "edge/matching")
    hatch_build = pytest.importorskip("hatch_build")
    if hatch_build.compiler() is None:
        pytest.skip("no C compiler")
    assert hatch_build.build(tmp_path) is None
    with pytest.raises(NativeError, match="version 1, this code needs 3"):
        NativeSearch(tmp_path / "edge/matching/_int8scan.so")


def test_build_hook_compiles_atomically_and_reports_a_broken_compiler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hatch_build = pytest.importorskip("hatch_build")
    if hatch_build.compiler() is None:
        pytest.skip("no C compiler")
    (tmp_path / "edge/matching").mkdir(parents=True)
    for name in ("_int8scan.c", "_int8scan.h"):
        shutil.copy(ROOT / "edge/matching" / name, tmp_path / "edge/matching")
    assert hatch_build.build(tmp_path) is None
    built = tmp_path / "edge/matching/_int8scan.so"
    assert self_check(NativeSearch(built), DIM) is None
    before = built.read_bytes()
    monkeypatch.setenv("CC", "false")
    assert "failed" in (hatch_build.build(tmp_path) or "")
    assert built.read_bytes() == before  # the good library is kept, no temporary left
    assert sorted(p.name for p in built.parent.iterdir()) == [
        "_int8scan.c", "_int8scan.h", "_int8scan.so"]


def test_probes_the_library_refuses_go_to_the_general_path() -> None:
    """NaN, infinity and zero probes get the general path's errors through the native matcher
    (``test_matching.test_fast_path_single_person_and_bad_float32_probes``); a tiny probe is
    refused by the library too, then scaled by the general path and answered."""
    m = Matcher(DIM)
    assert m._native is not None
    rng = np.random.default_rng(8)
    vectors = unit(rng, 50)
    m.load([f"t{i}" for i in range(50)], [f"p{i}" for i in range(50)], vectors)
    tiny = (vectors[3] * 1e-20).astype(np.float32)
    assert m._fast.search(tiny) is None
    assert m.search(tiny)[0].template_id == "t3"


def test_person_numbers_are_compacted_when_they_run_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numbers are never reused while a table lives; past MAX_NUMBER they are reassigned, and
    the rows of one person must still share one."""
    monkeypatch.setattr("edge.matching.grouped.MAX_NUMBER", 20)
    rng = np.random.default_rng(6)
    m = Matcher(DIM, capacity=16)
    vectors = unit(rng, 200)
    live: dict[str, tuple[str, np.ndarray]] = {}
    for i in range(200):  # persons come and go: 100 distinct ones, never more than ~10 live
        pid = f"p{i // 2}"
        m.add(f"t{i}", pid, vectors[i])
        live[f"t{i}"] = (pid, vectors[i])
        if i >= 20 and i % 2:
            for gone in (f"t{i - 20}", f"t{i - 19}"):
                m.remove_template(gone)
                del live[gone]
    grouped_codes = m._table.grouped
    assert isinstance(grouped_codes, GroupedCodes)
    assert grouped_codes._next <= 21
    numbers = grouped_codes.person[:len(m)].tolist()
    pairs = set(zip(numbers, m._table.person_of_row, strict=True))
    assert len(pairs) == len(set(numbers)) == len(set(m._table.person_of_row))
    tids = list(live)
    gallery = np.stack([live[t][1] for t in tids])
    for j in range(0, len(tids), 3):
        assert m.search(gallery[j])[0].template_id == tids[j]


def test_a_search_racing_a_growth_reads_only_its_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library runs without the GIL: a writer may grow the table (new arrays, more rows)
    after a search took its snapshot. The search must then ask for no more rows than the
    snapshot's arrays hold, and its answer is discarded by the version check."""
    rng = np.random.default_rng(9)
    m = Matcher(DIM, capacity=16)
    vectors = unit(rng, 40)
    for i in range(16):
        m.add(f"t{i}", f"p{i}", vectors[i])
    fast, table = m._fast, m._table
    old, version = table.native, m.version
    assert old is not None and old.capacity == 16
    for i in range(16, 40):  # grows the table twice; `old` keeps the first arrays alive
        m.add(f"t{i}", f"p{i}", vectors[i])
    assert table.native is not old and table.size == 40
    asked: list[int] = []
    real = fast._lib.call

    def spy(gallery: int, rows: int, *rest: object) -> int:
        asked.append(rows)
        return real(gallery, rows, *rest)

    monkeypatch.setattr(fast._lib, "call", spy)
    assert fast._native(table, old, vectors[30], 1, version) is None  # stale: discarded
    assert asked == [16]
    assert m.search(vectors[30])[0].template_id == "t30"  # the current snapshot answers


@pytest.mark.slow
def test_a_built_wheel_carries_the_library(tmp_path: Path) -> None:
    """How a device gets the package without a checkout (the Ansible role's route): the wheel
    holds the compiled library, tagged for this platform and any Python 3 (no ABI inside)."""
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q",
                           "-w", str(tmp_path)], capture_output=True, text=True, timeout=600,
                          check=False, env={**os.environ, "EDGE_FACE_REQUIRE_NATIVE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"-py3-none-{platform}.whl")
    with zipfile.ZipFile(wheel) as z:
        (inside,) = [n for n in z.namelist() if n.endswith("_int8scan.so")]
        (tmp_path / "lib.so").write_bytes(z.read(inside))
    assert self_check(NativeSearch(tmp_path / "lib.so"), DIM) is None
