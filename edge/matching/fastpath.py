"""``Matcher.search`` for the common small case, without the lock or the general machinery.

Why: below ~30k templates the fp32 scan takes microseconds (8 us at 1k), and the general path's
fixed cost (validating and normalising in float64, the readers/writer lock, peeling persons
through Python lists, ``PersonScore`` then ``MatchResult``) doubled it, making the matcher slower
than FAISS flat. Here, for a float32 array of one probe or a small batch (up to 16):

- Galleries up to ``grouped.GROUPED_MAX_ROWS`` go to the compiled int8 search (``native``),
  which validates, normalises, scans, re-scores and ranks persons in one call without the GIL
  (``_native``). The rest of this list is the numpy path, for when that library is missing.
- Validation is one dot product per probe: a finite sum of squares above a tiny floor means
  every element is finite and the vector is not zero; anything else (NaN, inf, zero, squares
  that overflow, other dtypes or shapes) goes to the general path, which names the problem.
- Normalisation is deferred: the raw probe is scanned and only the two reported scores are
  divided by its norm (a positive scale keeps the order).
- Person-level top-2 stays exact: the best row, then hide rows one by one until the best
  remaining row belongs to another person (a person has only a few templates; past
  ``_PEEL_ROWS`` their rows are hidden at once).
- No lock: an optimistic read. Writers bump ``Matcher.version`` before and after a change (odd
  while one is under way). A read that starts on an odd version, ends on another version than it
  started with, or raises, is discarded and the locked path answers instead. This relies on the
  GIL making the counter's read and the writer's bumps ordered with the scan; on a free-threaded
  interpreter the fast path is off.

Returns ``None`` whenever it declines; the caller then takes the general path.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.matching.native import MAX_PROBES, Buffers, Gallery, NativeSearch
from edge.matching.results import MatchResult

if TYPE_CHECKING:
    from edge.matching.matcher import Matcher
    from edge.matching.table import TemplateTable

#: Below this squared norm (or at/above ``_MAX_SQ``) the general path scales the probe first.
_MIN_SQ = 1e-30
_MAX_SQ = 1e30
#: Probes per batch served here (what the compiled search's buffers hold); larger batches
#: amortise the general path's fixed cost.
MAX_BATCH = MAX_PROBES
#: Rows hidden one at a time before hiding the whole person at once.
_PEEL_ROWS = 4
#: One probe: up to this many rows, one ``dot`` (OpenBLAS splits it over both cores: measured
#: 44 us instead of 101 us in 1024-row blocks at 10k rows, FAISS flat 84 us). The price: on a
#: busy box the split waits for the other core, so p99 grows. Beyond it, 1024-row blocks on the
#: calling thread (the int8 scan takes over from ``INT8_MIN_ROWS`` in ``auto`` anyway).
_ONE_PRODUCT_ROWS = 16_384
_BLOCK_ROWS = 1024
#: A batch up to this many rows x probes is one product (OpenBLAS may use both cores: at 1k x 8
#: that halves the time); beyond it, blocks on the calling thread.
_ONE_PRODUCT_WORK = 160_000

#: Column indices per batch size, built once (a search allocates nothing it can reuse).
_COLS = [np.arange(n) for n in range(MAX_BATCH + 1)]

def _squares(probes: np.ndarray) -> np.ndarray:
    """Each probe's squared norm."""
    return np.einsum("ij,ij->i", probes, probes)


if hasattr(np, "vecdot"):  # numpy 2: half einsum's ~2 us for a batch of 8
    def _squares(probes: np.ndarray) -> np.ndarray:
        """Each probe's squared norm."""
        return np.vecdot(probes, probes)


_GIL = bool(getattr(sys, "_is_gil_enabled", lambda: True)())
_NEG_INF = -np.inf


class FastSearch:
    def __init__(self, matcher: Matcher, max_rows_one: float, max_rows_batch: float,
                 native: NativeSearch | None = None) -> None:
        self._m = matcher
        self._max_one = max_rows_one
        self._max_batch = max_rows_batch
        self._lib = native
        self._local = threading.local()
        self._offset_cache: list[tuple[int, np.ndarray] | None] = [None] * (MAX_BATCH + 1)

    def _offsets(self, n: int, size: int) -> np.ndarray:
        """Flat index of each probe's first score in an ``(n, size)`` matrix (kept per ``n``
        while the gallery size stays the same; a stale entry is merely rebuilt)."""
        cached = self._offset_cache[n]
        if cached is not None and cached[0] == size:
            return cached[1]
        offsets = _COLS[n] * size
        self._offset_cache[n] = (size, offsets)
        return offsets

    def _scratch(self, size: int) -> np.ndarray:
        """A per-thread score buffer, so a search allocates nothing for its scores."""
        buf: np.ndarray | None = getattr(self._local, "buf", None)
        if buf is None or buf.shape[0] < size:
            buf = np.empty(max(size, 2 * (buf.shape[0] if buf is not None else 0)),
                           dtype=np.float32)
            self._local.buf = buf
        return buf[:size]

    def search(self, probes: Any) -> list[MatchResult] | None:
        if not _GIL or type(probes) is not np.ndarray or probes.dtype != np.float32:
            return None
        m = self._m
        dim = m._dim
        shape = probes.shape
        if len(shape) == 1:
            if shape[0] != dim:
                return None
            return self._one(probes)
        if len(shape) != 2 or shape[1] != dim:
            return None
        if shape[0] == 1:
            return self._one(probes[0])
        if 1 < shape[0] <= MAX_BATCH:
            return self._batch(probes)
        return None

    def _one(self, q: np.ndarray) -> list[MatchResult] | None:
        m = self._m
        version = m.version
        if version & 1:
            return None
        table = m._table
        if table.native is not None and self._lib is not None:
            return self._native(table, table.native, q, 1, version)
        sq = float(np.dot(q, q))
        if not _MIN_SQ < sq < _MAX_SQ:  # also false for NaN
            return None
        try:
            size = table.size
            if size == 0 or size >= self._max_one:
                return None
            s = self._scratch(size)
            columns = table.columns
            if columns is not None:  # measured 6.3 vs 7.3 us at 1k rows, 37 vs 41 at 10k
                np.matmul(q, columns[:, :size], out=s)
            elif size <= _ONE_PRODUCT_ROWS:
                np.dot(table.vectors, q, out=s)
            else:
                vectors = table.vectors
                for lo in range(0, size, _BLOCK_ROWS):
                    np.dot(vectors[lo:lo + _BLOCK_ROWS], q, out=s[lo:lo + _BLOCK_ROWS])
            person_of_row = table.person_of_row
            best = int(s.argmax())
            best_value = float(s[best])
            person = person_of_row[best]
            # The usual case inline: the next best row belongs to someone else.
            s[best] = _NEG_INF
            second = int(s.argmax())
            second_value = float(s[second])
            if second_value == _NEG_INF:
                second = -1
            elif person_of_row[second] == person:
                second, second_value = _runner_up(s, person, second, person_of_row,
                                                  table.rows_of_person)
            template = table.template_ids[best]
            second_person = person_of_row[second] if second >= 0 else None
        except Exception:  # a write moved rows under us: the locked path decides
            return None
        if m.version != version:
            return None
        inv = 1.0 / math.sqrt(sq)
        value = best_value * inv
        config = m._config
        if second_person is None:
            return [_new_result((person, template, value, None, None,
                                 "match" if value >= config.threshold else "unknown"))]
        second_value *= inv
        ok = value >= config.threshold and value - second_value >= config.margin
        return [_new_result((person, template, value, second_person, second_value,
                             "match" if ok else "unknown"))]

    def _batch(self, probes: np.ndarray) -> list[MatchResult] | None:
        m = self._m
        n = probes.shape[0]
        version = m.version
        if version & 1:
            return None
        table = m._table
        if table.native is not None and self._lib is not None:
            return self._native(table, table.native, probes, n, version)
        sq = _squares(probes).tolist()
        # Squares are >= 0, so the sum bounds each; a NaN makes the sum NaN and this false.
        if not (min(sq) > _MIN_SQ and sum(sq) < _MAX_SQ):
            return None
        try:
            size = table.size
            if size == 0 or size >= self._max_batch:
                return None
            work = size * n
            columns = table.columns
            if columns is not None:
                # Probe-major scores straight from the dimension-major copy (``table``): no
                # transposing copy, and a faster product shape (1k x 8: 41 vs 52-72 us a search).
                scores = self._scratch(work).reshape(n, size)
                np.matmul(probes, columns[:, :size], out=scores)
            else:
                vectors = table.vectors
                buf = self._scratch(2 * work)
                product = buf[:work].reshape(size, n)
                probes_t = probes.T
                if work <= _ONE_PRODUCT_WORK:
                    np.dot(vectors, probes_t, out=product)
                else:
                    block = max(16, _BLOCK_ROWS // n)
                    for lo in range(0, size, block):
                        np.dot(vectors[lo:lo + block], probes_t, out=product[lo:lo + block])
                # One transposing copy, then every argmax runs along a contiguous row: two
                # strided argmaxes over (rows, n) cost more (measured 64 vs 41 us at 10k).
                scores = buf[work:].reshape(n, size)
                np.copyto(scores, product.T)
            # Best and next-best row of each probe, read and hidden through flat indices
            # (1-D indexing: ~1 us less than scores[cols, best] three times at 1k x 8).
            cols = _COLS[n]
            offsets = self._offsets(n, size)
            flat = scores.reshape(-1)
            best = scores.argmax(axis=1)
            at = best + offsets
            best_values = flat[at].tolist()
            flat[at] = _NEG_INF
            seconds = scores.argmax(axis=1)
            second_values = flat[seconds + offsets].tolist()
            person_of_row, template_ids = table.person_of_row, table.template_ids
            config = m._config
            threshold, margin = config.threshold, config.margin
            # One pass builds the answers: at 1k rows the whole search is ~40 us and a second
            # loop over intermediate tuples cost 6 of them.
            out = []
            append = out.append
            for j, row, second in zip(cols.tolist(), best.tolist(), seconds.tolist(),
                                      strict=True):
                person = person_of_row[row]
                scale = 1.0 / math.sqrt(sq[j])
                value = best_values[j] * scale
                second_value = second_values[j]
                if person_of_row[second] == person:  # same person: peel this probe's row
                    second, second_value = _runner_up(scores[j], person, second,
                                                      person_of_row, table.rows_of_person)
                if second_value == _NEG_INF:  # every row is this person's
                    append(_new_result(
                        (person, template_ids[row], value, None, None,
                         "match" if value >= threshold else "unknown")))
                else:
                    second_value *= scale
                    ok = value >= threshold and value - second_value >= margin
                    append(_new_result(
                        (person, template_ids[row], value, person_of_row[second],
                         second_value, "match" if ok else "unknown")))
        except Exception:  # a write moved rows under us: the locked path decides
            return None
        if m.version != version:
            return None
        return out


    def _buffers(self, gallery: Gallery) -> Buffers:
        """This thread's memory for the compiled search (grown with the gallery)."""
        buf: Buffers | None = getattr(self._local, "native", None)
        if buf is None or buf.stride < gallery.stride:
            stride = max(gallery.stride, 2 * buf.stride if buf is not None else 0)
            buf = self._local.native = Buffers(stride, gallery.dim)
        return buf

    def _native(self, table: TemplateTable, gallery: Gallery, probes: np.ndarray, n: int,
                version: int) -> list[MatchResult] | None:
        """The compiled int8 search (``native``): exact cosines of the normalised probes.

        The library checks the probes itself (a zero, tiny, huge or non-finite one sends the
        search to the general path, which names the problem). It runs without the GIL, so a
        writer may change the rows meanwhile: the arrays it reads stay alive (``gallery``
        holds them) and the version check below discards such an answer, as for numpy.
        """
        m = self._m
        size = min(table.size, gallery.capacity)  # see Gallery.capacity
        if size == 0:
            return None
        buf = self._buffers(gallery)
        buf.probes[:n] = probes
        lib = self._lib
        assert lib is not None
        if lib.call(gallery.address, size, table.step, table.max_code_norm, table.max_residual,
                    n, lib.level, buf.address) != 0 or m.version != version:
            return None
        person_of_row, template_ids = table.person_of_row, table.template_ids
        config = m._config
        threshold, margin = config.threshold, config.margin
        out = []
        append = out.append
        try:
            for best, value, second, second_value in buf.out[:n].tolist():
                row = int(best)
                person = person_of_row[row]
                if second < 0:  # every row is this person's
                    append(_new_result((person, template_ids[row], value, None, None,
                                        "match" if value >= threshold else "unknown")))
                else:
                    ok = value >= threshold and value - second_value >= margin
                    append(_new_result((person, template_ids[row], value,
                                        person_of_row[int(second)], second_value,
                                        "match" if ok else "unknown")))
        except Exception:  # a write moved rows under us: the locked path decides
            return None
        if m.version != version:
            return None
        return out

def _new_result(fields: tuple[Any, ...]) -> MatchResult:
    """``MatchResult(*fields)`` without the NamedTuple's Python-level ``__new__`` (0.3 us a
    probe, a tenth of a batch's selection time at 1k rows).

    The decisions built around it inline ``results.decide``; the rule must stay the same (the
    tests compare the fast path with the general one).
    """
    return tuple.__new__(MatchResult, fields)


def _runner_up(s: np.ndarray, person: str, row: int, person_of_row: list[str],
               rows_of_person: dict[str, list[int]]) -> tuple[int, float]:
    """Best row of another person than ``person`` (whose row ``row`` is best); ``s`` is scratch.

    Returns ``(-1, -inf)`` when every row belongs to ``person``.
    """
    for _ in range(_PEEL_ROWS):
        s[row] = _NEG_INF
        row = int(s.argmax())
        value = float(s[row])
        if value == _NEG_INF:
            return -1, value
        if person_of_row[row] != person:
            return row, value
    s[rows_of_person[person]] = _NEG_INF
    row = int(s.argmax())
    value = float(s[row])
    return (-1, value) if value == _NEG_INF else (row, value)
