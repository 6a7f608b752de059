"""A stand-in for cuda-python's runtime module that keeps "device" memory in host memory.

No GPU exists on the development machines, so the CUDA wrapper and the TensorRT session are
driven through this: it implements the calls edge/inference/cuda_rt.py makes, with cuda-python's
calling convention (every call returns a tuple starting with a ``cudaError_t``), on ctypes
buffers. ``blocks`` maps live allocations by address, ``copies`` records every copy.
"""

from __future__ import annotations

import ctypes
import enum
import types


class _Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidValue = 1


class _Kind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


def host_cudart(fail: set[str] | None = None) -> types.SimpleNamespace:
    """A stand-in for cuda-python's runtime module, backed by host memory (no GPU here)."""
    fail = fail or set()
    blocks: dict[int, ctypes.Array[ctypes.c_char]] = {}
    freed: list[int] = []
    copies: list[tuple[str, int]] = []

    def alloc(name: str, size: int) -> tuple[_Err, int]:
        if name in fail:
            return _Err.cudaErrorMemoryAllocation, 0
        block = ctypes.create_string_buffer(size)
        blocks[ctypes.addressof(block)] = block
        return _Err.cudaSuccess, ctypes.addressof(block)

    def free(ptr: int) -> tuple[_Err]:
        if ptr not in blocks:
            return (_Err.cudaErrorInvalidValue,)
        del blocks[ptr]
        freed.append(ptr)
        return (_Err.cudaSuccess,)

    def memcpy(dst: int, src: int, count: int, kind: _Kind, stream: object) -> tuple[_Err]:
        ctypes.memmove(dst, src, count)
        copies.append((kind.name, count))
        return (_Err.cudaSuccess,)

    class Props:
        name = b"Orin (nvgpu)\0\0\0"
        major, minor = 8, 7
        totalGlobalMem = 7 * 1024 ** 3  # cuda-python's field name

    return types.SimpleNamespace(
        cudaError_t=_Err, cudaMemcpyKind=_Kind, blocks=blocks, freed=freed, copies=copies,
        cudaGetErrorString=lambda err: (_Err.cudaSuccess, b"out of memory"),
        cudaMallocHost=lambda size: alloc("cudaMallocHost", size),
        cudaMalloc=lambda size: alloc("cudaMalloc", size),
        cudaFreeHost=free, cudaFree=free, cudaMemcpyAsync=memcpy,
        cudaStreamCreate=lambda: (_Err.cudaSuccess, 0x5EED),
        cudaStreamSynchronize=lambda stream: (_Err.cudaSuccess,),
        cudaStreamDestroy=lambda stream: (_Err.cudaSuccess,),
        cudaGetDevice=lambda: (_Err.cudaSuccess, 0),
        cudaGetDeviceProperties=lambda index: (_Err.cudaSuccess, Props()),
        cudaRuntimeGetVersion=lambda: (_Err.cudaSuccess, 12060),
        cudaDriverGetVersion=lambda: (_Err.cudaSuccess, 12020),
    )
