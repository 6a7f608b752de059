"""The few CUDA runtime calls the TensorRT backend needs, behind one small class.

Why cuda-python and not PyCUDA: NVIDIA publishes cuda-python for every CUDA release JetPack
ships, as a pure binding with no build step on the device. Its module moved: releases from 12.6
on have ``cuda.bindings.runtime``, older ones only ``cuda.cudart`` (same functions), so both are
tried. Every call returns a tuple whose first item is a ``cudaError_t``; ``check`` turns a failure
into a ``BackendError`` naming the call and CUDA's own error name.

Why pinned host buffers and one stream: an asynchronous copy from pageable memory is silently
synchronous (the driver stages it through its own pinned buffer), and a stream per backend keeps
the detector's and the embedder's work ordered without a global device synchronise. Buffers are
allocated once at the engine's largest shapes, so nothing is allocated per frame.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from edge.errors import BackendError

log = logging.getLogger(__name__)

MODULES = ("cuda.bindings.runtime", "cuda.cudart")


class CudaError(BackendError):
    """A CUDA runtime call failed (no device, out of memory, a driver mismatch)."""


def import_cudart() -> ModuleType:
    """cuda-python's runtime module under its current or its older name."""
    problems = []
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
        except Exception as exc:  # a binding that finds no libcudart raises its own errors
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    raise BackendError("cuda-python is not importable (pip install cuda-python matching the "
                       "CUDA version of JetPack): " + "; ".join(problems))


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: str  # "8.7" for Orin
    total_memory: int


class CudaRuntime:
    """A thin, checked view of ``cudart``; ``module`` may be given (tests pass a host stand-in)."""

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        self.rt: Any = module if module is not None else import_cudart()
        self._success = self.rt.cudaError_t.cudaSuccess

    def check(self, call: str, result: Any) -> Any:
        """Unpack ``(err, value...)``; raise with CUDA's error name when ``err`` is not success."""
        if isinstance(result, tuple):
            err, rest = result[0], result[1:]
        else:
            err, rest = result, ()
        if err != self._success:
            name = getattr(err, "name", str(err))
            try:
                _ok, text = self.rt.cudaGetErrorString(err)
                detail = text.decode() if isinstance(text, bytes) else str(text)
            except Exception:  # the error string is a courtesy, never the failure itself
                detail = ""
            raise CudaError(f"CUDA {call} failed: {name}" + (f" ({detail})" if detail else ""))
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def device(self) -> DeviceInfo:
        index = int(self.check("cudaGetDevice", self.rt.cudaGetDevice()))
        props = self.check("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(index))
        raw = props.name
        name = (raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes)
                else str(raw))
        return DeviceInfo(index, name.strip(), f"{props.major}.{props.minor}",
                          int(props.totalGlobalMem))

    def runtime_version(self) -> str:
        """``12060`` -> ``"12.6"``."""
        value = int(self.check("cudaRuntimeGetVersion", self.rt.cudaRuntimeGetVersion()))
        return f"{value // 1000}.{value % 1000 // 10}"

    def driver_version(self) -> str | None:
        """None when no CUDA driver is installed (the call then succeeds with 0)."""
        value = int(self.check("cudaDriverGetVersion", self.rt.cudaDriverGetVersion()))
        return f"{value // 1000}.{value % 1000 // 10}" if value else None

    def stream(self) -> Stream:
        return Stream(self)

    def pinned(self, nbytes: int) -> PinnedBuffer:
        return PinnedBuffer(self, nbytes)

    def device_buffer(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(self, nbytes)


class Stream:
    """One CUDA stream; copies and kernels queued on it run in order."""

    def __init__(self, cuda: CudaRuntime) -> None:
        self._cuda = cuda
        self._stream: Any = cuda.check("cudaStreamCreate", cuda.rt.cudaStreamCreate())

    @property
    def handle(self) -> int:
        """The raw ``cudaStream_t`` as the integer TensorRT's ``execute_async_v3`` takes.

        ``int()`` of cuda-python's handle types is the handle's value; their ``getPtr()`` is
        the address of the Python object's storage for it, which is not a stream.
        """
        return int(self._stream)

    def upload(self, device: DeviceBuffer, host: PinnedBuffer, nbytes: int) -> None:
        self._copy(device.ptr, host.ptr, nbytes, "cudaMemcpyHostToDevice",
                   min(device.nbytes, host.nbytes))

    def download(self, host: PinnedBuffer, device: DeviceBuffer, nbytes: int) -> None:
        self._copy(host.ptr, device.ptr, nbytes, "cudaMemcpyDeviceToHost",
                   min(device.nbytes, host.nbytes))

    def _copy(self, dst: int, src: int, nbytes: int, kind: str, limit: int) -> None:
        if not 0 <= nbytes <= limit:
            raise CudaError(f"copy of {nbytes} bytes exceeds its {limit}-byte buffers")
        if nbytes == 0:
            return
        rt = self._cuda.rt
        self._cuda.check("cudaMemcpyAsync", rt.cudaMemcpyAsync(
            dst, src, nbytes, getattr(rt.cudaMemcpyKind, kind), self._stream))

    def synchronize(self) -> None:
        self._cuda.check("cudaStreamSynchronize", self._cuda.rt.cudaStreamSynchronize(
            self._stream))

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._cuda.check("cudaStreamDestroy", self._cuda.rt.cudaStreamDestroy(stream))


class PinnedBuffer:
    """Page-locked host memory, seen from numpy without a copy."""

    def __init__(self, cuda: CudaRuntime, nbytes: int) -> None:
        if nbytes <= 0:
            raise CudaError(f"pinned buffer of {nbytes} bytes")
        self._cuda = cuda
        self.nbytes = nbytes
        self.ptr: int = int(cuda.check("cudaMallocHost", cuda.rt.cudaMallocHost(nbytes)))
        raw = (ctypes.c_uint8 * nbytes).from_address(self.ptr)
        self._bytes = np.frombuffer(raw, dtype=np.uint8)

    def view(self, dtype: np.dtype[Any] | type, shape: tuple[int, ...]) -> np.ndarray:
        """The first ``prod(shape)`` elements as an array of ``shape`` (no copy)."""
        dt = np.dtype(dtype)
        need = math.prod(shape) * dt.itemsize
        if need > self.nbytes:
            raise CudaError(f"shape {shape} of {dt} needs {need} bytes; buffer holds "
                            f"{self.nbytes}")
        return self._bytes[:need].view(dt).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._bytes = np.zeros(0, np.uint8)  # no view may outlive the memory
            self._cuda.check("cudaFreeHost", self._cuda.rt.cudaFreeHost(ptr))


class DeviceBuffer:
    def __init__(self, cuda: CudaRuntime, nbytes: int) -> None:
        if nbytes <= 0:
            raise CudaError(f"device buffer of {nbytes} bytes")
        self._cuda = cuda
        self.nbytes = nbytes
        self.ptr: int = int(cuda.check("cudaMalloc", cuda.rt.cudaMalloc(nbytes)))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._cuda.check("cudaFree", self._cuda.rt.cudaFree(ptr))


@dataclass
class TensorBuffers:
    """One tensor's device memory and its pinned host mirror, both sized for its largest shape."""

    name: str
    dtype: np.dtype[Any]
    max_shape: tuple[int, ...]
    host: PinnedBuffer
    device: DeviceBuffer

    @classmethod
    def allocate(cls, cuda: CudaRuntime, name: str, dtype: np.dtype[Any],
                 max_shape: tuple[int, ...]) -> TensorBuffers:
        nbytes = max(1, math.prod(max_shape)) * dtype.itemsize
        host = cuda.pinned(nbytes)
        try:
            device = cuda.device_buffer(nbytes)
        except BaseException:
            host.free()
            raise
        return cls(name, dtype, max_shape, host, device)

    def free(self) -> None:
        self.host.free()
        self.device.free()
