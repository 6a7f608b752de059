"""The template rows: contiguous matrices that change in place.

Two copies of every template, row-aligned: fp32 (exact, for re-ranking and the small-gallery
scan) and uint8 (the compact copy that large scans read). Small tables keep a third for their
fast scan: with the compiled int8 search, grouped codes (``grouped``, ``layout="grouped"``),
else the fp32 rows dimension-major (``columns``), which numpy scans. Capacity doubles when full,
so an enrollment costs O(1) amortised; a deletion moves the last row into the hole (swap with
last), so rows stay dense and a scan never reads a tombstone. Not thread-safe by itself: the
matcher holds a readers/writer lock around it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from edge.matching.errors import TemplateIdError
from edge.matching.grouped import GroupedCodes
from edge.matching.native import Gallery
from edge.matching.quantize import DEFAULT_RANGE, GALLERY_LEVELS, gallery_step, quantize_rows

MIN_CAPACITY = 16
#: Up to this many rows (capacity) the table also keeps its fp32 rows dimension-major: past a
#: third of ``matcher.INT8_MIN_ROWS`` batches are scanned in int8 anyway, and 16k rows cost 8 MB.
COLUMNS_MAX_ROWS = 16_384


Layout = Literal["columns", "grouped"]


class TemplateTable:
    def __init__(self, dim: int, capacity: int = 1024, step: float | None = None,
                 layout: Layout = "columns") -> None:
        capacity = max(int(capacity), MIN_CAPACITY)
        self.dim = dim
        self.size = 0
        self.step = step if step is not None else float(np.float32(DEFAULT_RANGE
                                                                     / GALLERY_LEVELS))
        # Running maxima for the error bound; deletions never lower them (still a valid bound).
        self.max_residual = 0.0
        self.max_code_norm = 0.0
        self._f32 = np.empty((capacity, dim), dtype=np.float32)
        self._codes = np.empty((capacity, dim), dtype=np.uint8)
        # The small tables' third copy: one of these two, by layout.
        self.columns = _new_columns(dim, capacity) if layout == "columns" else None
        self.grouped = GroupedCodes.create(dim, capacity) if layout == "grouped" else None
        #: What the compiled search reads, captured together (None without the grouped copy).
        self.native: Gallery | None = None
        self._refresh_native()
        self.template_ids: list[str] = []
        self.person_of_row: list[str] = []
        self.row_of: dict[str, int] = {}
        self.rows_of_person: dict[str, list[int]] = {}

    @classmethod
    def bulk(cls, dim: int, template_ids: list[str], person_ids: list[str],
             vectors: np.ndarray, layout: Layout = "columns") -> TemplateTable:
        """Build a table from unit rows in one pass (the start-up load); adopts ``vectors``."""
        n = len(template_ids)
        row_of = dict(zip(template_ids, range(n), strict=True))
        if len(row_of) != n:
            seen: set[str] = set()
            for tid in template_ids:
                if tid in seen:
                    raise TemplateIdError(f"template id {tid!r} appears more than once")
                seen.add(tid)
        adopt = n >= MIN_CAPACITY and vectors.dtype == np.float32 and vectors.flags.c_contiguous
        # Adopting, the small placeholder matrices are replaced at once; else they fit n.
        table = cls(dim, capacity=0 if adopt else n, step=gallery_step(vectors), layout=layout)
        quant = quantize_rows(vectors, table.step)
        if adopt:
            # The caller's fresh array becomes the matrix: no second 512 MB copy at 1M rows.
            table._f32, table._codes = vectors, quant.codes
            table.columns = _new_columns(dim, n) if layout == "columns" else None
            table.grouped = GroupedCodes.create(dim, n) if layout == "grouped" else None
        else:
            table._f32[:n] = vectors
            table._codes[:n] = quant.codes
        if table.columns is not None:
            table.columns[:, :n] = vectors.T
        if table.grouped is not None:
            table.grouped.fill(quant.codes, person_ids)
        table._refresh_native()
        table.max_residual = quant.max_residual
        table.max_code_norm = quant.max_code_norm
        table.size = n
        table.template_ids = list(template_ids)
        table.person_of_row = list(person_ids)
        table.row_of = row_of
        for row, pid in enumerate(person_ids):
            rows = table.rows_of_person.get(pid)
            if rows is None:
                table.rows_of_person[pid] = [row]
            else:
                rows.append(row)
        return table

    @property
    def capacity(self) -> int:
        return self._f32.shape[0]

    @property
    def vectors(self) -> np.ndarray:
        """The live fp32 rows (a view: valid until the next write)."""
        return self._f32[:self.size]

    @property
    def codes(self) -> np.ndarray:
        """The live uint8 rows, C-contiguous (a view: valid until the next write)."""
        return self._codes[:self.size]

    def nbytes(self) -> int:
        return (self._f32.nbytes + self._codes.nbytes + columns_nbytes(self.columns)
                + (self.grouped.nbytes() if self.grouped is not None else 0))

    def _refresh_native(self) -> None:
        """After any reallocation: a fresh snapshot for the compiled search (or none)."""
        grouped = self.grouped
        self.native = grouped.gallery(self._f32) if grouped is not None else None

    def _grow(self) -> None:
        new_cap = self.capacity * 2
        f32 = np.empty((new_cap, self.dim), dtype=np.float32)
        codes = np.empty((new_cap, self.dim), dtype=np.uint8)
        f32[:self.size] = self._f32[:self.size]
        codes[:self.size] = self._codes[:self.size]
        self._f32, self._codes = f32, codes
        if self.columns is not None:
            columns = _new_columns(self.dim, new_cap)
            if columns is not None:
                columns[:, :self.size] = self.columns[:, :self.size]
            self.columns = columns
        if self.grouped is not None:
            self.grouped = self.grouped.grown(new_cap)
        self._refresh_native()

    def add(self, template_id: str, person_id: str, vector: np.ndarray) -> None:
        if template_id in self.row_of:
            raise TemplateIdError(f"template id {template_id!r} is already in the matcher")
        quant = quantize_rows(vector.reshape(1, self.dim), self.step)
        if self.size == self.capacity:
            self._grow()
        row = self.size
        self._f32[row] = vector
        self._codes[row] = quant.codes[0]
        if self.columns is not None:
            self.columns[:, row] = vector
        if self.grouped is not None:
            self.grouped.set_row(row, quant.codes[0], person_id, self.person_of_row)
        self.max_residual = max(self.max_residual, quant.max_residual)
        self.max_code_norm = max(self.max_code_norm, quant.max_code_norm)
        self.template_ids.append(template_id)
        self.person_of_row.append(person_id)
        self.row_of[template_id] = row
        self.rows_of_person.setdefault(person_id, []).append(row)
        self.size = row + 1

    def remove(self, template_id: str) -> None:
        row = self.row_of.pop(template_id, None)
        if row is None:
            raise TemplateIdError(f"template id {template_id!r} is not in the matcher")
        person = self.person_of_row[row]
        rows = self.rows_of_person[person]
        rows.remove(row)
        if not rows:
            del self.rows_of_person[person]
            if self.grouped is not None:
                self.grouped.forget(person)
        last = self.size - 1
        if row != last:
            moved_tid = self.template_ids[last]
            moved_person = self.person_of_row[last]
            self._f32[row] = self._f32[last]
            self._codes[row] = self._codes[last]
            if self.columns is not None:
                self.columns[:, row] = self.columns[:, last]
            if self.grouped is not None:
                self.grouped.move_row(row, last)
            self.template_ids[row] = moved_tid
            self.person_of_row[row] = moved_person
            self.row_of[moved_tid] = row
            moved_rows = self.rows_of_person[moved_person]
            moved_rows[moved_rows.index(last)] = row
        self.template_ids.pop()
        self.person_of_row.pop()
        self.size = last


def _new_columns(dim: int, capacity: int) -> np.ndarray | None:
    """The dimension-major copy for ``capacity`` rows, or None past ``COLUMNS_MAX_ROWS``.

    Why a third copy: a batch's scores come out probe-major from it (``probes @ columns``), so
    the ranking reads contiguous rows without a transposing copy, and OpenBLAS runs that shape
    faster (measured at a batch of 8: 21 vs 26-32 us at 1k rows, 180 vs 255 us at 10k; at a
    batch of 2 and 1k rows 7 vs 24 us). The row stride is padded off a power of two: at
    exactly 1024 floats the product's loads alias in the cache (measured 43 vs 21 us at 1k
    rows).
    """
    if capacity > COLUMNS_MAX_ROWS:
        return None
    return np.zeros((dim, capacity + _COLUMN_PAD), dtype=np.float32)[:, :capacity]


def columns_nbytes(columns: np.ndarray | None) -> int:
    """Bytes the dimension-major copy allocated (its stride included)."""
    if columns is None:
        return 0
    return columns.base.nbytes if columns.base is not None else columns.nbytes


_COLUMN_PAD = 16
