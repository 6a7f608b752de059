"""The int8 scan with the gallery as a constant of its onnxruntime session, packed once.

Why: in the plain int8 scan (``kernel``) the gallery is an input, so MLAS re-reads and re-tiles
all of it on every search, and it computes 16 probe columns even for one probe: at 1M templates
one probe took ~14 ms, no better than FAISS flat's fp32 scan on one thread (~19 ms) on this
2-core x86. As a constant, the gallery is packed into MLAS's own layout when the session is
created; a search then streams the packed bytes once: 6 ms for one probe, 10 ms for eight.

The price is that a packed gallery cannot change. The matcher keeps serving every write at
once through the plain scan and rebuilds the packed copy in the background once writes have
paused (``Matcher`` and ``Repacker``); each packed copy carries the matcher version it was built
from and is only used while that version is current, so a search never sees stale rows.

The gallery reaches onnxruntime as an external initializer (no 128 MB protobuf to serialise),
and session creation runs without the GIL, so a rebuild does not stall the daemon's other
threads. Once per process (``packed_support``) a packed scan of extreme codes is compared with
exact integer arithmetic (no packed scan is used otherwise), and whether onnxruntime still reads
our source buffer after packing is checked; only when it provably does not is that buffer
released, saving its 128 bytes a template.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.matching.quantize import PROBE_LEVELS, ZERO_POINT, limit_codes

log = logging.getLogger(__name__)

_NAME = "gallery"
#: Probes enter as operand A, the unsigned one, shifted into 1..127: x86 kernels without VNNI
#: multiply unsigned by signed bytes with ``vpmaddubsw``, which saturates a pair of products at
#: 32767, and 127 * 127 * 2 = 32258 cannot reach it (the plain scan's 128-centred codes could).
PROBE_ZERO_POINT = PROBE_LEVELS + 1


def _model_bytes(dim: int, rows: int) -> bytes:
    from onnx import TensorProto, helper

    vi = helper.make_tensor_value_info
    gallery = TensorProto(name=_NAME, data_type=TensorProto.INT8, dims=[dim, rows])
    gallery.data_location = TensorProto.EXTERNAL
    entry = gallery.external_data.add()
    entry.key, entry.value = "location", "supplied-in-memory"  # never read from disk
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    zero = helper.make_tensor("zero_point", TensorProto.UINT8, [], [PROBE_ZERO_POINT])
    # Probes are operand A (uint8 around PROBE_ZERO_POINT), the gallery B (int8): the integer
    # products are those of the plain scan. MatMulIntegerToFloat scales A per tensor only, so
    # the scores come out in units of each probe's own step (see ``PackedScan.scores``).
    nodes = [helper.make_node("MatMulIntegerToFloat",
                              ["probes", _NAME, "one", "gallery_step", "zero_point"], ["scores"],
                              domain="com.microsoft")]
    graph = helper.make_graph(
        nodes, "int8_packed_scan",
        [vi("probes", TensorProto.UINT8, ["n", dim]), vi("gallery_step", TensorProto.FLOAT, [])],
        [vi("scores", TensorProto.FLOAT, ["n", rows])], initializer=[gallery, one, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model.SerializeToString()


def transposed_codes(codes: np.ndarray) -> np.ndarray:
    """The gallery as operand B: ``(dim, rows)`` int8 (code - ZERO_POINT), one copy."""
    out = np.ascontiguousarray(codes.T)
    np.bitwise_xor(out, np.uint8(0x80), out=out)  # u - 128 for ZERO_POINT 128, in place
    return out.view(np.int8)


class PackedScan:
    """Approximate ``(n, rows)`` scores of a fixed set of rows; thread-safe."""

    def __init__(self, source: np.ndarray, threads: int, keep_source: bool = True) -> None:
        """``source`` is ``transposed_codes(codes)``: ``(dim, rows)`` int8, C-contiguous."""
        import onnxruntime as ort

        dim, rows = source.shape
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        opts.add_external_initializers([_NAME], [ort.OrtValue.ortvalue_from_numpy(source)])
        self._session = ort.InferenceSession(_model_bytes(dim, rows), opts,
                                             providers=["CPUExecutionProvider"])
        self.rows = rows
        self.dim = dim
        self._source: np.ndarray | None = source if keep_source else None

    def nbytes(self) -> int:
        """Memory of this copy: MLAS's packed gallery (about a byte a value; measured +134 MB
        at 1M x 128) and the source buffer while it is kept."""
        return self.rows * self.dim + (self._source.nbytes if self._source is not None else 0)

    def scores(self, probe_codes: np.ndarray, gallery_step: float) -> np.ndarray:
        """``(n, rows)`` approximate scores, each row divided by its probe's step.

        ``probe_codes`` is ``(dim, n)`` int8 as ``quantize_probes`` makes them. Multiplying
        row j by ``steps[j]`` gives the plain scan's scores; callers that only compare within a
        row (the re-ranking does) divide their bound by the step instead, which saves a pass
        over 4 MB per probe at 1M templates.
        """
        probes = (np.ascontiguousarray(probe_codes.T) + np.int8(PROBE_ZERO_POINT)).view(np.uint8)
        feeds = {"probes": probes, "gallery_step": np.asarray(gallery_step, dtype=np.float32)}
        return self._session.run(None, feeds)[0]


_check_lock = threading.Lock()
_support: tuple[bool, bool] | None = None


def packed_support() -> tuple[bool, bool]:
    """``(usable, keep_source)`` for this process's onnxruntime and CPU, checked once.

    usable: a packed scan of extreme codes (every gallery and probe value at its limits, where
    a saturating kernel would go wrong) equals exact integer arithmetic. Without that the error
    bound would not hold, so the matcher then stays on the plain scan.
    keep_source: onnxruntime still reads the buffer it was given after packing it (checked by
    overwriting the buffer and searching again); any doubt keeps it alive with its session.
    """
    global _support
    with _check_lock:
        if _support is None:
            _support = _check_support()
        return _support


def _check_support() -> tuple[bool, bool]:
    xq, qq = limit_codes(128)
    want = (xq @ qq).T.astype(np.float64)
    codes = (xq + ZERO_POINT).astype(np.uint8)
    probes = qq.astype(np.int8)
    try:
        scan = PackedScan(transposed_codes(codes), threads=1, keep_source=True)
        if not np.array_equal(scan.scores(probes, 1.0).astype(np.float64), want):
            log.warning("packed int8 scan differs from exact integer arithmetic; not used",
                        extra={"event": "matcher_packed_unavailable"})
            return False, True
        source: Any = scan._source
        scan._source = None
        source.fill(0)  # if onnxruntime still reads this buffer, the scores change
        reused = not np.array_equal(scan.scores(probes, 1.0).astype(np.float64), want)
    except Exception as exc:  # cannot build or run: the plain scan serves
        log.warning("packed int8 scan unavailable", extra={
            "event": "matcher_packed_unavailable", "reason": f"{type(exc).__name__}: {exc}"})
        return False, True
    return True, reused


class Repacker:
    """Runs ``build`` on a background thread once requests have paused for ``delay`` seconds.

    Enrollments come in bursts (an operator adds a person's photos one by one), and packing 1M
    templates costs ~0.3 s of one core, so a rebuild waits for a pause instead of following
    every write. ``build`` returns False when its result was already stale (a write landed
    meanwhile); the next request then brings another round. The thread exists only while
    there is work, so an idle matcher holds none.
    """

    def __init__(self, build: Callable[[], bool], delay: float) -> None:
        self._build = build
        self._delay = delay
        self._cond = threading.Condition()
        self._due: float | None = None
        self._thread: threading.Thread | None = None

    def request(self, now: bool = False) -> None:
        with self._cond:
            # Every write restarts the pause; a load asks for a build at once.
            self._due = time.monotonic() + (0.0 if now else self._delay)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edge-repack",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._thread is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._due is None:
                        self._thread = None
                        return
                    wait = self._due - time.monotonic()
                    if wait <= 0:
                        self._due = None
                        break
                    self._cond.wait(wait)
            try:
                done = self._build()
            except Exception:  # a failed build leaves the plain scan in charge; say why once
                log.exception("packing the gallery failed; the plain int8 scan stays in use")
                done = True
            if not done:
                self.request()
