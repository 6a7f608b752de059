"""onnxruntime sessions: the CPU default everywhere, and the CUDA/TensorRT providers on a Jetson."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.errors import BackendError
from edge.inference import compiled

log = logging.getLogger(__name__)


def gpu_providers() -> list[str]:
    available = ort.get_available_providers()
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    return [*wanted, "CPUExecutionProvider"] if wanted else []


def _options(threads: int, optimize: bool) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # No busy-waiting between runs: on a 2-core device the capture thread, the MQTT client
    # and the next frame's work need those cycles more than the pool needs low wake-up time.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OrtSession:
    """One onnxruntime session; on the CPU, the optimised graph comes from ``cache_dir``.

    The cache is only used with the CPU provider alone: with CUDA or TensorRT the saved graph
    would carry decisions made for devices that need not be there next time.
    """

    def __init__(self, model: Path, threads: int, providers: list[str], backend: str,
                 cache_dir: Path | None = None) -> None:
        self.cached = False
        if cache_dir is not None and providers == ["CPUExecutionProvider"]:
            self._session = self._open_cached(model, threads, providers, cache_dir)
        else:
            self._session = self._open(model, _options(threads, True), providers)
        self.backend = backend
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    @staticmethod
    def _open(model: Path, opts: ort.SessionOptions,
              providers: list[str]) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(str(model), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception zoo
            raise BackendError(f"onnxruntime cannot load {model}: {exc}") from None

    def _open_cached(self, model: Path, threads: int, providers: list[str],
                     cache_dir: Path) -> ort.InferenceSession:
        final = compiled.cached_path(
            cache_dir, model, compiled.cache_key(model, ort.__version__, "optimization=all"))
        if final.is_file():
            try:
                session = ort.InferenceSession(str(final), _options(threads, False),
                                               providers=providers)
            except Exception as exc:  # truncated by a crash, written by another build...
                log.warning("compiled graph unusable, rebuilding",
                            extra={"path": str(final), "reason": str(exc).splitlines()[0]})
                compiled.discard(final)
            else:
                self.cached = True
                return session
        opts = _options(threads, True)
        temp = compiled.temp_path(final) if compiled.writable_dir(cache_dir) else None
        if temp is not None:
            opts.optimized_model_filepath = str(temp)
        try:
            session = self._open(model, opts, providers)
        except BackendError:
            if temp is not None:
                compiled.discard(temp)
            raise
        if temp is not None and temp.is_file():
            compiled.publish(temp, final)
            compiled.prune(cache_dir, model, keep=final)
        return session

    def run(self, feeds: dict[str, np.ndarray],
            outputs: list[str] | None = None) -> list[np.ndarray]:
        return self._session.run(outputs or self.output_names, feeds)
