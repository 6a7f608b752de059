"""Block maxima over one batch of scores, so a 1M-row gallery is swept once per search.

Finding the best person, hiding their rows, finding the next and collecting every row above
a line would otherwise each sweep all rows of every probe (four passes over 4 MB per probe at
1M templates). With the maximum of each block of ``BLOCK`` rows computed once, those steps look
at a few thousand block maxima and then only inside the few blocks that matter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

BLOCK = 2048
#: Past this many blocks above the line, visiting them one by one costs more than one sweep.
_MAX_BLOCK_VISITS = 64


class BlockMaxima:
    def __init__(self, scores: np.ndarray) -> None:
        """``scores`` is ``(n, rows)``, C-contiguous and writable; it is used as scratch."""
        n, size = scores.shape
        full = size // BLOCK * BLOCK
        maxima = scores[:, :full].reshape(n, -1, BLOCK).max(axis=2)
        if full < size:
            maxima = np.concatenate((maxima, scores[:, full:].max(axis=1, keepdims=True)),
                                    axis=1)
        self.scores = scores
        self.maxima = maxima

    def argmax(self, j: int) -> tuple[int, float]:
        """Best row of probe ``j`` and its score (-inf when every row is hidden)."""
        block = int(self.maxima[j].argmax())
        value = float(self.maxima[j, block])
        lo = block * BLOCK
        return lo + int(self.scores[j, lo:lo + BLOCK].argmax()), value

    def hide(self, j: int, rows: list[int]) -> None:
        scores = self.scores[j]
        scores[rows] = -np.inf
        for block in {r // BLOCK for r in rows}:
            lo = block * BLOCK
            self.maxima[j, block] = scores[lo:lo + BLOCK].max()

    def rows_at_least(self, j: int, line: float) -> np.ndarray:
        blocks = np.flatnonzero(self.maxima[j] >= line).tolist()
        scores = self.scores[j]
        if len(blocks) > _MAX_BLOCK_VISITS:  # near-ties everywhere: one sweep is cheaper
            return np.flatnonzero(scores >= line)
        parts = [np.flatnonzero(scores[b * BLOCK:(b + 1) * BLOCK] >= line) + b * BLOCK
                 for b in blocks]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.intp)


def peel_blocked(blocks: BlockMaxima, k: int, person_of_row: Sequence[str],
                 rows_of_person: Mapping[str, list[int]]
                 ) -> tuple[list[float], list[list[list[int]]]]:
    """``topk._peel`` over block maxima: the k-th person's value per probe, and hidden rows."""
    n = blocks.scores.shape[0]
    level: list[float] = []
    hidden: list[list[list[int]]] = [[] for _ in range(n)]
    for j in range(n):
        value = -np.inf
        for rnd in range(k):
            row, value = blocks.argmax(j)
            if value == -np.inf or rnd == k - 1:
                break
            person_rows = rows_of_person[person_of_row[row]]
            blocks.hide(j, person_rows)
            hidden[j].append(person_rows)
        level.append(value)
    return level, hidden
