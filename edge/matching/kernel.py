"""The int8 scan: one ``MatMulIntegerToFloat`` through onnxruntime's CPU kernels (MLAS).

Why onnxruntime and not numpy: numpy has no integer GEMM (its int8 ``dot`` is a scalar loop and
converting chunks back to float32 costs more than reading the fp32 matrix), while MLAS has
VNNI / AVX2 / NEON dot-product kernels and onnxruntime is already a dependency of the engine.
``com.microsoft.MatMulIntegerToFloat`` is in the regular onnxruntime builds (CPU and GPU
wheels, x86 and aarch64); where it is missing, or disagrees with exact integer arithmetic at
start-up, the matcher falls back to fp32.

The gallery is operand A (rows, uint8 with zero point 128) so its memory is read once and never
repacked; probes are operand B (tiny). For a batch the graph transposes the result so each
probe's scores are contiguous, which the selection step needs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from edge.matching.quantize import ZERO_POINT, limit_codes

log = logging.getLogger(__name__)


def _model_bytes(dim: int, transpose: bool, zero_point: int = ZERO_POINT) -> bytes:
    from onnx import TensorProto, helper

    vi = helper.make_tensor_value_info
    inputs = [
        vi("gallery", TensorProto.UINT8, ["rows", dim]),
        vi("probes", TensorProto.INT8, [dim, "n"]),
        vi("gallery_step", TensorProto.FLOAT, []),
        vi("probe_steps", TensorProto.FLOAT, ["n"]),
    ]
    zero = helper.make_tensor("zero_point", TensorProto.UINT8, [], [zero_point])
    nodes = [helper.make_node(
        "MatMulIntegerToFloat",
        ["gallery", "probes", "gallery_step", "probe_steps", "zero_point"],
        ["scores_rn" if transpose else "scores"], domain="com.microsoft")]
    if transpose:
        nodes.append(helper.make_node("Transpose", ["scores_rn"], ["scores"], perm=[1, 0]))
    out_shape = ["n", "rows"] if transpose else ["rows", "n"]
    graph = helper.make_graph(nodes, "int8_scan", inputs,
                              [vi("scores", TensorProto.FLOAT, out_shape)], initializer=[zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.15
    return model.SerializeToString()


#: Below this much work (rows x probes) the scan runs on one thread. Splitting a sub-millisecond
#: scan across both cores of a busy 2-core box costs more than it saves: when the other core is
#: taken, the split waits a scheduler tick for it (measured: p99 0.3 ms on one thread, 3.4 ms on
#: two, at 10k rows with a competing process).
PARALLEL_MIN_WORK = 65_536


class Int8Scanner:
    """Scores all rows against a batch of probes; thread-safe (onnxruntime sessions are)."""

    def __init__(self, dim: int, threads: int, zero_point: int = ZERO_POINT) -> None:
        """``zero_point`` other than the codes' own exists to prove the start-up check works."""
        self._small = self._sessions(dim, 1, zero_point)
        self._large = self._sessions(dim, threads, zero_point) if threads > 1 else self._small

    @staticmethod
    def _sessions(dim: int, threads: int, zero_point: int) -> tuple[Any, Any]:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Idle pool threads must not spin: the embedder shares these cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        return (ort.InferenceSession(_model_bytes(dim, False, zero_point), opts,
                                     providers=providers),
                ort.InferenceSession(_model_bytes(dim, True, zero_point), opts,
                                     providers=providers))

    def scores(self, gallery: np.ndarray, probes: np.ndarray, gallery_step: float,
               probe_steps: np.ndarray) -> np.ndarray:
        """``(n, rows)`` float32 approximate scores; ``gallery`` must be C-contiguous uint8."""
        small = gallery.shape[0] * probes.shape[1] < PARALLEL_MIN_WORK
        return self._run(self._small if small else self._large, gallery, probes, gallery_step,
                         probe_steps)

    @staticmethod
    def _run(sessions: tuple[Any, Any], gallery: np.ndarray, probes: np.ndarray,
             gallery_step: float, probe_steps: np.ndarray) -> np.ndarray:
        single, batch = sessions
        n = probes.shape[1]
        feeds = {
            "gallery": gallery,
            "probes": probes,
            "gallery_step": np.asarray(gallery_step, dtype=np.float32),
            "probe_steps": np.ascontiguousarray(probe_steps, dtype=np.float32),
        }
        if n == 1:
            return single.run(None, feeds)[0].reshape(1, -1)
        return batch.run(None, feeds)[0]


def self_check(scanner: Int8Scanner, dim: int) -> str | None:
    """Compare the kernel with exact integer arithmetic on extreme codes; None when it agrees.

    This is what keeps the error bound honest on an unknown CPU or onnxruntime build: a kernel
    that saturates or rounds differently would make "exact by construction" false.
    """
    xq, qq = limit_codes(dim)
    step, steps = 0.004, np.array([0.01, 0.02, 0.005], dtype=np.float32)
    gallery = (xq + ZERO_POINT).astype(np.uint8)
    want = (xq @ qq).astype(np.float64) * np.float64(np.float32(step)) * steps.astype(np.float64)
    for sessions in (scanner._small, scanner._large):
        for n in (1, 3):
            got = scanner._run(sessions, gallery, np.ascontiguousarray(qq[:, :n].astype(np.int8)),
                               step, steps[:n]).T.astype(np.float64)
            err = float(np.abs(got - want[:, :n]).max())
            if not err <= 1e-6 * max(1.0, float(np.abs(want).max())):
                return f"int8 kernel differs from exact integer arithmetic by {err:g}"
    return None


_lock = threading.Lock()
_scanners: dict[tuple[int, int], Int8Scanner | None] = {}


def get_scanner(dim: int, threads: int) -> Int8Scanner | None:
    """The shared scanner for ``dim``, or None when this onnxruntime cannot run it correctly."""
    key = (dim, threads)
    with _lock:
        if key in _scanners:
            return _scanners[key]
        scanner: Int8Scanner | None
        try:
            scanner = Int8Scanner(dim, threads)
            problem = self_check(scanner, dim)
        except Exception as exc:  # any failure to build or run means "use fp32"
            scanner, problem = None, f"{type(exc).__name__}: {exc}"
        if problem is not None:
            log.warning("int8 scan unavailable, using the fp32 scan",
                        extra={"event": "matcher_int8_unavailable", "reason": problem})
            scanner = None
        _scanners[key] = scanner
        return scanner
