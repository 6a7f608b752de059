"""The cuda-python wrapper: pinned buffers seen from numpy, checked calls, one stream.

No GPU exists here, so most tests drive the wrapper through a stand-in for ``cudart`` that
keeps "device" memory in host memory (ctypes) and implements the calls the wrapper makes with
cuda-python's calling convention: every call returns a tuple that starts with a ``cudaError_t``.
The last test runs the same calls on the real runtime where ``cuda.bindings`` imports and a
device answers (a Jetson), and is skipped with the reason elsewhere.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cuda_standin import host_cudart

from edge.errors import BackendError
from edge.inference.cuda_rt import CudaError, CudaRuntime, TensorBuffers, import_cudart


def test_pinned_views_share_memory_and_copies_round_trip_through_the_device() -> None:
    rt = host_cudart()
    cuda = CudaRuntime(rt)
    buffers = TensorBuffers.allocate(cuda, "data", np.dtype(np.float32), (16, 3, 112, 112))
    stream = cuda.stream()
    assert stream.handle == 0x5EED
    batch = np.random.default_rng(1).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    view = buffers.host.view(np.float32, batch.shape)
    np.copyto(view, batch)
    assert buffers.host.view(np.float32, batch.shape) is not view  # views, not one cached array
    np.testing.assert_array_equal(buffers.host.view(np.float32, batch.shape), batch)
    stream.upload(buffers.device, buffers.host, view.nbytes)
    view[...] = 0  # the host copy is overwritten; the "device" keeps the batch
    stream.download(buffers.host, buffers.device, view.nbytes)
    stream.synchronize()
    np.testing.assert_array_equal(view, batch)
    assert rt.copies == [("cudaMemcpyHostToDevice", batch.nbytes),
                         ("cudaMemcpyDeviceToHost", batch.nbytes)]  # only what was used


def test_a_copy_or_view_larger_than_its_buffer_is_refused() -> None:
    cuda = CudaRuntime(host_cudart())
    buffers = TensorBuffers.allocate(cuda, "data", np.dtype(np.float32), (1, 3, 112, 112))
    with pytest.raises(CudaError, match="needs"):
        buffers.host.view(np.float32, (2, 3, 112, 112))
    with pytest.raises(CudaError, match="exceeds"):
        cuda.stream().upload(buffers.device, buffers.host, buffers.host.nbytes + 4)


def test_failed_calls_name_the_call_and_the_error() -> None:
    cuda = CudaRuntime(host_cudart(fail={"cudaMalloc"}))
    with pytest.raises(CudaError, match=r"cudaMalloc failed: cudaErrorMemoryAllocation "
                                        r"\(out of memory\)"):
        cuda.device_buffer(1024)


def test_a_failed_device_allocation_frees_its_host_half() -> None:
    rt = host_cudart(fail={"cudaMalloc"})
    with pytest.raises(CudaError):
        TensorBuffers.allocate(CudaRuntime(rt), "data", np.dtype(np.float32), (4, 4))
    assert rt.blocks == {} and len(rt.freed) == 1


def test_free_is_idempotent_and_device_info_is_decoded() -> None:
    rt = host_cudart()
    cuda = CudaRuntime(rt)
    buffers = TensorBuffers.allocate(cuda, "x", np.dtype(np.float32), (8,))
    buffers.free()
    buffers.free()
    assert len(rt.freed) == 2 and rt.blocks == {}
    info = cuda.device()
    assert (info.name, info.compute_capability) == ("Orin (nvgpu)", "8.7")
    assert (cuda.runtime_version(), cuda.driver_version()) == ("12.6", "12.2")


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def no_cuda_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean slate for importing the ``cuda`` packages written by a test."""
    if importlib.util.find_spec("cuda") is not None:
        pytest.skip("a real cuda-python is installed here; its modules would be shadowed")
    for name in [n for n in sys.modules if n == "cuda" or n.startswith("cuda.")]:
        monkeypatch.delitem(sys.modules, name)
    yield monkeypatch
    for name in [n for n in sys.modules if n == "cuda" or n.startswith("cuda.")]:
        del sys.modules[name]


@pytest.mark.parametrize(("files", "expected"), [
    ({"cuda/__init__.py": "", "cuda/cudart.py": "which = 'cudart'\n"}, "cudart"),
    ({"cuda/__init__.py": "", "cuda/cudart.py": "which = 'cudart'\n",
      "cuda/bindings/__init__.py": "", "cuda/bindings/runtime.py": "which = 'bindings'\n"},
     "bindings"),
], ids=["cuda-python before 12.6", "cuda-python 12.6 on"])
def test_the_runtime_module_is_found_under_its_new_or_its_old_name(
        no_cuda_modules: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, str],
        expected: str) -> None:
    """Real packages on ``sys.path`` with cuda-python's two layouts (no CUDA needed to import)."""
    no_cuda_modules.syspath_prepend(str(_package(tmp_path, files)))
    assert import_cudart().which == expected


def test_without_cuda_python_the_reason_names_both_modules(
        no_cuda_modules: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = _package(tmp_path, {
        "cuda/__init__.py": "",
        "cuda/bindings/__init__.py": "",
        "cuda/bindings/runtime.py": "raise RuntimeError('libcudart.so.12: cannot open')\n"})
    no_cuda_modules.syspath_prepend(str(broken))
    with pytest.raises(BackendError) as info:
        import_cudart()
    text = str(info.value)
    assert "cuda.bindings.runtime: RuntimeError: libcudart.so.12: cannot open" in text
    assert "cuda.cudart:" in text


@pytest.mark.jetson
def test_the_real_cuda_runtime_round_trips_a_buffer() -> None:
    try:
        module = import_cudart()
    except Exception as exc:
        pytest.skip(f"cuda-python does not import here: {exc}")
    cuda = CudaRuntime(module)
    try:
        cuda.device()
    except CudaError as exc:
        pytest.skip(f"no CUDA device answers here: {exc}")
    buffers = TensorBuffers.allocate(cuda, "x", np.dtype(np.float32), (16, 3, 112, 112))
    stream = cuda.stream()
    data = np.arange(16 * 3 * 112 * 112, dtype=np.float32).reshape(16, 3, 112, 112)
    view = buffers.host.view(np.float32, data.shape)
    np.copyto(view, data)
    stream.upload(buffers.device, buffers.host, view.nbytes)
    view[...] = 0
    stream.download(buffers.host, buffers.device, view.nbytes)
    stream.synchronize()
    np.testing.assert_array_equal(view, data)
    buffers.free()
    stream.close()
