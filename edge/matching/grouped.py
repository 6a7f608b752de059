"""The table's copy for the compiled int8 search (``native``): codes four dimensions at a time,
and a number per person.

Why another copy of the codes: the kernels load 16 rows x 4 dimensions per 64 bytes, so the
table keeps them in that shape (``native.grouped``); the row-major ``TemplateTable.codes`` would
need a horizontal sum per row and probe. Why numbers: the library
compares persons per row while it ranks, and an int32 compare is what C can do. 128 + 4 bytes a
template, kept up to ``GROUPED_MAX_ROWS``; beyond, the packed onnxruntime scan serves anyway.

Changed in place under the matcher's write lock, like the rest of the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.matching.native import BLOCK, Gallery, grouped, stride_for

#: Up to this many rows (capacity) a table keeps the grouped copy: from here on the matcher
#: scans a packed copy through onnxruntime (``matcher.PACK_MIN_ROWS``).
GROUPED_MAX_ROWS = 131_072
#: Person numbers are never reused while the table lives; past this they are compacted.
MAX_NUMBER = 2**31 - 2


class GroupedCodes:
    def __init__(self, dim: int, capacity: int) -> None:
        self.dim = dim
        self.codes4 = np.zeros((stride_for(capacity) // BLOCK, dim // 4, BLOCK, 4),
                               dtype=np.uint8)
        self.person = np.zeros(capacity, dtype=np.int32)
        self._numbers: dict[str, int] = {}
        self._next = 0

    @classmethod
    def create(cls, dim: int, capacity: int) -> GroupedCodes | None:
        return cls(dim, capacity) if capacity <= GROUPED_MAX_ROWS else None

    def grown(self, capacity: int) -> GroupedCodes | None:
        """A copy with room for ``capacity`` rows, or None past ``GROUPED_MAX_ROWS``."""
        new = GroupedCodes.create(self.dim, capacity)
        if new is not None:
            new.codes4[:self.codes4.shape[0]] = self.codes4
            new.person[:self.person.shape[0]] = self.person
            new._numbers, new._next = self._numbers, self._next
        return new

    def fill(self, codes: np.ndarray, person_ids: Sequence[str]) -> None:
        """Rows ``0..len(codes)`` at once (a bulk load)."""
        rows = codes.shape[0]
        self.codes4[...] = grouped(codes, self.codes4.shape[0] * BLOCK)
        self.person[:rows] = [self.number(pid) for pid in person_ids]

    def set_row(self, row: int, codes: np.ndarray, person_id: str,
                person_of_row: Sequence[str]) -> None:
        if self._next > MAX_NUMBER:
            self._renumber(person_of_row[:row])
        self.codes4[row // BLOCK, :, row % BLOCK, :] = codes.reshape(self.dim // 4, 4)
        self.person[row] = self.number(person_id)

    def move_row(self, dst: int, src: int) -> None:
        self.codes4[dst // BLOCK, :, dst % BLOCK, :] = self.codes4[src // BLOCK, :, src % BLOCK, :]
        self.person[dst] = self.person[src]

    def row_codes(self, rows: int) -> np.ndarray:
        """The first ``rows`` rows' codes, row-major (for checks)."""
        return self.codes4.transpose(0, 2, 1, 3).reshape(-1, self.dim)[:rows]

    def forget(self, person_id: str) -> None:
        """The person has no rows left; a later enrollment gets a new number."""
        self._numbers.pop(person_id, None)

    def number(self, person_id: str) -> int:
        found = self._numbers.get(person_id)
        if found is None:
            found = self._numbers[person_id] = self._next
            self._next += 1
        return found

    def _renumber(self, person_of_row: Sequence[str]) -> None:
        self._numbers, self._next = {}, 0
        self.person[:len(person_of_row)] = [self.number(pid) for pid in person_of_row]

    def nbytes(self) -> int:
        return self.codes4.nbytes + self.person.nbytes

    def gallery(self, vectors: np.ndarray) -> Gallery:
        return Gallery(self.codes4, vectors, self.person)
