"""Native TensorRT engines, built once on the device from the prepared ONNX files.

One code path for JetPack 6.0 (TensorRT 8.6) and 6.1/6.2 (TensorRT 10.3): only the name-based
API is used (``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), which exists from TensorRT 8.5 on; the
binding-index API that TensorRT 10 removed (``get_binding_*``, ``execute_async_v2``,
``build_engine``) appears nowhere. The tests type-check this module against the TensorRT 10
stubs (tests/test_tensorrt_types.py), so a removed or misspelt call fails CI on a machine
without a GPU.

Importing this module needs TensorRT; ``edge.inference.backend`` imports it only when the
``tensorrt`` backend is asked for and turns the ImportError into a reason.

Nothing here has run on real hardware yet (see docs/jetson.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorrt as trt

from edge.errors import BackendError
from edge.inference.cuda_rt import CudaRuntime, TensorBuffers
from edge.inference.engine_cache import (
    EngineCache,
    EngineKey,
    EngineLoadError,
    Profile,
    ShapeRange,
    get_or_build,
)
from edge.models.manifest import known_sha256

log = logging.getLogger(__name__)


def tensorrt_version() -> str:
    """The loaded TensorRT's version; refuses a ``tensorrt`` that is only type stubs."""
    version = getattr(trt, "__version__", None)
    if not isinstance(version, str) or not hasattr(trt, "Builder"):
        raise BackendError("the importable 'tensorrt' is not TensorRT (type stubs only?); "
                           "on a Jetson use JetPack's python3-libnvinfer")
    return version


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 0


_LEVELS: dict[trt.ILogger.Severity, int] = {
    trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
    trt.ILogger.Severity.ERROR: logging.ERROR,
    trt.ILogger.Severity.WARNING: logging.WARNING,
    trt.ILogger.Severity.INFO: logging.DEBUG,
    trt.ILogger.Severity.VERBOSE: logging.DEBUG,
}


class _Logger(trt.ILogger):
    """TensorRT's messages as our structured log lines (warnings and errors only by default)."""

    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: list[str] = []

    def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
        level = _LEVELS.get(severity, logging.DEBUG)
        if level >= logging.ERROR:
            self.errors.append(msg)
        if level > logging.DEBUG or log.isEnabledFor(logging.DEBUG):
            log.log(level, "tensorrt: %s", msg.strip(), extra={"source": "tensorrt"})


_LOGGER: _Logger | None = None


def _logger() -> _Logger:
    # One logger for the process: TensorRT keeps a pointer to the first one it is given.
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = _Logger()
    return _LOGGER


def _dims(shape: tuple[int, ...]) -> trt.Dims:
    return trt.Dims(list(shape))


def _shape(dims: trt.Dims) -> tuple[int, ...]:
    """Dims behave like a tuple at run time; spelt out so the type checker sees ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


#: TensorRT's data type -> numpy's (``trt.nptype`` is untyped in the stubs).
_NPTYPE: Callable[[trt.DataType], Any] = trt.nptype


def _use_timing_cache(config: trt.IBuilderConfig, data: bytes, model: str) -> None:
    """Seed the build with the saved timing cache, or with an empty one when it is unusable.

    Why not trust the file: TensorRT returns no cache for bytes it cannot read (a truncated
    write, a damaged SD card) and refuses one from another TensorRT or GPU. Either way the
    build only loses the head start; it must not fail because of it.
    """
    cache = None
    if data:
        try:
            cache = config.create_timing_cache(data)
        except (RuntimeError, TypeError, ValueError):  # should the binding raise instead
            cache = None
    if cache is not None and config.set_timing_cache(cache, False):
        return
    if data:
        log.warning("timing cache unusable (damaged, or from another TensorRT or GPU); "
                    "timing from scratch", extra={"model": model})
    empty = config.create_timing_cache(b"")
    if empty is None or not config.set_timing_cache(empty, False):
        raise BackendError(f"TensorRT could not create a timing cache for {model}")


def build_engine(onnx_path: Path, profile: Profile, precision: str, workspace_bytes: int,
                 timing_cache: bytes) -> tuple[bytes, bytes]:
    """Parse the ONNX file and build a serialized engine; returns (engine, new timing cache)."""
    logger = _logger()
    builder = trt.Builder(logger)
    # TensorRT 8.x needs explicit batch asked for; 10.x ignores the flag (always explicit).
    flags = 0 if _major(tensorrt_version()) >= 10 else (
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            log.warning("this GPU has no fast FP16; building the engine in FP32",
                        extra={"model": onnx_path.name})
    opt = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = _shape(tensor.shape)
        shape_range = profile.get(tensor.name)
        if shape_range is None:
            if any(d < 0 for d in dims):
                raise BackendError(f"{onnx_path.name}: input {tensor.name!r} has dynamic "
                                   f"dimensions {dims} but no optimisation profile")
            continue
        opt.set_shape(tensor.name, _dims(shape_range.min), _dims(shape_range.opt),
                      _dims(shape_range.max))
    config.add_optimization_profile(opt)
    _use_timing_cache(config, timing_cache, onnx_path.name)
    logger.errors.clear()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT could not build an engine for {onnx_path.name}: "
                           + ("; ".join(logger.errors[-3:]) or "no reason given"))
    timing = bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(plan)), timing


class TensorRTSession:
    """One engine, one execution context, one stream and fixed buffers.

    Outputs are copied out of the pinned buffers before ``run`` returns: the next run reuses
    them, and the embedder concatenates several runs' results.
    """

    backend = "tensorrt"

    def __init__(self, engine_bytes: bytes, cuda: CudaRuntime, profile: Profile) -> None:
        self._runtime = trt.Runtime(_logger())
        engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise EngineLoadError("TensorRT refused the serialized engine "
                                  "(built by another TensorRT version or damaged)")
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise BackendError("TensorRT could not create an execution context "
                               "(out of GPU memory?)")
        self._context = context
        self._cuda = cuda
        self._lock = threading.Lock()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names
                            if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self._ranges = {}
        for name in self.input_names:
            if name in profile:
                self._ranges[name] = profile[name]
            else:
                fixed = _shape(engine.get_tensor_shape(name))
                if any(d < 0 for d in fixed):
                    mins, opts, maxs = (_shape(d) for d in
                                        engine.get_tensor_profile_shape(name, 0))
                    self._ranges[name] = ShapeRange(mins, opts, maxs)
                else:
                    self._ranges[name] = ShapeRange(fixed, fixed, fixed)
        # Output shapes follow the inputs: set the largest inputs once to learn how big the
        # output buffers must be, then allocate everything for good.
        for name in self.input_names:
            self._set_shape(name, self._ranges[name].max)
        self._shapes: dict[str, tuple[int, ...]] = {
            n: self._ranges[n].max for n in self.input_names}
        self._stream = cuda.stream()
        self._buffers: dict[str, TensorBuffers] = {}
        try:
            for name in names:
                shape = (self._ranges[name].max if name in self._ranges
                         else _shape(context.get_tensor_shape(name)))
                if any(d < 0 for d in shape):
                    raise BackendError(f"output {name!r} has no bounded shape {shape}")
                dtype = np.dtype(_NPTYPE(engine.get_tensor_dtype(name)))
                buffers = TensorBuffers.allocate(cuda, name, dtype, shape)
                self._buffers[name] = buffers
                if not context.set_tensor_address(name, buffers.device.ptr):
                    raise BackendError(f"TensorRT refused the address of tensor {name!r}")
        except BaseException:
            self.close()
            raise
        self._out_shapes = self._output_shapes()

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        """What the outputs are for the input shapes set now (asked again only when they change:
        a dozen binding calls per frame otherwise)."""
        return {n: _shape(self._context.get_tensor_shape(n)) for n in self.output_names}

    def _set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        if not self._context.set_input_shape(name, _dims(shape)):
            raise BackendError(f"TensorRT refused input shape {shape} for {name!r}")

    def run(self, feeds: dict[str, np.ndarray],
            outputs: list[str] | None = None) -> list[np.ndarray]:
        wanted = outputs or self.output_names
        unknown = [name for name in wanted if name not in self.output_names]
        if unknown:
            raise BackendError(f"unknown output(s) {unknown}; the engine has {self.output_names}")
        # Every input is checked before any shape is set, so a refused call leaves the context
        # and the output shapes it derived exactly as the last good call left them.
        arrays = []
        for name in self.input_names:
            if name not in feeds:
                raise BackendError(f"missing input {name!r}")
            array = feeds[name]
            shape = tuple(array.shape)
            shape_range = self._ranges[name]
            if not shape_range.contains(shape):
                raise BackendError(f"input {name!r} of shape {shape} is outside the "
                                   f"engine's profile {shape_range.text()}")
            arrays.append((name, array, shape))
        with self._lock:
            reshaped = False
            try:
                for name, array, shape in arrays:
                    if self._shapes.get(name) != shape:
                        self._shapes.pop(name, None)
                        self._set_shape(name, shape)
                        self._shapes[name] = shape
                        reshaped = True
                    buffers = self._buffers[name]
                    host = buffers.host.view(buffers.dtype, shape)
                    np.copyto(host, array, casting="same_kind")
                    self._stream.upload(buffers.device, buffers.host, host.nbytes)
            finally:
                if reshaped:
                    self._out_shapes = self._output_shapes()
            if not self._context.execute_async_v3(self._stream.handle):
                raise BackendError("TensorRT execute_async_v3 failed")
            views = []
            for name in wanted:
                buffers = self._buffers[name]
                shape = self._out_shapes[name]
                host = buffers.host.view(buffers.dtype, shape)
                self._stream.download(buffers.host, buffers.device, host.nbytes)
                views.append(host)
            self._stream.synchronize()
            return [v.copy() for v in views]

    def close(self) -> None:
        for buffers in getattr(self, "_buffers", {}).values():
            buffers.free()
        self._buffers = {}
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()


def open_session(model: Path, profile: Profile, precision: str, workspace_mb: int,
                 engine_dir: Path) -> TensorRTSession:
    """Load the cached engine for this model, GPU, TensorRT and precision, or build it."""
    version = tensorrt_version()
    cuda = CudaRuntime()
    device = cuda.device()
    cache = EngineCache(engine_dir)
    key = EngineKey(model=model.stem, onnx_sha256=known_sha256(model), tensorrt=version,
                    gpu=device.name, compute_capability=device.compute_capability,
                    precision=precision, shapes=EngineKey.shapes_of(profile))
    timing_path = cache.timing_path(version, device.name, device.compute_capability)

    def build() -> bytes:
        engine, timing = build_engine(model, profile, precision, workspace_mb * 1024 * 1024,
                                      cache.load_timing(timing_path))
        cache.store_timing(timing_path, timing)
        return engine

    def load(data: bytes) -> TensorRTSession:
        return TensorRTSession(data, cuda, profile)

    session, built = get_or_build(cache, key, build, load)
    log.info("tensorrt engine ready", extra={"model": model.name, "built": built,
                                             "precision": precision, "gpu": device.name,
                                             "tensorrt": version})
    return session
