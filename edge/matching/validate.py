"""Turning caller input into unit float32 rows, or an error that names the problem.

Templates and probes are normalised here so that a raw SFace output and an already normalised
vector give the same similarity; a vector that cannot be normalised (zero, NaN, inf) is refused
instead of poisoning every later search with NaN scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.matching.errors import TemplateIdError, VectorError

_BLOCK = 8192


def unit_rows(vectors: Any, dim: int, what: str, *, allow_1d: bool = True) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 ``(n, dim)`` array of unit rows."""
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise VectorError(f"{what}: not a numeric array: {exc}") from None
    if arr.dtype.kind not in "fiu":  # bool, complex, strings, objects
        raise VectorError(f"{what}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise VectorError(f"{what}: expected shape (n, {dim}), got {arr.shape}")
    if arr.shape[0] == 0:
        return np.empty((0, dim), dtype=np.float32)
    if arr.shape[0] <= _BLOCK:
        return _unit_block(arr, 0, what)
    out = np.empty(arr.shape, dtype=np.float32)
    # Blocks that stay in cache: a 1M-row start-up load is one pass over memory, not five.
    for lo in range(0, arr.shape[0], _BLOCK):
        out[lo:lo + _BLOCK] = _unit_block(arr[lo:lo + _BLOCK], lo, what)
    return out


def _row_dots(block: np.ndarray) -> np.ndarray:
    if _vecdot is not None:
        return _vecdot(block, block)
    return np.einsum("ij,ij->i", block, block)  # pragma: no cover - numpy < 2


_vecdot = getattr(np, "vecdot", None)


def _unit_block(arr: np.ndarray, first_row: int, what: str) -> np.ndarray:
    block = arr.astype(np.float64)
    with np.errstate(all="ignore"):  # overflow and NaN are diagnosed just below, not warned
        sq = _row_dots(block)
    lo, hi = (float(sq[0]), float(sq[0])) if sq.shape[0] == 1 else (float(sq.min()),
                                                                      float(sq.max()))
    if not (lo >= 1e-200 and hi < np.inf):  # also false for NaN; the exact cause is found below
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            bad = first_row + int(np.flatnonzero(~finite)[0])
            raise VectorError(f"{what}: row {bad} holds NaN or infinity")
        peak = np.abs(block).max(axis=1)
        if (peak == 0).any():
            bad = first_row + int(np.flatnonzero(peak == 0)[0])
            raise VectorError(f"{what}: row {bad} is a zero vector and has no direction")
        # Finite, but squares that overflow or underflow: scale each row to a peak of 1 first.
        block /= peak[:, None]
        sq = _row_dots(block)
    block *= (1.0 / np.sqrt(sq))[:, None]
    return block.astype(np.float32)


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TemplateIdError(f"{what}: expected a non-empty string, got {value!r}")
    return value


def check_ids(values: Sequence[Any], what: str, count: int) -> list[str]:
    ids = [check_id(v, what) for v in values]
    if len(ids) != count:
        raise TemplateIdError(f"{what}: {len(ids)} ids for {count} vectors")
    return ids
