"""Person-level top-k for a batch of probes, from exact or from approximate scores.

Both paths peel persons off one at a time: argmax per probe, hide that person's rows, argmax
again. A person's first argmax is their best template, so with exact (fp32) scores the peeled
persons are the answer.

With approximate scores ``a`` and ``|true - a| <= bound`` on every row, let ``level`` be the
k-th peeled person's approximate best. Each of the k peeled persons truly scores at least
``level - bound``; a row whose approximate score is below ``level - 2 * bound`` truly scores
below that, so it can be neither in the true top k nor the best template of a top-k person.
Re-scoring exactly the rows above that line, plus every row of the persons peeled before the
k-th, therefore yields exactly the true top k (ties aside, which are broken by row order).

Vectorised across the batch where it matters (argmax, threshold, re-score); Python loops only
over the handful of candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge.matching.blocks import BlockMaxima, peel_blocked
from edge.matching.results import PersonScore

#: From here on the candidates are found through block maxima (``blocks``): one sweep of the
#: scores instead of four.
BLOCKED_MIN_ROWS = 65_536


def _peel(scores: np.ndarray, k: int, person_of_row: Sequence[str],
          rows_of_person: Mapping[str, list[int]]
          ) -> tuple[list[list[int]], list[list[float]], list[list[list[int]]]]:
    """k rounds of per-probe argmax; returns rows and values per round and the hidden rows."""
    n = scores.shape[0]
    pick = np.arange(n)
    found_rows: list[list[int]] = []
    found_vals: list[list[float]] = []
    hidden: list[list[list[int]]] = [[] for _ in range(n)]
    for rnd in range(k):
        rows = scores.argmax(axis=1)
        rows_l, vals_l = rows.tolist(), scores[pick, rows].tolist()
        found_rows.append(rows_l)
        found_vals.append(vals_l)
        if rnd == k - 1:
            break
        for j in range(n):
            if vals_l[j] != -np.inf:
                person_rows = rows_of_person[person_of_row[rows_l[j]]]
                scores[j, person_rows] = -np.inf
                hidden[j].append(person_rows)
    return found_rows, found_vals, hidden


def exact_top_one(scores: np.ndarray, k: int, person_of_row: Sequence[str],
                  rows_of_person: Mapping[str, list[int]],
                  template_ids: Sequence[str]) -> list[PersonScore]:
    """Top-k persons for one probe from exact ``(rows,)`` scores (used as scratch).

    The single-probe, small-gallery case: here a few microseconds of Python are most of the
    cost, so it skips the batch bookkeeping of ``exact_top``.
    """
    out: list[PersonScore] = []
    while True:
        row = int(scores.argmax())
        value = float(scores[row])
        if value == -np.inf:
            return out
        person = person_of_row[row]
        out.append(PersonScore(person, template_ids[row], value))
        if len(out) == k:
            return out
        scores[rows_of_person[person]] = -np.inf


def exact_top(scores: np.ndarray, k: int, person_of_row: Sequence[str],
              rows_of_person: Mapping[str, list[int]],
              template_ids: Sequence[str]) -> list[list[PersonScore]]:
    """Top-k persons from exact ``(n, rows)`` scores (used as scratch)."""
    found_rows, found_vals, _ = _peel(scores, k, person_of_row, rows_of_person)
    out: list[list[PersonScore]] = []
    for j in range(scores.shape[0]):
        top: list[PersonScore] = []
        for rows_l, vals_l in zip(found_rows, found_vals, strict=True):
            if vals_l[j] == -np.inf:
                break
            row = rows_l[j]
            top.append(PersonScore(person_of_row[row], template_ids[row], vals_l[j]))
        out.append(top)
    return out


def reranked_top(scores: np.ndarray, bounds: np.ndarray, k: int, vectors: np.ndarray,
                 queries: np.ndarray, person_of_row: Sequence[str],
                 rows_of_person: Mapping[str, list[int]],
                 template_ids: Sequence[str]) -> list[list[PersonScore]]:
    """Exact top-k persons from approximate ``(n, rows)`` scores (used as scratch).

    ``bounds`` holds each probe's error bound; ``queries`` are the probes as float64.
    """
    n, size = scores.shape
    blocks = BlockMaxima(scores) if size >= BLOCKED_MIN_ROWS else None
    if blocks is None:
        _, found_vals, hidden = _peel(scores, k, person_of_row, rows_of_person)
        level = np.asarray(found_vals[-1])
    else:
        level_l, hidden = peel_blocked(blocks, k, person_of_row, rows_of_person)
        level = np.asarray(level_l)
    # Fewer than k persons: every row is already hidden, so nothing lies "near" (inf line).
    line = np.where(level == -np.inf, np.inf, level - 2.0 * bounds)
    if blocks is None:
        flat = np.flatnonzero(scores >= line[:, None])
        probe_of = flat // size
        rows = flat - probe_of * size
    else:
        near = [blocks.rows_at_least(j, float(line[j])) for j in range(n)]
        rows = np.concatenate(near)
        probe_of = np.repeat(np.arange(n), [len(r) for r in near])
    extra_rows = [r for j in range(n) for person_rows in hidden[j] for r in person_rows]
    if extra_rows:
        extra_probes = [j for j in range(n) for person_rows in hidden[j] for _ in person_rows]
        probe_of = np.concatenate((probe_of, np.array(extra_probes, dtype=np.intp)))
        rows = np.concatenate((rows, np.array(extra_rows, dtype=np.intp)))
    exact = np.einsum("ij,ij->i", vectors[rows].astype(np.float64), queries[probe_of])
    # By probe, then best first; lexsort is stable, so ties keep row order.
    order = np.lexsort((-exact, probe_of))
    starts = np.searchsorted(probe_of[order], np.arange(n + 1)).tolist()
    rows_l, exact_l = rows[order].tolist(), exact[order].tolist()
    out: list[list[PersonScore]] = []
    for j in range(n):
        top: list[PersonScore] = []
        seen: set[str] = set()
        for i in range(starts[j], starts[j + 1]):
            row = rows_l[i]
            person = person_of_row[row]
            if person in seen:
                continue
            seen.add(person)
            top.append(PersonScore(person, template_ids[row], exact_l[i]))
            if len(top) == k:
                break
        out.append(top)
    return out
