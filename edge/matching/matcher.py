"""The in-memory 1:N matcher: every template in one matrix, a probe batch in one product.

Scan, then re-rank: galleries are scanned through uint8 codes (a quarter of the bytes of fp32;
up to 131k templates by the compiled search, ``native``, beyond by onnxruntime's kernels), and
the few rows that can still be the answer are re-scored exactly from the fp32 rows, with a
margin taken from a proven error bound (``quantize``), so the top-1 equals exact brute force,
not "nearly always". Without the compiled library small galleries are scanned in fp32.

Thread safety: a readers/writer lock (``rwlock``). Searches share it, so several run at once;
``load``/``add``/``remove_*`` take it alone, so a search sees the matrix either before or after a
write, never halfway. ``configure`` swaps a frozen config object, which is atomic.

Small galleries have a lock-free fast path (``fastpath``): at 1k templates the scan takes ~8 us
and the lock, validation and ranking of the general path cost as much again, which made the
matcher slower than FAISS flat. The fast path reads optimistically (a sequence counter bumped by
every writer before and after its change, as in a seqlock) and hands the probe to the locked
path whenever a write overlapped, the input is not a plain float32 array, or anything is odd.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from edge.config import MatchingConfig
from edge.cpus import available_cpus
from edge.matching.errors import MatcherError
from edge.matching.fastpath import MAX_BATCH, FastSearch
from edge.matching.grouped import GROUPED_MAX_ROWS
from edge.matching.kernel import PARALLEL_MIN_WORK, Int8Scanner, get_scanner
from edge.matching.native import native_search
from edge.matching.packed import PackedScan, Repacker, packed_support, transposed_codes
from edge.matching.quantize import error_bounds, quantize_probes
from edge.matching.results import MatchResult, PersonScore, decide
from edge.matching.rwlock import RWLock
from edge.matching.table import Layout, TemplateTable
from edge.matching.topk import exact_top, exact_top_one, reranked_top
from edge.matching.validate import check_id, check_ids, unit_rows

log = logging.getLogger(__name__)

Strategy = Literal["auto", "exact", "int8"]
#: Measured on a 2-core x86, both scans on one thread: below this many templates one probe is
#: scanned faster in fp32 (in cache, about 8 ns a row) than through the int8 kernel (a fixed
#: ~25 us per call, and MLAS computes 16 probe columns whether there is one probe or 16).
INT8_MIN_ROWS = 32_768
#: A batch shares that fixed cost and the 16 columns (while fp32 work grows with every probe),
#: so it switches earlier: measured with the fast path's fp32 batch (both cores), a batch of 8
#: takes 0.30 ms in fp32 vs 0.40 ms in int8 at 10k templates, 0.58 vs 0.46 ms at 16k.
BATCH_DIVISOR = 3
#: Seconds without a write before the packed copy of the gallery is rebuilt (``packed``).
PACK_DELAY = 1.0
#: From this many templates a packed copy is kept and one probe is scanned through it; a batch
#: from twice as many. Measured interleaved on a 2-core x86 (p50, packed vs plain int8 scan):
#: one probe 1.37 vs 1.12 ms at 100k, 2.82 vs 4.10 at 250k, 7.8 vs 13.0 at 1M; a batch of 8
#: 5.28 vs 4.81 ms at 250k, 8.87 vs 12.1 at 500k, 16.0 vs 21.2 at 1M.
PACK_MIN_ROWS = 131_072


def _exact_scores(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``(n, rows)`` fp32 scores computed on this thread only, in blocks.

    Not one ``vectors @ queries.T``: OpenBLAS splits a large product across threads, and on a
    busy 2-core box the split waits for the other core (measured: p99 20 ms instead of 0.2 ms
    at 4k rows). Blocks of at most ``_BLOCK_WORK`` rows x probes stay on the calling thread
    and in cache.
    """
    n, size = queries.shape[0], vectors.shape[0]
    if n == 1:
        if size <= _BLOCK_WORK:
            return (vectors @ queries[0])[None, :]
        row = np.empty(size, dtype=np.float32)
        for lo in range(0, size, _BLOCK_WORK):
            np.dot(vectors[lo:lo + _BLOCK_WORK], queries[0], out=row[lo:lo + _BLOCK_WORK])
        return row[None, :]
    block = max(16, _BLOCK_WORK // n)
    out = np.empty((size, n), dtype=np.float32)
    probes_t = queries.T
    for lo in range(0, size, block):
        np.dot(vectors[lo:lo + block], probes_t, out=out[lo:lo + block])
    return np.ascontiguousarray(out.T)


_BLOCK_WORK = 1024


def _check_config(config: MatchingConfig) -> MatchingConfig:
    if not isinstance(config, MatchingConfig):
        raise MatcherError(f"matching config: expected MatchingConfig, got {type(config).__name__}")
    if not -1.0 <= config.threshold <= 1.0:
        raise MatcherError(f"matching threshold {config.threshold!r} must be between -1 and 1")
    if not 0.0 <= config.margin <= 1.0:
        raise MatcherError(f"matching margin {config.margin!r} must be between 0 and 1")
    return config


class Matcher:
    """Templates of consented persons, searchable by cosine similarity.

    ``strategy`` is ``auto`` (int8 scan from ``int8_min_rows`` templates on, for a batch from a
    third of that), ``exact`` (always fp32) or ``int8`` (always int8; an error if this
    onnxruntime cannot run it). ``threads`` bounds the int8 kernel's threads for large scans
    (0: the CPUs this process may use); small scans always run on the calling thread.
    ``packed`` keeps a packed copy of a gallery of ``pack_min_rows`` templates or more
    (``packed.py``), rebuilt in the background ``pack_delay`` seconds after the last write.
    ``native`` (with ``auto``) serves float32 probes of galleries up to ``GROUPED_MAX_ROWS``
    through the compiled int8 search (``native.py``) when it is built and passes its start-up
    check; otherwise those searches stay on numpy.
    """

    def __init__(self, dim: int = 128, config: MatchingConfig | None = None, *,
                 strategy: Strategy = "auto", int8_min_rows: int = INT8_MIN_ROWS,
                 threads: int = 0, capacity: int = 1024, packed: bool = True,
                 pack_delay: float = PACK_DELAY, pack_min_rows: int = PACK_MIN_ROWS,
                 native: bool = True) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise MatcherError(f"matcher dim must be a positive integer, got {dim!r}")
        if strategy not in ("auto", "exact", "int8"):
            raise MatcherError(f"matcher strategy {strategy!r} is not auto, exact or int8")
        self._dim = dim
        self._config = _check_config(config if config is not None else MatchingConfig())
        self._strategy: Strategy = strategy
        self._int8_min_rows = int8_min_rows
        self._threads = threads if threads > 0 else available_cpus()
        self._lock = RWLock()
        # The compiled int8 search serves the fast path of tables up to GROUPED_MAX_ROWS.
        self._native = native_search(dim) if native and strategy == "auto" else None
        self._layout: Layout = "grouped" if self._native is not None else "columns"
        self._table = TemplateTable(dim, capacity, layout=self._layout)
        # Even while no write is under way; odd during one (see ``fastpath``).
        self.version = 0
        if strategy == "exact":
            fp32_one = fp32_batch = float("inf")
        elif strategy == "int8":
            fp32_one = fp32_batch = 0.0
        else:
            fp32_one, fp32_batch = int8_min_rows, int8_min_rows // BATCH_DIVISOR
        self._fast = FastSearch(self, fp32_one, fp32_batch, self._native)
        self._scanner: Int8Scanner | None = None
        # (matcher version it was built from, the scan): used only while that version is current.
        self._packed: tuple[int, PackedScan] | None = None
        self._pack_min_rows = pack_min_rows
        self._repacker = (Repacker(self._build_pack, pack_delay)
                          if packed and strategy != "exact" else None)
        if strategy == "int8":
            self._scanner = get_scanner(dim, self._threads)
            if self._scanner is None:
                raise MatcherError("int8 matching is not available with this onnxruntime "
                                   "(see the log for why); use strategy 'auto' or 'exact'")

    # -- configuration -------------------------------------------------------------------

    @property
    def config(self) -> MatchingConfig:
        return self._config

    def configure(self, config: MatchingConfig) -> None:
        """New threshold/margin (e.g. on SIGHUP); the next search uses them."""
        self._config = _check_config(config)
        log.info("matching thresholds changed", extra={
            "event": "matcher_configured", "threshold": config.threshold,
            "margin": config.margin})

    # -- state -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return self._table.size

    def __contains__(self, template_id: object) -> bool:
        with self._lock.read():
            return template_id in self._table.row_of

    @property
    def person_count(self) -> int:
        with self._lock.read():
            return len(self._table.rows_of_person)

    @property
    def capacity(self) -> int:
        return self._table.capacity

    def memory_bytes(self) -> int:
        """Bytes held by the matrices (at capacity, both copies, and the packed copy if any);
        ids come on top."""
        packed = self._packed
        return self._table.nbytes() + (packed[1].nbytes() if packed is not None else 0)

    # -- the packed copy -------------------------------------------------------------------

    def _wants_pack(self, rows: int) -> bool:
        return (self._repacker is not None and rows >= self._pack_min_rows
                and self._scanner_for(rows, 1) is not None)

    def _request_pack(self, now: bool = False) -> None:
        repacker = self._repacker  # set to None from the repacking thread if unsupported
        if repacker is not None and (self._packed is not None
                                     or self._wants_pack(self._table.size)):
            repacker.request(now)

    def _build_pack(self) -> bool:
        """Pack the current rows; False when a write made the result stale before it landed."""
        with self._lock.read():
            version, table = self.version, self._table
            packed = self._packed
            if packed is not None and packed[0] == version:
                return True
            usable, keep_source = packed_support()
            if not usable:
                self._repacker = None  # the plain scan serves; scan_kind says so
            if not self._wants_pack(table.size):
                self._packed = None
                return True
            start = time.perf_counter()
            rows = table.size
            # The transposed copy is made while writers wait (~0.1 s at 1M rows); the slow
            # part, packing, runs after the lock is released and without the GIL.
            source = transposed_codes(table.codes)
        threads = self._threads if rows >= PARALLEL_MIN_WORK else 1
        scan = PackedScan(source, threads, keep_source=keep_source)
        del source
        if self.version != version:
            return False
        self._packed = (version, scan)
        log.info("matcher gallery packed", extra={
            "event": "matcher_packed", "templates": rows,
            "seconds": round(time.perf_counter() - start, 3)})
        return True

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until background work (the packed copy) matches the current rows.

        Searches are exact and current without it; this is for benchmarks and tests that
        want to measure or exercise the steady state. Returns False on timeout.
        """
        if self._repacker is None:
            return True
        self._request_pack(now=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock.read():
                packed = self._packed
                if not self._wants_pack(self._table.size) or (
                        packed is not None and packed[0] == self.version):
                    return True
            time.sleep(0.005)
        return False

    def scan_kind(self, rows: int | None = None, probes: int = 1
                  ) -> Literal["int8-native", "int8-packed", "int8", "fp32"]:
        """Which scan a search of ``probes`` float32 probes (up to 16) over ``rows`` templates
        uses once the gallery has settled (``int8-packed`` right after a write is served by
        ``int8``)."""
        rows = len(self) if rows is None else rows
        if self._native is not None and rows <= GROUPED_MAX_ROWS and probes <= MAX_BATCH:
            return "int8-native"
        if not self._scanner_for(rows, probes):
            return "fp32"
        return "int8-packed" if self._packs(rows, probes) else "int8"

    def _packs(self, rows: int, probes: int) -> bool:
        """Would a settled gallery of ``rows`` serve ``probes`` probes from the packed copy?"""
        least = self._pack_min_rows if probes == 1 else 2 * self._pack_min_rows
        return self._repacker is not None and rows >= least

    def _scanner_for(self, rows: int, probes: int) -> Int8Scanner | None:
        if self._strategy == "auto":
            least = self._int8_min_rows if probes == 1 else self._int8_min_rows // BATCH_DIVISOR
            if rows < least:
                return None
        elif self._strategy == "exact":
            return None
        if self._scanner is None:
            self._scanner = get_scanner(self._dim, self._threads)
        return self._scanner

    # -- writes ----------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[TemplateTable]:
        """The write lock, with ``version`` odd for the whole write (the fast path's seqlock:
        a read that overlaps it sees the version change and is discarded), even if it fails."""
        with self._lock.write():
            self.version += 1
            try:
                yield self._table
            finally:
                self.version += 1

    def load(self, template_ids: Any, person_ids: Any, vectors: Any) -> None:
        """Replace everything with these templates (start-up, or a full gallery import)."""
        start = time.perf_counter()
        rows = unit_rows(vectors, self._dim, "templates", allow_1d=False)
        tids = check_ids(list(template_ids), "template id", rows.shape[0])
        pids = check_ids(list(person_ids), "person id", rows.shape[0])
        table = TemplateTable.bulk(self._dim, tids, pids, rows, layout=self._layout)
        with self._writing():
            self._table = table
            self._packed = None
        self._request_pack(now=True)
        log.info("matcher loaded", extra={
            "event": "matcher_loaded", "templates": table.size,
            "persons": len(table.rows_of_person), "scan": self.scan_kind(table.size),
            "seconds": round(time.perf_counter() - start, 3)})

    def add(self, template_id: str, person_id: str, vector: Any) -> None:
        """Add one template; visible to the next search."""
        check_id(template_id, "template id")
        check_id(person_id, "person id")
        row = unit_rows(vector, self._dim, "template")
        if row.shape[0] != 1:
            raise MatcherError(f"template: expected one vector, got {row.shape[0]}")
        with self._writing() as table:
            table.add(template_id, person_id, row[0])
        self._request_pack()

    def remove_template(self, template_id: str) -> None:
        """Remove one template; an unknown id is an error (the caller's view is out of sync)."""
        check_id(template_id, "template id")
        with self._writing() as table:
            table.remove(template_id)
        self._request_pack()

    def remove_person(self, person_id: str) -> int:
        """Remove every template of a person; returns how many there were (0 is fine)."""
        check_id(person_id, "person id")
        with self._writing() as table:
            rows = table.rows_of_person.get(person_id, [])
            doomed = [table.template_ids[r] for r in rows]
            for tid in doomed:
                table.remove(tid)
        if doomed:
            self._request_pack()
        return len(doomed)

    # -- reads -----------------------------------------------------------------------------

    def search(self, probes: Any) -> list[MatchResult]:
        """Best person, runner-up and open-set decision for each probe (rows of ``probes``)."""
        fast = self._fast.search(probes)
        if fast is not None:
            return fast
        config = self._config
        return [decide(top[0] if top else None, top[1] if len(top) > 1 else None, config)
                for top in self._top(probes, 2)]

    def top_k(self, probes: Any, k: int) -> list[list[PersonScore]]:
        """The exact ``k`` best persons per probe, best first (fewer if the gallery has fewer)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise MatcherError(f"top_k: k must be a positive integer, got {k!r}")
        return self._top(probes, k)

    def _top(self, probes: Any, k: int) -> list[list[PersonScore]]:
        queries = unit_rows(probes, self._dim, "probes")
        n = queries.shape[0]
        if n == 0:
            return []
        lock = self._lock
        lock.acquire_read()
        try:
            table = self._table
            if table.size == 0:
                return [[] for _ in range(n)]
            vectors = table.vectors
            person_of_row, template_ids = table.person_of_row, table.template_ids
            rows_of_person = table.rows_of_person
            scanner = self._scanner_for(table.size, n)
            if scanner is None:
                # fp32 scores are the exact ones: no bound, no re-rank.
                scores = _exact_scores(vectors, queries)
                if n == 1:
                    return [exact_top_one(scores[0], k, person_of_row, rows_of_person,
                                          template_ids)]
                return exact_top(scores, k, person_of_row, rows_of_person, template_ids)
            quant = quantize_probes(queries)
            bounds = error_bounds(table.step, table.max_code_norm, table.max_residual,
                                  quant.residual_norms)
            packed = self._packed
            if (packed is not None and packed[0] == self.version  # stable under the read lock
                    and self._packs(table.size, n)):
                # Scores in units of each probe's step: the bounds follow (a positive scale
                # per probe keeps every comparison the re-ranking makes).
                approx = packed[1].scores(quant.codes, table.step)
                bounds = bounds / quant.steps
            else:
                # Writes (and loads) schedule the rebuild; a search never postpones it.
                approx = scanner.scores(table.codes, quant.codes, table.step, quant.steps)
            return reranked_top(approx, bounds, k, vectors, queries.astype(np.float64),
                                person_of_row, rows_of_person, template_ids)
        finally:
            lock.release_read()
