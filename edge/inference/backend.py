"""The one interface every inference backend implements, and the choice between them.

Why a tiny interface: the detector and the embedder only need "feed named float32 arrays, get
named arrays back". onnxruntime (CPU, CUDA/TensorRT providers) and native TensorRT engines all fit
that shape, so a Jetson backend drops in without touching detection or embedding code.
``auto`` tries the fastest backend first and falls back, logging why each one was skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.config import InferenceConfig
from edge.errors import BackendError

log = logging.getLogger(__name__)

#: Order in which ``auto`` tries backends: fastest first.
AUTO_ORDER = ("tensorrt", "onnxruntime-gpu", "onnxruntime-cpu")


class InferenceSession(Protocol):
    """A loaded model ready to run; implementations must be safe to call from one thread."""

    backend: str
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray],
            outputs: list[str] | None = None) -> list[np.ndarray]:
        """Run once; returns the requested outputs (all, in graph order, when None)."""
        ...


def _load(name: str, model: Path, config: InferenceConfig,
          auto_threads: int = 0) -> InferenceSession:
    threads = config.threads or auto_threads
    if name == "onnxruntime-cpu":
        from edge.inference.ort import OrtSession

        return OrtSession(model, threads=threads, providers=["CPUExecutionProvider"],
                          backend="onnxruntime-cpu",
                          cache_dir=model.parent / "compiled" if config.cache else None)
    if name == "onnxruntime-gpu":
        from edge.inference.ort import OrtSession, gpu_providers

        providers = gpu_providers()
        if not providers:
            raise BackendError("onnxruntime has no CUDA or TensorRT execution provider here")
        return OrtSession(model, threads=threads, providers=providers,
                          backend="onnxruntime-gpu")
    if name == "tensorrt":
        raise BackendError("the native TensorRT backend is not built yet (planned for Jetson)")
    raise BackendError(f"unknown inference backend {name!r}")  # pragma: no cover


def create_session(model: Path, config: InferenceConfig,
                   auto_threads: int = 0) -> InferenceSession:
    """Load ``model`` on the configured backend (``auto``: the fastest that loads).

    ``auto_threads`` is the model's own thread count when ``[inference] threads = 0``: a small
    graph (YuNet, ~6 ms) runs faster on one thread than paying a pool's hand-offs, a big one
    (SFace) wants every core (0 lets onnxruntime take one thread per core).
    """
    if config.backend != "auto":
        return _load(config.backend, model, config, auto_threads)
    reasons = []
    for name in AUTO_ORDER:
        try:
            session = _load(name, model, config, auto_threads)
        except BackendError as exc:
            reasons.append(f"{name}: {exc}")
            log.debug("backend skipped", extra={"backend": name, "reason": str(exc)})
            continue
        log.info("backend selected", extra={"backend": name, "model": model.name})
        return session
    raise BackendError("no inference backend could load " + model.name + ": " + "; ".join(reasons))
