"""The one interface every inference backend implements, and the choice between them.

Why a tiny interface: the detector and the embedder only need "feed named float32 arrays, get
named arrays back". onnxruntime (CPU, CUDA/TensorRT providers) and native TensorRT engines all fit
that shape, so a Jetson backend drops in without touching detection or embedding code.
``auto`` tries the fastest backend first and falls back, logging why each one was skipped.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.config import InferenceConfig
from edge.errors import BackendError
from edge.inference.engine_cache import Profile

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


def engine_dir(config: InferenceConfig, models_dir: Path) -> Path:
    """Where GPU engines live: ``[inference] engine_dir``, else ``<models dir>/engines``."""
    return Path(config.engine_dir).expanduser() if config.engine_dir else models_dir / "engines"


def default_profile(model: Path) -> Profile:
    """The optimisation profile for a prepared model, from its dynamic input dimensions.

    ``batch`` (SFace) gets 1..16; ``height``/``width`` (YuNet) the range for the default
    ``[detection] input_size``. The engine passes the profile for the configured size instead.
    """
    import onnx

    from edge.inference.engine_cache import detector_profile, embedder_profile

    graph = onnx.load(str(model), load_external_data=False).graph
    first = graph.input[0]
    params = [d.dim_param for d in first.type.tensor_type.shape.dim]
    if "batch" in params:
        return embedder_profile(first.name)
    if "height" in params or "width" in params:
        return detector_profile(first.name, 640)
    return {}


def load_backend(name: str, model: Path, config: InferenceConfig, auto_threads: int = 0,
                 profile: Profile | None = None) -> InferenceSession:
    """One named backend, no fallback (the doctor and ``build-engines`` probe each in turn)."""
    threads = config.threads or auto_threads
    if name == "onnxruntime-cpu":
        from edge.inference.ort import OrtSession

        return OrtSession(model, threads=threads, providers=["CPUExecutionProvider"],
                          backend="onnxruntime-cpu",
                          cache_dir=model.parent / "compiled" if config.cache else None)
    if name == "onnxruntime-gpu":
        from edge.inference.engine_cache import building
        from edge.inference.ort import OrtSession, gpu_providers, has_gpu_provider

        if not has_gpu_provider():
            raise BackendError(f"onnxruntime {_ort_version()} has no CUDA or TensorRT "
                               "execution provider (NVIDIA's Jetson onnxruntime-gpu wheel has)")
        shapes = profile if profile is not None else default_profile(model)
        cache = engine_dir(config, model.parent) / "ort-trt"
        providers = gpu_providers(precision=config.precision, cache_dir=cache,
                                  workspace_mb=config.workspace_mb, profile=shapes)
        with contextlib.suppress(OSError):
            cache.mkdir(parents=True, exist_ok=True)
        # The TensorRT provider builds its engine while the session is created: minutes once.
        with building(model.stem):
            return OrtSession(model, threads=threads, providers=providers,
                              backend="onnxruntime-gpu")
    if name == "tensorrt":
        try:
            import tensorrt

            if not hasattr(tensorrt, "Builder"):
                raise BackendError("the importable 'tensorrt' is not TensorRT (type stubs "
                                   "only?); on a Jetson use JetPack's python3-libnvinfer")
            from edge.inference import tensorrt as trt_backend
        except BackendError:
            raise
        except ImportError as exc:
            raise BackendError(f"TensorRT is not importable ({exc}); on a Jetson it comes with "
                               "JetPack (python3-libnvinfer), and a venv needs "
                               "--system-site-packages to see it") from None
        except Exception as exc:  # a broken install raises its own errors at import
            raise BackendError(f"TensorRT failed to import: {type(exc).__name__}: {exc}") from None
        shapes = profile if profile is not None else default_profile(model)
        try:
            return trt_backend.open_session(model, shapes, config.precision,
                                            config.workspace_mb, engine_dir(config, model.parent))
        except (RuntimeError, TypeError) as exc:
            # pybind11 says "factory function returned nullptr" (TypeError) when CUDA cannot
            # start, and TensorRT raises RuntimeError: both mean "this backend does not load",
            # so auto falls back instead of stopping the daemon.
            raise BackendError(f"TensorRT failed: {type(exc).__name__}: {exc}") from None
    raise BackendError(f"unknown inference backend {name!r}")  # pragma: no cover


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def create_session(model: Path, config: InferenceConfig, auto_threads: int = 0,
                   profile: Profile | None = None) -> InferenceSession:
    """Load ``model`` on the configured backend (``auto``: the fastest that loads).

    ``auto_threads`` is the model's own thread count when ``[inference] threads = 0``: a small
    graph (YuNet, ~6 ms) runs faster on one thread than paying a pool's hand-offs, a big one
    (SFace) wants every core (0 lets onnxruntime take one thread per core). ``profile`` is the
    input shapes the GPU backends build for (default: from the graph, see ``default_profile``).
    """
    if config.backend != "auto":
        return load_backend(config.backend, model, config, auto_threads, profile)
    reasons = []
    for name in AUTO_ORDER:
        try:
            session = load_backend(name, model, config, auto_threads, profile)
        except BackendError as exc:
            reasons.append(f"{name}: {exc}")
            # Info, not debug: "why is this Jetson running on the CPU?" must be answerable
            # from the journal of a default install.
            log.info("backend skipped", extra={"backend": name, "model": model.name,
                                               "reason": str(exc)})
            continue
        log.info("backend selected", extra={"backend": name, "model": model.name,
                                            "skipped": len(reasons)})
        return session
    raise BackendError("no inference backend could load " + model.name + ": " + "; ".join(reasons))
