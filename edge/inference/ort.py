"""onnxruntime sessions: the CPU default everywhere, and the CUDA/TensorRT providers on a Jetson."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge.errors import BackendError
from edge.inference import compiled
from edge.inference.engine_cache import Profile

log = logging.getLogger(__name__)


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
Provider = str | tuple[str, dict[str, str]]


def _profile_text(profile: Profile, which: str) -> str:
    """``{"data": 1..16 x 3x112x112}`` -> ``"data:16x3x112x112"`` as the TensorRT EP wants."""
    return ",".join(f"{name}:{'x'.join(map(str, getattr(r, which)))}"
                    for name, r in sorted(profile.items()))


def has_gpu_provider() -> bool:
    return any(p in ort.get_available_providers() for p in GPU_PROVIDERS)


def gpu_providers(*, precision: str = "fp16", cache_dir: Path | None = None,
                  workspace_mb: int = 1024, profile: Profile | None = None) -> list[Provider]:
    """The GPU providers this onnxruntime has, with the options that matter on a Jetson.

    TensorRT EP: FP16 as configured, its engines and timing cache kept under ``cache_dir`` (an
    engine build takes minutes; without the cache every start pays it), the same workspace cap
    and optimisation profile as the native backend (so no rebuild when a new batch size shows
    up). CUDA EP: grows its memory arena only by what is asked (a Jetson's GPU shares the
    board's RAM with everything else) and picks convolution kernels by heuristics, not by a
    timed search at every start. CPU last, for the few operators neither GPU provider has.
    Empty when neither GPU provider is in this onnxruntime build.
    """
    available = ort.get_available_providers()
    out: list[Provider] = []
    if "TensorrtExecutionProvider" in available:
        trt_opts = {"device_id": "0",
                    "trt_fp16_enable": "True" if precision == "fp16" else "False",
                    "trt_max_workspace_size": str(workspace_mb * 1024 * 1024)}
        if cache_dir is not None:
            trt_opts.update({"trt_engine_cache_enable": "True",
                             "trt_engine_cache_path": str(cache_dir),
                             "trt_timing_cache_enable": "True",
                             "trt_timing_cache_path": str(cache_dir)})
        if profile:
            trt_opts.update({"trt_profile_min_shapes": _profile_text(profile, "min"),
                             "trt_profile_opt_shapes": _profile_text(profile, "opt"),
                             "trt_profile_max_shapes": _profile_text(profile, "max")})
        out.append(("TensorrtExecutionProvider", trt_opts))
    if "CUDAExecutionProvider" in available:
        out.append(("CUDAExecutionProvider", {"device_id": "0",
                                              "arena_extend_strategy": "kSameAsRequested",
                                              "cudnn_conv_algo_search": "HEURISTIC"}))
    return [*out, "CPUExecutionProvider"] if out else []


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

    def __init__(self, model: Path, threads: int, providers: list[Provider], backend: str,
                 cache_dir: Path | None = None) -> None:
        self.cached = False
        if cache_dir is not None and providers == ["CPUExecutionProvider"]:
            self._session = self._open_cached(model, threads, providers, cache_dir)
        else:
            self._session = self._open(model, _options(threads, True), providers)
        self.backend = backend
        # onnxruntime quietly drops a provider whose libraries fail to load (no cuDNN, a
        # TensorRT of another version) and runs on the CPU: that is not a GPU backend.
        if backend == "onnxruntime-gpu" and not any(
                p in GPU_PROVIDERS for p in self._session.get_providers()):
            raise BackendError("onnxruntime dropped its CUDA and TensorRT providers while "
                               "loading (their libraries did not load); it would run on "
                               "the CPU")
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    @staticmethod
    def _open(model: Path, opts: ort.SessionOptions,
              providers: list[Provider]) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(str(model), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception zoo
            raise BackendError(f"onnxruntime cannot load {model}: {exc}") from None

    def _open_cached(self, model: Path, threads: int, providers: list[Provider],
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
