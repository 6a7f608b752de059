"""The in-memory matcher: exact top-1 (also through the int8 scan), open-set decisions, in-place
updates, bad input and concurrent readers. Real onnxruntime kernel, no mocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.config import MatchingConfig, load_config
from edge.errors import EdgeError
from edge.matching import (
    Matcher,
    MatcherError,
    MatchResult,
    PersonScore,
    TemplateIdError,
    VectorError,
    kernel,
    topk,
)
from edge.matching.kernel import Int8Scanner, get_scanner, self_check
from edge.matching.quantize import error_bounds, quantize_probes, quantize_rows
from edge.matching.table import TemplateTable, columns_nbytes

DIM = 128
#: "auto" serves small galleries through the compiled search, "numpy" is auto without it.
STRATEGIES = ("exact", "int8", "auto", "numpy")
# fp32 brute force and our float64 re-rank of the same fp32 vectors differ by rounding only.
TIE = 2e-5


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def with_score(q: np.ndarray, score: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with unit ``q`` is ``score``."""
    u = rng.standard_normal(q.shape[0])
    u -= (u @ q) * q
    u /= np.linalg.norm(u)
    return (score * q.astype(np.float64) + np.sqrt(1.0 - score * score) * u).astype(np.float32)


def normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def brute_persons(gallery: np.ndarray, persons: list[str], probe: np.ndarray) -> list[tuple]:
    """Exact person-level ranking: [(score, person, best row)], best first."""
    scores = gallery.astype(np.float64) @ normalised(probe).astype(np.float64)
    best: dict[str, tuple[float, int]] = {}
    for row, (s, p) in enumerate(zip(scores.tolist(), persons, strict=True)):
        if p not in best or s > best[p][0]:
            best[p] = (s, row)
    return sorted(((s, p, r) for p, (s, r) in best.items()), key=lambda t: -t[0])


def assert_top_matches(top: list[PersonScore], ranking: list[tuple], tids: list[str],
                       k: int) -> None:
    """Same persons in the same order as brute force, except inside exact ties."""
    assert len(top) == min(k, len(ranking))
    for i, got in enumerate(top):
        want_score, want_person, want_row = ranking[i]
        assert got.similarity == pytest.approx(want_score, abs=TIE)
        near = [p for s, p, _ in ranking if abs(s - want_score) <= TIE]
        if len(near) == 1:
            assert got.person_id == want_person
            assert got.template_id == tids[want_row]
        else:
            assert got.person_id in near


def large_gallery_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch on, at any size, what large galleries use: candidates through block maxima and
    the scan split across two threads."""
    monkeypatch.setattr(topk, "BLOCKED_MIN_ROWS", 0)
    monkeypatch.setattr(kernel, "PARALLEL_MIN_WORK", 0)


@pytest.fixture(params=[*STRATEGIES, "int8-large-paths"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "int8-large-paths":
        large_gallery_paths(monkeypatch)
        return "int8"
    return request.param


def make(strategy: str, **kw: object) -> Matcher:
    if strategy == "numpy":
        return Matcher(DIM, strategy="auto", threads=2, native=False, **kw)  # type: ignore[arg-type]
    return Matcher(DIM, strategy=strategy, threads=2, **kw)  # type: ignore[arg-type]


# -- exactness ---------------------------------------------------------------------------


def test_top1_equals_brute_force_on_random_gallery(strategy: str) -> None:
    rng = np.random.default_rng(1)
    gallery = unit(rng, 6000)
    persons = [f"p{i // 3}" for i in range(len(gallery))]
    tids = [f"t{i}" for i in range(len(gallery))]
    m = make(strategy)
    m.load(tids, persons, gallery)
    noisy = gallery[rng.integers(0, len(gallery), 24)] + 0.04 * rng.standard_normal((24, DIM))
    probes = np.concatenate([noisy, rng.standard_normal((24, DIM))]).astype(np.float32)
    singles = [probes[i:i + 1] for i in range(len(probes))]
    for batch in (*singles, probes[:8], probes):
        for res, probe in zip(m.search(batch), batch, strict=True):
            ranking = brute_persons(gallery, persons, probe)
            best = PersonScore(res.person_id, res.template_id, res.similarity)
            assert_top_matches([best], ranking, tids, 1)
            assert res.second_similarity == pytest.approx(ranking[1][0], abs=TIE)
    tops = m.top_k(probes, 7)
    for top, probe in zip(tops, probes, strict=True):
        assert_top_matches(top, brute_persons(gallery, persons, probe), tids, 7)


@pytest.mark.parametrize("native", [True, False])
def test_int8_top1_exact_at_50k(native: bool) -> None:
    rng = np.random.default_rng(2)
    gallery = unit(rng, 50_000)
    persons = [f"p{i // 5}" for i in range(len(gallery))]
    tids = [f"t{i}" for i in range(len(gallery))]
    m = Matcher(DIM, native=native)
    m.load(tids, persons, gallery)
    assert m.scan_kind() == ("int8-native" if native else "int8")
    probes = np.concatenate([gallery[:16] + 0.05 * rng.standard_normal((16, DIM)),
                             rng.standard_normal((16, DIM))]).astype(np.float32)
    exact = normalised(probes) @ gallery.T  # fp32 brute force, as FAISS flat computes it
    row_of = {t: i for i, t in enumerate(tids)}
    for j, res in enumerate(m.search(probes)):
        row = int(np.argmax(exact[j]))
        # The same template, or one tied with it to float32 rounding.
        assert res.template_id == tids[row] or exact[j][row_of[res.template_id]] >= \
            exact[j][row] - TIE
        assert res.similarity == pytest.approx(float(exact[j][row]), abs=TIE)


def near_tie_gallery(rng: np.random.Generator, q: np.ndarray, n_tied: int, gap: float,
                     n_background: int) -> tuple[np.ndarray, np.ndarray]:
    """Templates scoring 0.9, 0.9 - gap, 0.9 - 2 gap ... in shuffled rows, plus background."""
    wanted = 0.9 - gap * np.arange(n_tied)
    tied = np.stack([with_score(q, s, rng) for s in wanted])
    gallery = np.concatenate([tied, unit(rng, n_background)])
    order = rng.permutation(len(gallery))
    return gallery[order], order


@pytest.mark.parametrize("blocked", [False, True])
def test_near_ties_are_resolved_exactly_although_int8_scores_scramble_them(
        blocked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if blocked:
        large_gallery_paths(monkeypatch)
    rng = np.random.default_rng(3)
    q = unit(rng, 1)[0]
    gallery, order = near_tie_gallery(rng, q, n_tied=400, gap=3e-5, n_background=3000)
    persons = [f"p{i}" for i in range(len(gallery))]
    tids = [f"t{i}" for i in range(len(gallery))]
    best_row = int(np.flatnonzero(order == 0)[0])

    # Without the re-rank the int8 scores would pick another template: the test has teeth.
    table = TemplateTable.bulk(DIM, tids, persons, gallery.copy())
    scanner = get_scanner(DIM, 2)
    assert scanner is not None
    quant = quantize_probes(q[None, :])
    approx = scanner.scores(table.codes, quant.codes, table.step, quant.steps)[0]
    assert int(np.argmax(approx)) != best_row

    m = Matcher(DIM, strategy="int8", threads=2)
    m.load(tids, persons, gallery)
    res = m.search(q)[0]
    assert res.template_id == tids[best_row]
    assert res.similarity == pytest.approx(0.9, abs=1e-5)
    top = m.top_k(q, 20)[0]
    want = [tids[int(np.flatnonzero(order == i)[0])] for i in range(20)]
    assert [t.template_id for t in top] == want


@pytest.mark.parametrize("clipped", [False, True])
def test_error_bound_holds_for_every_row(clipped: bool) -> None:
    rng = np.random.default_rng(4)
    gallery = unit(rng, 4000)
    if clipped:
        # A component beyond the quantisation range (added after the range was fixed): its
        # clipped code is far off, and the bound must widen to cover it.
        gallery[:50] = normalised(np.concatenate([np.full((50, 1), 12.0),
                                                  rng.standard_normal((50, DIM - 1))], axis=1))
    table = TemplateTable(DIM)
    for i, v in enumerate(gallery):
        table.add(f"t{i}", "p", v)
    probes = np.concatenate([unit(rng, 16), gallery[:4]])
    scanner = get_scanner(DIM, 2)
    assert scanner is not None
    quant = quantize_probes(probes)
    approx = scanner.scores(table.codes, quant.codes, table.step, quant.steps)
    bounds = error_bounds(table.step, table.max_code_norm, table.max_residual,
                          quant.residual_norms)
    true = probes.astype(np.float64) @ gallery.astype(np.float64).T
    err = np.abs(true - approx).max(axis=1)
    assert (err <= bounds).all()
    if not clipped:
        assert (bounds < 0.05).all()  # tight enough that few rows need a re-rank
        assert (err > bounds / 20).all()  # and not vacuous: real error is of that order


def test_kernel_equals_integer_arithmetic_at_extreme_codes() -> None:
    rng = np.random.default_rng(5)
    xq = rng.integers(-127, 128, size=(300, DIM))
    xq[:20] = 127
    xq[20:40] = -127
    qq = rng.integers(-63, 64, size=(DIM, 4))
    qq[:, 0], qq[:, 1] = 63, -63
    scanner = get_scanner(DIM, 2)
    assert scanner is not None
    got = scanner.scores((xq + 128).astype(np.uint8), qq.astype(np.int8), 1.0,
                         np.ones(4, dtype=np.float32))
    assert np.array_equal(got.astype(np.int64), (xq @ qq).T)


def test_start_up_check_rejects_a_kernel_that_computes_wrongly() -> None:
    assert self_check(Int8Scanner(DIM, 2), DIM) is None
    # A real kernel, set up with the wrong zero point: every score is off.
    problem = self_check(Int8Scanner(DIM, 2, zero_point=127), DIM)
    assert problem is not None and "differs from exact integer arithmetic" in problem


def test_without_a_usable_int8_kernel_auto_falls_back_to_fp32(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulates an onnxruntime build without the contrib op (cannot be installed here): the
    kernel cache says "unavailable" for this dim and thread count."""
    monkeypatch.setitem(kernel._scanners, (DIM, 1), None)
    with pytest.raises(MatcherError, match="int8 matching is not available"):
        Matcher(DIM, strategy="int8", threads=1)
    m = Matcher(DIM, threads=1, int8_min_rows=10, native=False)
    rng = np.random.default_rng(17)
    gallery = unit(rng, 50)
    m.load([f"t{i}" for i in range(50)], [f"p{i}" for i in range(50)], gallery)
    assert m.scan_kind() == "fp32"
    assert m.search(gallery[7])[0].template_id == "t7"


def test_duplicates_tie_and_the_margin_says_unknown(strategy: str) -> None:
    rng = np.random.default_rng(6)
    base = unit(rng, 1)[0]
    gallery = np.concatenate([np.stack([base, base, base]), unit(rng, 50)])
    persons = ["alice", "alice", "bob"] + [f"x{i}" for i in range(50)]
    tids = [f"t{i}" for i in range(len(gallery))]
    m = make(strategy)
    m.load(tids, persons, gallery)
    res = m.search(base)[0]
    assert {res.person_id, res.second_person_id} == {"alice", "bob"}
    assert res.similarity == pytest.approx(1.0, abs=1e-6)
    assert res.second_similarity == pytest.approx(1.0, abs=1e-6)
    assert res.decision == "unknown"
    top = m.top_k(base, 3)[0]
    assert [t.person_id for t in top].count("alice") == 1


# -- person level and decisions ------------------------------------------------------------


def scored_gallery(q: np.ndarray, spec: list[tuple[str, float]],
                   rng: np.random.Generator) -> tuple[list[str], list[str], np.ndarray]:
    vectors = np.stack([with_score(q, s, rng) for _, s in spec])
    return [f"t{i}" for i in range(len(spec))], [p for p, _ in spec], vectors


def test_person_score_is_the_best_of_their_templates(strategy: str) -> None:
    rng = np.random.default_rng(7)
    q = unit(rng, 1)[0]
    tids, persons, vectors = scored_gallery(
        q, [("a", 0.5), ("a", 0.9), ("a", 0.7), ("b", 0.8), ("c", 0.1)], rng)
    m = make(strategy)
    m.load(tids, persons, vectors)
    res = m.search(q)[0]
    assert (res.person_id, res.template_id) == ("a", "t1")
    assert res.similarity == pytest.approx(0.9, abs=1e-5)
    assert (res.second_person_id, res.second_similarity) == ("b", pytest.approx(0.8, abs=1e-5))
    assert [(t.person_id, t.template_id) for t in m.top_k(q, 5)[0]] == [
        ("a", "t1"), ("b", "t3"), ("c", "t4")]


@pytest.mark.parametrize(("spec", "decision"), [
    ([("a", 0.50), ("b", 0.30)], "match"),
    ([("a", 0.364), ("b", 0.0)], "match"),
    ([("a", 0.36), ("b", 0.0)], "unknown"),  # below the 0.363 threshold
    ([("a", 0.50), ("b", 0.46)], "unknown"),  # within the 0.05 margin
    ([("a", 0.50), ("a", 0.49)], "match"),  # a person's own templates never compete
    ([("a", 0.40)], "match"),  # no runner-up: the margin is met
])
def test_open_set_decision(strategy: str, spec: list[tuple[str, float]], decision: str) -> None:
    rng = np.random.default_rng(8)
    q = unit(rng, 1)[0]
    m = make(strategy)
    m.load(*scored_gallery(q, spec, rng))
    res = m.search(q)[0]
    assert res.decision == decision
    assert res.person_id == "a"
    assert res.matched_person_id == ("a" if decision == "match" else None)


def test_thresholds_reload_from_config_file(tmp_path: Path, strategy: str) -> None:
    """What the daemon does on SIGHUP: re-read the file, hand the section to the matcher."""
    path = tmp_path / "config.toml"
    path.write_text("[matching]\nthreshold = 0.363\nmargin = 0.05\n", encoding="utf-8")
    rng = np.random.default_rng(9)
    q = unit(rng, 1)[0]
    m = make(strategy, config=load_config(path, env={}).matching)
    m.load(*scored_gallery(q, [("a", 0.45), ("b", 0.38)], rng))
    assert m.search(q)[0].decision == "match"
    path.write_text("[matching]\nthreshold = 0.5\nmargin = 0.05\n", encoding="utf-8")
    m.configure(load_config(path, env={}).matching)
    assert m.search(q)[0].decision == "unknown"
    m.configure(load_config(path, env={"EDGE_FACE_MATCHING__THRESHOLD": "0.4",
                                       "EDGE_FACE_MATCHING__MARGIN": "0.1"}).matching)
    assert m.search(q)[0].decision == "unknown"  # 0.45 - 0.38 < 0.1
    m.configure(MatchingConfig(threshold=0.4, margin=0.05))
    assert m.search(q)[0].decision == "match"
    with pytest.raises(MatcherError, match="threshold"):
        m.configure(MatchingConfig(threshold=1.5))
    assert m.config == MatchingConfig(threshold=0.4, margin=0.05)


# -- in-place updates ----------------------------------------------------------------------


def test_add_and_remove_are_visible_to_the_next_search(strategy: str) -> None:
    rng = np.random.default_rng(10)
    q = unit(rng, 1)[0]
    m = make(strategy)
    m.load(*scored_gallery(q, [("a", 0.6), ("b", 0.2)], rng))
    m.add("t-new", "c", with_score(q, 0.95, rng) * 3.0)  # not unit length: normalised
    res = m.search(q)[0]
    assert (res.person_id, res.template_id) == ("c", "t-new")
    assert res.similarity == pytest.approx(0.95, abs=1e-5)
    m.remove_template("t-new")
    assert m.search(q)[0].person_id == "a"
    assert "t-new" not in m
    m.add("t-a2", "a", with_score(q, 0.7, rng))
    assert m.search(q)[0].template_id == "t-a2"
    assert m.remove_person("a") == 2
    assert m.remove_person("a") == 0
    res = m.search(q)[0]
    assert (res.person_id, res.second_person_id) == ("b", None)
    assert m.person_count == 1
    m.remove_person("b")
    assert len(m) == 0
    assert m.search(q)[0].decision == "unknown"


def random_writes(m: Matcher, model: dict[str, tuple[str, np.ndarray]],
                  rng: np.random.Generator, *, steps: int, persons: int,
                  remove_share: float) -> Iterator[int]:
    """Random adds and removes, mirrored in ``model``; yields after each step."""
    for step in range(steps):
        if model and rng.random() < remove_share:
            victim = list(model)[int(rng.integers(len(model)))]
            m.remove_template(victim)
            del model[victim]
        else:
            tid, pid = f"t{step}", f"p{int(rng.integers(persons))}"
            vec = unit(rng, 1)[0].astype(np.float32)
            m.add(tid, pid, vec)
            model[tid] = (pid, vec)
        yield step


def test_growth_and_swap_removal_keep_every_row_right(strategy: str) -> None:
    """Random adds and removes against a plain dict model, checked by brute force."""
    rng = np.random.default_rng(11)
    m = make(strategy, capacity=16)
    assert m.capacity == 16
    model: dict[str, tuple[str, np.ndarray]] = {}
    for step in random_writes(m, model, rng, steps=400, persons=60, remove_share=0.35):
        if step % 40 == 39:
            tids = list(model)
            gallery = np.stack([model[t][1] for t in tids])
            persons = [model[t][0] for t in tids]
            probes = np.concatenate([gallery[:3] + 0.02, unit(rng, 3)]).astype(np.float32)
            for top, probe in zip(m.top_k(probes, 3), probes, strict=True):
                assert_top_matches(top, brute_persons(gallery, persons, probe), tids, 3)
    assert len(m) == len(model)
    assert m.capacity >= len(m) and m.capacity > 16
    table = m._table
    if table.grouped is not None:  # the compiled search's copy: codes and a person number
        third = table.grouped.nbytes()
        assert third >= m.capacity * (DIM + 4) and table.columns is None
    else:
        assert table.columns is not None and table.columns.shape == (DIM, m.capacity)
        third = columns_nbytes(table.columns)
        assert third >= m.capacity * DIM * 4
    assert m.memory_bytes() == m.capacity * DIM * 5 + third


def test_load_replaces_everything(strategy: str) -> None:
    rng = np.random.default_rng(12)
    m = make(strategy)
    m.load(["a1", "a2"], ["a", "a"], unit(rng, 2))
    m.load(["b1"], ["b"], unit(rng, 1))
    assert len(m) == 1 and "a1" not in m and "b1" in m
    assert m.search(unit(rng, 1))[0].person_id == "b"
    m.load([], [], np.zeros((0, DIM), dtype=np.float32))
    assert len(m) == 0 and m.search(unit(rng, 1))[0].decision == "unknown"
    m.add("c1", "c", unit(rng, 1)[0])
    assert m.search(unit(rng, 1))[0].person_id == "c"


def test_empty_matcher_answers_unknown(strategy: str) -> None:
    m = make(strategy)
    res = m.search(np.ones(DIM, dtype=np.float32))
    assert len(res) == 1
    assert res[0].decision == "unknown"
    assert res[0].person_id is None and res[0].similarity is None
    assert m.top_k(np.ones((2, DIM)), 3) == [[], []]
    assert m.search(np.zeros((0, DIM))) == []


def test_auto_switches_scan_by_size() -> None:
    native = Matcher(DIM)
    assert native.scan_kind(rows=1) == native.scan_kind(rows=131_072) == "int8-native"
    assert native.scan_kind(rows=131_072, probes=16) == "int8-native"
    assert native.scan_kind(rows=131_072, probes=17) == "int8"  # past the fast path's batch
    assert native.scan_kind(rows=131_073) == "int8-packed"
    m = Matcher(DIM, int8_min_rows=1600, native=False)
    assert m.scan_kind(rows=1599) == "fp32"
    assert m.scan_kind(rows=1600) == "int8"
    assert m.scan_kind(rows=532, probes=8) == "fp32"
    assert m.scan_kind(rows=533, probes=8) == "int8"
    assert Matcher(DIM, strategy="exact").scan_kind(rows=10**6) == "fp32"
    assert Matcher(DIM, strategy="int8").scan_kind(rows=1) == "int8"


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("probes", "message"), [
    (np.ones(127), r"shape \(n, 128\)"),
    (np.ones((2, 129)), r"shape \(n, 128\)"),
    (np.ones((1, 2, DIM)), r"shape \(n, 128\)"),
    (np.array([[np.nan] * DIM]), "NaN or infinity"),
    (np.vstack([np.ones(DIM), np.r_[np.inf, np.ones(DIM - 1)]]), "row 1 holds NaN"),
    (np.zeros((1, DIM)), "zero vector"),
    (np.array([["a"] * DIM]), "real numbers"),
    (np.ones((1, DIM), dtype=bool), "real numbers"),
    ([[1.0, "x"]], "real numbers"),
])
def test_bad_probes_are_refused_with_a_clear_error(probes: object, message: str) -> None:
    m = Matcher(DIM)
    m.add("t", "p", np.ones(DIM))
    with pytest.raises(VectorError, match=message) as info:
        m.search(probes)
    assert isinstance(info.value, EdgeError)


def test_bad_writes_change_nothing(strategy: str) -> None:
    rng = np.random.default_rng(13)
    m = make(strategy)
    m.load(["t1", "t2"], ["a", "b"], unit(rng, 2))
    probe = unit(rng, 1)
    before = m.top_k(probe, 2)
    cases = [
        (lambda: m.add("t1", "a", unit(rng, 1)[0]), TemplateIdError, "already"),
        (lambda: m.add("", "a", unit(rng, 1)[0]), TemplateIdError, "non-empty string"),
        (lambda: m.add("t3", 7, unit(rng, 1)[0]), TemplateIdError, "person id"),
        (lambda: m.add("t3", "a", np.full(DIM, np.nan)), VectorError, "NaN"),
        (lambda: m.add("t3", "a", np.ones((2, DIM))), MatcherError, "one vector"),
        (lambda: m.add("t3", "a", np.ones(64)), VectorError, "shape"),
        (lambda: m.remove_template("nope"), TemplateIdError, "not in the matcher"),
        (lambda: m.load(["x", "x"], ["a", "b"], unit(rng, 2)), TemplateIdError, "more than once"),
        (lambda: m.load(["x"], ["a", "b"], unit(rng, 2)), TemplateIdError, "1 ids for 2"),
        (lambda: m.load(["x", "y"], ["a", "b"], unit(rng, 1)[0]), VectorError, "shape"),
        (lambda: m.top_k(unit(rng, 1), 0), MatcherError, "positive integer"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert len(m) == 2 and "t3" not in m
    assert m.top_k(probe, 2) == before


def test_bad_construction() -> None:
    with pytest.raises(MatcherError, match="dim"):
        Matcher(0)
    with pytest.raises(MatcherError, match="strategy"):
        Matcher(DIM, strategy="fast")  # type: ignore[arg-type]
    with pytest.raises(MatcherError, match="margin"):
        Matcher(DIM, MatchingConfig(margin=-0.1))


# -- concurrency ---------------------------------------------------------------------------


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def inner() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
        return inner

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    return errors


def test_searches_during_writes_see_a_consistent_state(strategy: str) -> None:
    """A writer enrols and deletes (moving rows around) while readers search.

    Every answer must be one that some state of the gallery gives: the reported template must
    belong to the reported person and have exactly the reported score, and the winner is the
    anchor or, while enrolled, the mover just above it.
    """
    rng = np.random.default_rng(14)
    q = unit(rng, 1)[0]
    vectors: dict[str, np.ndarray] = {"anchor-t": with_score(q, 0.90, rng),
                                      "mover-t": with_score(q, 0.95, rng)}
    owner = {"anchor-t": "anchor", "mover-t": "mover"}
    fillers = [f"f{i}" for i in range(3000)]
    for i, tid in enumerate(fillers):
        vectors[tid] = unit(rng, 1)[0]
        owner[tid] = f"fp{i % 500}"
    m = make(strategy, capacity=16)
    m.load(["anchor-t", *fillers[:300]], ["anchor", *[owner[t] for t in fillers[:300]]],
           np.stack([vectors["anchor-t"], *[vectors[t] for t in fillers[:300]]]))
    done = threading.Event()
    seen = {"anchor": 0, "mover": 0}
    count_lock = threading.Lock()

    def writer() -> None:
        wrng = np.random.default_rng(15)
        live = set(fillers[:300])
        spare = list(fillers[300:])
        try:
            for i in range(300):
                m.add("mover-t", "mover", vectors["mover-t"])
                for _ in range(3):
                    tid = spare.pop()
                    m.add(tid, owner[tid], vectors[tid])
                    live.add(tid)
                victims = wrng.choice(sorted(live), size=3, replace=False)
                for tid in victims:
                    m.remove_template(str(tid))
                    live.discard(str(tid))
                    spare.insert(0, str(tid))
                time.sleep(0)  # let readers in: writers are preferred, a tight loop starves them
                m.remove_template("mover-t")
                time.sleep(0)
                if i % 50 == 0:
                    m.remove_person(owner[sorted(live)[0]])
                    live = {t for t in live if t in m}
        finally:
            done.set()

    q32 = q.astype(np.float32)

    def reader() -> None:
        searches = 0
        while not done.is_set() or searches < 20:
            searches += 1
            # float64 probes take the locked path; float32 ones the lock-free fast path (the
            # compiled search for "auto", which runs without the GIL while the writer writes).
            for res in [*m.search(np.stack([q, q])), *m.search(np.stack([q32, q32])),
                        *m.search(q32)]:
                assert res.person_id in ("anchor", "mover")
                assert owner[res.template_id] == res.person_id
                assert res.similarity == pytest.approx(
                    float(vectors[res.template_id] @ q), abs=TIE)
                if res.person_id == "mover":
                    assert res.second_person_id == "anchor"
                else:
                    assert res.second_similarity is not None and res.second_similarity < 0.6
                with count_lock:
                    seen[res.person_id] += 1
            for top in m.top_k(q, 3):
                for p in top:
                    assert owner[p.template_id] == p.person_id
                    assert p.similarity == pytest.approx(float(vectors[p.template_id] @ q),
                                                         abs=TIE)

    errors = run_threads([writer, reader, reader])
    assert not errors, errors[0]
    assert seen["anchor"] + seen["mover"] >= 40
    assert m.search(q)[0].person_id == "anchor"


def test_quantized_rows_are_within_their_residual() -> None:
    rng = np.random.default_rng(16)
    rows = unit(rng, 100)
    quant = quantize_rows(rows, 0.5 / 127)
    decoded = (quant.codes.astype(np.float64) - 128) * (0.5 / 127)
    assert np.linalg.norm(decoded - rows, axis=1).max() <= quant.max_residual + 1e-12
    assert quant.max_residual <= 0.5 / 127 / 2 * np.sqrt(DIM)


def _brute_top2(gallery: np.ndarray, pids: list[str], probe: np.ndarray) -> tuple[str, str]:
    scores = gallery.astype(np.float64) @ (probe / np.linalg.norm(probe)).astype(np.float64)
    best: dict[str, float] = {}
    for pid, value in zip(pids, scores.tolist(), strict=True):
        best[pid] = max(best.get(pid, -2.0), value)
    ranked = sorted(best, key=best.__getitem__, reverse=True)
    return ranked[0], ranked[1]


def test_fast_path_top2_matches_brute_force_and_general_path() -> None:
    """float32 probes take the lock-free fast path; persons with 9 templates force its
    whole-person hiding; answers must equal float64 brute force and the locked general path."""
    rng = np.random.default_rng(7)
    base = unit(rng, 60)
    gallery = np.repeat(base, 9, axis=0) + 0.05 * rng.standard_normal((540, DIM))
    gallery = (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).astype(np.float32)
    pids = [f"p{i // 9}" for i in range(540)]
    m = Matcher(DIM)
    m.load([f"t{i}" for i in range(540)], pids, gallery)
    probes = (3.0 * (base[:10] + 0.1 * rng.standard_normal((10, DIM)))).astype(np.float32)
    assert m._fast.search(probes) is not None  # the fast path really answers this
    one = [m.search(p)[0] for p in probes]  # 1-D probes
    batch = m.search(probes)
    general = m.search(probes.astype(np.float64))  # not float32: the general path
    for j, probe in enumerate(probes):
        first, second = _brute_top2(gallery, pids, probe)
        for res in (one[j], batch[j], general[j]):
            assert (res.person_id, res.second_person_id) == (first, second)
        assert one[j].similarity == pytest.approx(general[j].similarity, abs=1e-5)
        assert batch[j].second_similarity == pytest.approx(general[j].second_similarity,
                                                           abs=1e-5)
        assert one[j].decision == general[j].decision
        assert type(batch[j]) is MatchResult and batch[j] == general[j]._replace(
            similarity=batch[j].similarity, second_similarity=batch[j].second_similarity)
        assert batch[j].matched_person_id == general[j].matched_person_id


def test_fast_path_single_person_and_bad_float32_probes() -> None:
    m = Matcher(DIM)
    rng = np.random.default_rng(8)
    m.load(["a", "b"], ["p", "p"], unit(rng, 2))
    res = m.search(unit(rng, 1).astype(np.float32))[0]
    assert res.person_id == "p" and res.second_person_id is None
    assert res.second_similarity is None
    pair = unit(rng, 2).astype(np.float32)
    assert m._fast.search(pair) is not None  # the batch fast path answers a one-person gallery
    for res in m.search(pair):
        assert res.person_id == "p" and res.second_person_id is None
        assert res.second_similarity is None
    bad = unit(rng, 3).astype(np.float32)
    bad[1, 5] = np.nan
    with pytest.raises(VectorError, match="row 1"):
        m.search(bad)
    with pytest.raises(VectorError, match="zero"):
        m.search(np.zeros(DIM, dtype=np.float32))
    with pytest.raises(VectorError, match="infinity"):
        m.search(np.full((1, DIM), np.inf, dtype=np.float32))


@pytest.mark.parametrize(("native", "limit"), [(False, 16_384), (False, 64),
                                               (True, 131_072), (True, 64)])
def test_fast_path_stays_right_through_writes(monkeypatch: pytest.MonkeyPatch, native: bool,
                                              limit: int) -> None:
    """The fast path scans the table's third copy: grouped codes for the compiled search
    (``TemplateTable.grouped``), else the dimension-major fp32 rows (``columns``). It must
    follow every add, swap-removal and growth, and be dropped (the numpy scans serving
    instead) once the table outgrows its limit."""
    monkeypatch.setattr("edge.matching.table.COLUMNS_MAX_ROWS", limit)
    monkeypatch.setattr("edge.matching.grouped.GROUPED_MAX_ROWS", limit)
    rng = np.random.default_rng(12)
    m = Matcher(DIM, capacity=16, native=native)
    assert (m._native is not None) == native
    model: dict[str, tuple[str, np.ndarray]] = {}
    for step in random_writes(m, model, rng, steps=300, persons=40, remove_share=0.3):
        if step % 30 != 29:
            continue
        table = m._table
        third = table.grouped if native else table.columns
        if table.capacity > limit:
            assert third is None and table.native is None
        elif native:
            assert table.grouped is not None and table.columns is None
            assert np.array_equal(table.grouped.row_codes(table.size), table.codes)
            numbers = table.grouped.person[:table.size].tolist()
            # One number per person, different persons different numbers.
            assert len(set(zip(numbers, table.person_of_row, strict=True))) == len(
                set(numbers)) == len(set(table.person_of_row))
        else:
            assert table.columns is not None and table.grouped is None
            assert np.array_equal(table.columns[:, :table.size], table.vectors.T)
        tids = list(model)
        gallery = np.stack([model[t][1] for t in tids])
        persons = [model[t][0] for t in tids]
        probes = np.concatenate([gallery[:4] + 0.03, unit(rng, 4)]).astype(np.float32)
        assert m._fast.search(probes) is not None
        assert m._fast.search(probes[0]) is not None
        for res, probe in zip(m.search(probes), probes, strict=True):
            first, second = _brute_top2(gallery, persons, probe)
            assert (res.person_id, res.second_person_id) == (first, second)
            one = m.search(probe)[0]
            assert (one.person_id, one.second_person_id) == (first, second)
    assert (m._table.native is None) == (not native or m.capacity > limit)
