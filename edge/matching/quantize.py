"""int8 copies of templates and probes, and the bound that makes re-ranking exact.

Why int8: a 1:N scan of fp32 templates reads 512 bytes per template and is limited by memory
bandwidth; an int8 copy reads 128. Why it stays exact: every quantity below is known, so the
difference between the int8 score and the true cosine is bounded for every row, and re-ranking
every row whose int8 score lies within twice that bound of the leader cannot miss the true best.

Notation: gallery row ``x = s_g * xq + ex`` (``xq`` int in [-127, 127], one global step ``s_g``),
probe ``q = s_q * qq + eq`` (``qq`` int in [-63, 63], a step per probe). The scan computes
``a = s_g * s_q * <xq, qq>`` and the true score is
``<x, q> = a + s_g * <xq, eq> + <ex, q>``, so by Cauchy-Schwarz
``|<x, q> - a| <= s_g * max||xq|| * ||eq|| + max||ex|| * ||q||``.

Probes use 7 bits on purpose: x86 kernels without VNNI multiply unsigned by signed bytes with
``vpmaddubsw``, which saturates a pair of products at 32767; 255 * 63 * 2 = 32130 cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GALLERY_LEVELS = 127
PROBE_LEVELS = 63
ZERO_POINT = 128
#: The gallery step covers at least this magnitude (components of unit 128-d vectors are mostly
#: below 0.3); a larger one arriving after the load is clipped, which the bound accounts for.
DEFAULT_RANGE = 0.5
#: Slack for float32 rounding in the scan, the probe normalisation and the fp32 re-rank.
ROUNDING_SLACK = 1e-5


def gallery_step(vectors: np.ndarray) -> float:
    """The global quantisation step for a bulk load: the largest magnitude, at least the default."""
    peak = float(np.abs(vectors).max()) if vectors.size else 0.0
    # A float32 value, so the kernel (which takes the step as float32) uses exactly this one.
    return float(np.float32(max(peak, DEFAULT_RANGE) / GALLERY_LEVELS))


@dataclass(frozen=True)
class QuantizedRows:
    codes: np.ndarray  # uint8 (n, dim): xq + ZERO_POINT
    max_residual: float  # max over rows of ||x - s_g * xq||
    max_code_norm: float  # max over rows of ||xq||


def quantize_rows(vectors: np.ndarray, step: float, chunk: int = 8192) -> QuantizedRows:
    """Quantise unit rows with the global ``step``, in cache-sized blocks."""
    n = vectors.shape[0]
    codes = np.empty(vectors.shape, dtype=np.uint8)
    max_res = 0.0
    max_norm = 0.0
    for lo in range(0, n, chunk):
        block = vectors[lo:lo + chunk].astype(np.float64)
        q = block / step
        np.rint(q, out=q)
        np.clip(q, -GALLERY_LEVELS, GALLERY_LEVELS, out=q)
        codes[lo:lo + chunk] = q + ZERO_POINT
        max_norm = max(max_norm, float(np.sqrt(np.einsum("ij,ij->i", q, q).max())))
        block -= step * q
        max_res = max(max_res, float(np.sqrt(np.einsum("ij,ij->i", block, block).max())))
    return QuantizedRows(codes, max_res, max_norm)


@dataclass(frozen=True)
class QuantizedProbes:
    codes: np.ndarray  # int8 (dim, n): one column per probe, the layout the kernel reads
    steps: np.ndarray  # float32 (n,)
    residual_norms: np.ndarray  # float64 (n,): ||q - s_q * qq||


def quantize_probes(probes: np.ndarray) -> QuantizedProbes:
    wide = probes.astype(np.float64)
    steps = (np.abs(wide).max(axis=1) / PROBE_LEVELS).astype(np.float32)
    step64 = steps.astype(np.float64)[:, None]
    q = np.clip(np.rint(wide / step64), -PROBE_LEVELS, PROBE_LEVELS)
    residual = np.linalg.norm(wide - step64 * q, axis=1)
    return QuantizedProbes(np.ascontiguousarray(q.T.astype(np.int8)), steps, residual)


def error_bounds(step: float, max_code_norm: float, max_residual: float,
                 probe_residuals: np.ndarray) -> np.ndarray:
    """Per-probe bound on ``|true score - int8 score|`` for every row of the gallery."""
    # Probes are unit vectors up to float32 rounding, hence the 1 + 1e-6 on ||q||.
    return (step * max_code_norm * probe_residuals + max_residual * (1.0 + 1e-6)
            + ROUNDING_SLACK)


def limit_codes(dim: int, rows: int = 96, probes: int = 3,
                seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """Gallery codes ``(rows, dim)`` and probe codes ``(dim, probes)`` with whole rows and
    columns at the code limits, where a saturating or differently rounding kernel goes wrong;
    the start-up checks of every int8 kernel compare them with exact integer arithmetic."""
    rng = np.random.default_rng(seed)
    xq = rng.integers(-GALLERY_LEVELS, GALLERY_LEVELS + 1, size=(rows, dim))
    xq[:8], xq[8:16] = GALLERY_LEVELS, -GALLERY_LEVELS
    qq = rng.integers(-PROBE_LEVELS, PROBE_LEVELS + 1, size=(dim, probes))
    qq[:, 0], qq[:, 1] = PROBE_LEVELS, -PROBE_LEVELS
    return xq, qq
