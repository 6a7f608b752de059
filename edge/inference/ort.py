"""onnxruntime sessions: the CPU default everywhere, and the CUDA/TensorRT providers on a Jetson."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.errors import BackendError


def gpu_providers() -> list[str]:
    available = ort.get_available_providers()
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    return [*wanted, "CPUExecutionProvider"] if wanted else []


class OrtSession:
    def __init__(self, model: Path, threads: int, providers: list[str], backend: str) -> None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # No busy-waiting between runs: on a 2-core device the capture thread, the MQTT client
        # and the next frame's work need those cycles more than the pool needs low wake-up time.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(model), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception zoo
            raise BackendError(f"onnxruntime cannot load {model}: {exc}") from None
        self.backend = backend
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray],
            outputs: list[str] | None = None) -> list[np.ndarray]:
        return self._session.run(outputs or self.output_names, feeds)
