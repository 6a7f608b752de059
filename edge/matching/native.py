"""The compiled int8 search (``_int8scan.c``), loaded with ctypes.

Why compiled: below ~100k templates numpy's fp32 scan is bound by one core's multiply-add rate
and Python's per-call cost, level with FAISS flat at 1k templates; bytes through VNNI / AVX2 /
Arm dot-product instructions, with the exact re-scoring done in the same call, take a third to
a half of that (``bench/bench_matcher.py``). Why ctypes and not a CPython extension: the library
has no Python API in it, so building it needs only a C compiler (JetPack has gcc), not the
Python headers, and one build serves every interpreter version.

The library is built by the package's build hook (``hatch_build.py``) next to this file. When
it is missing, fails to load, or disagrees with exact arithmetic at start-up, ``native_search``
returns None and the matcher keeps its numpy paths; the log says why.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import numpy as np

from edge.matching.quantize import ZERO_POINT, limit_codes, quantize_rows

log = logging.getLogger(__name__)

LIBRARY = Path(__file__).with_name("_int8scan.so")
#: Must equal ``edge_int8_version()`` in the C source.
VERSION = 3
LEVELS = {1: "portable", 2: "avx2", 3: "avx512-vnni", 4: "neon-dotprod"}
#: Probes per pass of the kernel; the scratch holds this many rows of scores.
GROUP = 8
#: Rows are scanned in whole blocks of this many; the layout's stride covers them.
ROW_ALIGN = 64
MAX_DIM = 1024
#: Rows per block of the layout (one 64-byte load: 16 rows x 4 dimensions).
BLOCK = 16
#: One block more than whole chunks (see ``stride_for``).
_STRIDE_PAD = BLOCK
#: Probes one call takes at most (the fast path's batch limit).
MAX_PROBES = 16
#: ``edge_int8_search``'s success; other codes (``_int8scan.h``) send the search elsewhere.
OK = 0

_P = ctypes.c_void_p
_I32 = ctypes.c_int32
_I64 = ctypes.c_int64
_F64 = ctypes.c_double


def stride_for(capacity: int) -> int:
    """Rows the grouped layout holds for ``capacity`` rows: whole 64-row chunks (the kernels
    read whole chunks) and one block more, so score rows of the scratch are not 4 KiB apart."""
    return -(-max(capacity, 1) // ROW_ALIGN) * ROW_ALIGN + _STRIDE_PAD


def grouped(codes: np.ndarray, stride: int) -> np.ndarray:
    """uint8 codes ``(rows, dim)`` in the kernel's layout ``(stride // 16, dim // 4, 16, 4)``:
    blocks of 16 rows, in each the groups of 4 dimensions one after another, so a 64-byte
    load is 16 rows x 4 dimensions and a scan reads memory front to back. Rows past ``rows``
    are zero."""
    rows, dim = codes.shape
    padded = np.zeros((stride, dim), dtype=np.uint8)
    padded[:rows] = codes
    return np.ascontiguousarray(
        padded.reshape(stride // BLOCK, BLOCK, dim // 4, 4).transpose(0, 2, 1, 3))


class NativeError(RuntimeError):
    pass


class _CGallery(ctypes.Structure):
    _fields_ = [("codes4", _P), ("stride", _I64), ("vectors", _P), ("row_stride", _I64),
                ("person", _P), ("dim", _I32)]


class _CBuffers(ctypes.Structure):
    _fields_ = [("scratch", _P), ("probes", _P), ("out", _P), ("rescored", _P),
                ("block_max", _P)]


class NativeSearch:
    """One loaded library, bound to one kernel level. Thread-safe: calls share nothing but
    their arguments (each thread brings its own scratch and outputs, ``Buffers``)."""

    def __init__(self, path: Path = LIBRARY, level: int | None = None) -> None:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise NativeError(f"cannot load {path.name}: {exc}") from exc
        lib.edge_int8_version.restype = ctypes.c_int
        version = lib.edge_int8_version()
        if version != VERSION:
            raise NativeError(f"{path.name} is version {version}, this code needs {VERSION}: "
                              "rebuild it (make setup)")
        lib.edge_int8_best_level.restype = ctypes.c_int
        self.best_level: int = lib.edge_int8_best_level()
        self.level = self.best_level if level is None else level
        if self.level not in LEVELS:
            raise NativeError(f"unknown kernel level {self.level}")
        search = lib.edge_int8_search
        # Two struct pointers instead of 19 arguments: ctypes converts each argument on every
        # call (~60 ns apiece), and these point at memory set up once.
        search.argtypes = [_P, _I32, _F64, _F64, _F64, _I32, _I32, _P]
        search.restype = ctypes.c_int
        scores = lib.edge_int8_scores
        scores.argtypes = [_P, _I64, _I32, _I32, _P, _I32, _I32, _P]
        scores.restype = ctypes.c_int
        self._lib = lib
        self.call = search  # the hot path calls it directly (see fastpath._native)

    @property
    def level_name(self) -> str:
        return LEVELS[self.level]

    def int_scores(self, codes4: np.ndarray, rows: int, probe_codes: np.ndarray) -> np.ndarray:
        """Integer scores ``<code - 128, qq>``, ``(n, rows)``; for the self-check and tests."""
        n, dim = probe_codes.shape
        stride = codes4.shape[0] * BLOCK
        qq = np.ascontiguousarray(probe_codes, dtype=np.int8)
        out = np.zeros((n, stride), dtype=np.int32)
        rc = self._lib.edge_int8_scores(codes4.ctypes.data, stride, rows, dim, qq.ctypes.data,
                                        n, self.level, out.ctypes.data)
        if rc != 0:
            raise NativeError(f"edge_int8_scores returned {rc}")
        return out[:, :rows]

    def search(self, gallery: Gallery, rows: int, step: float, max_code_norm: float,
               max_residual: float, probes: np.ndarray) -> list[tuple[int, float, int, float, int]]:
        """Per probe ``(best row, cosine, runner-up row or -1, cosine, rows re-scored)``.

        The checked form, for the self-check and tests; the matcher's fast path makes the same
        call with buffers it keeps per thread (``fastpath._native``).
        """
        n = probes.shape[0]
        buf = Buffers(gallery.stride, gallery.dim)
        buf.probes[:n] = probes
        rc = self.call(gallery.address, rows, step, max_code_norm, max_residual, n, self.level,
                       buf.address)
        if rc != OK:
            raise NativeError(f"edge_int8_search returned {rc}")
        out = buf.out[:n].tolist()
        return [(int(b), v, int(s), w, c)
                for (b, v, s, w), c in zip(out, buf.rescored[:n].tolist(), strict=True)]


class Buffers:
    """A thread's own memory for searches over a gallery of up to ``stride`` rows: probes in,
    answers out (``out[j] = best row, cosine, runner-up row, cosine``), scores between."""

    def __init__(self, stride: int, dim: int) -> None:
        self.stride, self.dim = stride, dim
        self.scratch = np.empty(GROUP * stride, dtype=np.int32)
        self.probes = np.zeros((MAX_PROBES, dim), dtype=np.float32)
        self.out = np.zeros((MAX_PROBES, 4), dtype=np.float64)
        self.rescored = np.zeros(MAX_PROBES, dtype=np.int32)
        self.block_max = np.zeros(stride // BLOCK + 1, dtype=np.int32)
        self._struct = _CBuffers(self.scratch.ctypes.data, self.probes.ctypes.data,
                                 self.out.ctypes.data, self.rescored.ctypes.data,
                                 self.block_max.ctypes.data)
        self.address = ctypes.addressof(self._struct)


class Gallery:
    """What a search reads of a table, captured at once: holding it keeps every array alive
    while the library runs without the GIL, even if a writer swaps the table's arrays."""

    def __init__(self, codes4: np.ndarray, vectors: np.ndarray, person: np.ndarray) -> None:
        if (codes4.dtype != np.uint8 or vectors.dtype != np.float32 or person.dtype != np.int32
                or not (codes4.flags.c_contiguous and vectors.flags.c_contiguous
                        and person.flags.c_contiguous)):
            raise NativeError("gallery arrays must be C-contiguous uint8, float32 and int32")
        self.codes4, self.vectors, self.person = codes4, vectors, person
        self.stride, self.dim = codes4.shape[0] * BLOCK, vectors.shape[1]
        #: Rows every array holds: a search must not ask for more (a writer may have grown
        #: the table since this snapshot was taken; that answer is discarded, but its reads
        #: must stay inside these arrays).
        self.capacity = min(vectors.shape[0], person.shape[0], self.stride)
        self._struct = _CGallery(codes4.ctypes.data, self.stride, vectors.ctypes.data,
                                 self.dim, person.ctypes.data, self.dim)
        self.address = ctypes.addressof(self._struct)


def self_check(native: NativeSearch, dim: int) -> str | None:
    """None when the library agrees with exact arithmetic on this CPU, else what differs.

    Two checks, as for the onnxruntime kernel (``kernel.self_check``): integer scores at the
    code limits (where a saturating kernel goes wrong), and whole searches on a small gallery
    of several templates per person against float64 brute force.
    """
    xq, qq = limit_codes(dim)
    codes = (xq + ZERO_POINT).astype(np.uint8)
    layout = grouped(codes, stride_for(codes.shape[0]))
    for n in (1, 2, 3):
        got = native.int_scores(layout, codes.shape[0], qq[:, :n].T)
        want = (qq[:, :n].T.astype(np.int64) @ xq.T.astype(np.int64))
        if not np.array_equal(got, want):
            return "integer scores differ from exact arithmetic at the code limits"
    rng = np.random.default_rng(2024)
    rows = 203  # not a whole number of blocks
    base = rng.standard_normal((rows // 3 + 1, dim))
    vectors = np.repeat(base, 3, axis=0)[:rows] + 0.3 * rng.standard_normal((rows, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    person = (np.arange(rows) // 3).astype(np.int32)
    from edge.matching.quantize import gallery_step

    step = gallery_step(vectors)
    quant = quantize_rows(vectors, step)
    gallery = Gallery(grouped(quant.codes, stride_for(rows)), vectors, person)
    probes = np.concatenate([vectors[::20] + 0.05, rng.standard_normal((3, dim))])
    probes = probes.astype(np.float32)
    found = native.search(gallery, rows, step, quant.max_code_norm, quant.max_residual, probes)
    unit = probes.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    exact = unit @ vectors.astype(np.float64).T
    for j, (best, best_v, second, second_v, _) in enumerate(found):
        want_best = int(exact[j].argmax())
        others = np.where(person != person[want_best], exact[j], -np.inf)
        want_second = int(others.argmax())
        if (best, second) != (want_best, want_second) or not (
                abs(best_v - exact[j, want_best]) < 1e-9
                and abs(second_v - exact[j, want_second]) < 1e-9):
            return f"search differs from brute force on probe {j}"
    return None


_lock = threading.Lock()
_loaded: dict[int, NativeSearch | None] = {}


def native_search(dim: int) -> NativeSearch | None:
    """The checked library for ``dim``-dimensional templates, or None (logged once)."""
    with _lock:
        if dim in _loaded:
            return _loaded[dim]
        native: NativeSearch | None = None
        if not 4 <= dim <= MAX_DIM or dim % 4:
            problem = f"templates of {dim} dimensions (needs a multiple of 4 up to {MAX_DIM})"
        elif not LIBRARY.is_file():
            problem = f"{LIBRARY.name} was not built (no C compiler at install time?)"
        else:
            try:
                native = NativeSearch()
                problem = self_check(native, dim)
            except Exception as exc:  # any failure means "use the numpy paths"
                problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            log.warning("native int8 search unavailable, using numpy", extra={
                "event": "matcher_native_unavailable", "reason": problem})
            native = None
        else:
            assert native is not None
            log.info("native int8 search loaded", extra={
                "event": "matcher_native_loaded", "level": native.level_name})
        _loaded[dim] = native
        return native
