"""TensorRTSession's plumbing, run end to end without a GPU.

TensorRT and CUDA cannot exist here, so both are stand-ins (tests/tensorrt_standin.py runs the
"engine" with onnxruntime and checks every device read and write against its allocation;
tests/cuda_standin.py keeps device memory in host memory). What is real is the code under
test: edge/inference/tensorrt.py's shape handling, buffer sizing, address binding, copies and
its use of the engine cache. The numerical behaviour of a real TensorRT engine is the contract
suite's job on a device (tests/test_backend_contract.py, ``pytest -m jetson``).
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tensorrt_standin
from cuda_standin import host_cudart

from edge.config import Config
from edge.errors import BackendError
from edge.inference.cuda_rt import CudaRuntime
from edge.inference.engine_cache import EngineCache, detector_profile, embedder_profile
from edge.inference.ort import OrtSession
from edge.models import load_manifest, resolve_prepared


@pytest.fixture
def cudart() -> object:
    return host_cudart()


@pytest.fixture
def trt_backend(cudart: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_standin.module(cudart))
    monkeypatch.delitem(sys.modules, "edge.inference.tensorrt", raising=False)
    yield importlib.import_module("edge.inference.tensorrt")
    sys.modules.pop("edge.inference.tensorrt", None)


@pytest.fixture(scope="module")
def models(session_config: Config) -> dict[str, Path]:
    manifest = load_manifest()
    return {role: resolve_prepared(session_config.models.dir, role, manifest)[1]
            for role in ("detector", "embedder")}


def _reference(path: Path) -> OrtSession:
    return OrtSession(path, threads=1, providers=["CPUExecutionProvider"], backend="reference")


def _blob(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def test_detector_runs_at_every_size_of_its_profile(trt_backend: ModuleType, cudart: object,
                                                    models: dict[str, Path]) -> None:
    profile = detector_profile("input", 640)
    session = trt_backend.TensorRTSession(
        tensorrt_standin.serialize(models["detector"], profile), CudaRuntime(cudart), profile)
    reference = _reference(models["detector"])
    assert session.input_names == ["input"]
    assert sorted(session.output_names) == sorted(reference.output_names)
    allocations = len(cudart.blocks)  # type: ignore[attr-defined]
    for seed, shape in enumerate([(1, 3, 384, 640), (1, 3, 192, 192), (1, 3, 800, 800),
                                  (1, 3, 32, 32), (1, 3, 384, 640)]):
        blob = _blob(shape, seed)
        names = ["cls_8", "bbox_32", "kps_16"]
        for got, want in zip(session.run({"input": blob}, names),
                             reference.run({"input": blob}, names), strict=True):
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(cudart.blocks) == allocations  # type: ignore[attr-defined]  # none per frame


def test_embedder_batches_and_results_are_copies(trt_backend: ModuleType,
                                                         cudart: object,
                                                         models: dict[str, Path]) -> None:
    profile = embedder_profile("data")
    session = trt_backend.TensorRTSession(
        tensorrt_standin.serialize(models["embedder"], profile), CudaRuntime(cudart), profile)
    reference = _reference(models["embedder"])
    results = []
    for batch in (1, 3, 16, 2):  # every size 1-16 is the contract suite's (-m jetson)
        blob = _blob((batch, 3, 112, 112), batch)
        (got,) = session.run({"data": blob})
        (want,) = reference.run({"data": blob})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        results.append((got, want))
    # Earlier results are not views of the reused pinned buffers.
    for got, want in results:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Each run copies only the bytes its batch uses, up and down.
    copies = cudart.copies  # type: ignore[attr-defined]
    assert ("cudaMemcpyHostToDevice", 3 * 112 * 112 * 4) in copies
    assert ("cudaMemcpyDeviceToHost", 128 * 4) in copies


def test_shapes_outside_the_profile_and_missing_inputs_are_refused(
        trt_backend: ModuleType, cudart: object, models: dict[str, Path]) -> None:
    profile = embedder_profile("data")
    session = trt_backend.TensorRTSession(
        tensorrt_standin.serialize(models["embedder"], profile), CudaRuntime(cudart), profile)
    with pytest.raises(BackendError, match=r"outside the engine's profile 1x3x112x112\.\."
                                           r"16x3x112x112"):
        session.run({"data": _blob((17, 3, 112, 112))})
    with pytest.raises(BackendError, match="outside"):
        session.run({"data": _blob((1, 3, 96, 96))})
    with pytest.raises(BackendError, match="missing input 'data'"):
        session.run({"other": _blob((1, 3, 112, 112))})
    with pytest.raises(BackendError, match=r"unknown output\(s\) \['nope'\]"):
        session.run({"data": _blob((2, 3, 112, 112))}, ["nope"])
    # A refused call leaves the session as the last good one did: batch 4 after batch 2.
    assert session.run({"data": _blob((2, 3, 112, 112))})[0].shape == (2, 128)
    with pytest.raises(BackendError, match="outside"):
        session.run({"data": _blob((17, 3, 112, 112))})
    assert session.run({"data": _blob((4, 3, 112, 112))})[0].shape == (4, 128)
    session.close()
    assert cudart.blocks == {}  # type: ignore[attr-defined]


def test_bytes_the_runtime_cannot_read_are_an_engine_load_error(
        trt_backend: ModuleType, cudart: object) -> None:
    from edge.inference.engine_cache import EngineLoadError

    with pytest.raises(EngineLoadError, match="refused the serialized engine"):
        trt_backend.TensorRTSession(b"\x00garbage", CudaRuntime(cudart), {})


def test_open_session_builds_once_then_loads_and_rebuilds_a_refused_engine(
        trt_backend: ModuleType, cudart: object, models: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []

    def build_engine(onnx_path: Path, profile: dict, precision: str, workspace: int,
                     timing: bytes) -> tuple[bytes, bytes]:
        builds.append(precision)
        assert workspace == 256 * 1024 * 1024
        return tensorrt_standin.serialize(onnx_path, profile), timing + b"t"

    monkeypatch.setattr(trt_backend, "build_engine", build_engine)
    monkeypatch.setattr(trt_backend, "CudaRuntime", lambda: CudaRuntime(cudart))
    profile = embedder_profile("data")
    engines = tmp_path / "engines"
    first = trt_backend.open_session(models["embedder"], profile, "fp16", 256, engines)
    second = trt_backend.open_session(models["embedder"], profile, "fp16", 256, engines)
    assert builds == ["fp16"]
    blob = _blob((2, 3, 112, 112))
    np.testing.assert_array_equal(first.run({"data": blob})[0], second.run({"data": blob})[0])
    (entry,) = engines.glob("*.engine")
    assert entry.name.startswith("sface-2021dec.fp32.")
    assert list(engines.glob("timing.10.3.0.30.Orin_nvgpu_.sm8.7.cache"))
    trt_backend.open_session(models["embedder"], profile, "fp32", 256, engines)
    assert builds == ["fp16", "fp32"]  # another precision is another engine
    # An entry whose bytes are whole but which the runtime refuses is rebuilt.
    cache = EngineCache(engines)
    for meta in engines.glob("*.engine.json"):
        meta.unlink()
    for engine in engines.glob("*.engine"):
        engine.unlink()
    monkeypatch.setattr(trt_backend, "build_engine",
                        lambda *a: (b"\x00not an engine", b""))
    with pytest.raises(BackendError):
        trt_backend.open_session(models["embedder"], profile, "fp16", 256, engines)
    assert not list(cache.dir.glob("*.engine"))  # a fresh engine that does not load: not cached


def test_models_build_engines_builds_both_then_finds_them_cached(
        trt_backend: ModuleType, cudart: object, models: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edge.cli import main

    builds: list[str] = []

    def build_engine(onnx_path: Path, profile: dict, precision: str, workspace: int,
                     timing: bytes) -> tuple[bytes, bytes]:
        builds.append(onnx_path.name)
        return tensorrt_standin.serialize(onnx_path, profile), b""

    monkeypatch.setattr(trt_backend, "build_engine", build_engine)
    monkeypatch.setattr(trt_backend, "CudaRuntime", lambda: CudaRuntime(cudart))
    config = tmp_path / "config.toml"
    config.write_text(f'[models]\ndir = "{models["detector"].parent}"\n'
                      f'[inference]\nengine_dir = "{tmp_path / "engines"}"\n')
    argv = ["--config", str(config), "models", "build-engines", "--json"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["role"], r["backend"]) for r in rows] == [("detector", "tensorrt"),
                                                         ("embedder", "tensorrt")]
    assert builds == [models["detector"].name, models["embedder"].name]
    assert main(argv) == 0  # cached now
    assert len(builds) == 2
    assert main([*argv, "--force"]) == 0
    assert len(builds) == 4


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_models_build_engines_shows_progress_on_a_terminal(
        trt_backend: ModuleType, cudart: object, models: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    monkeypatch.setattr(trt_backend, "build_engine",
                        lambda onnx, profile, *_: (tensorrt_standin.serialize(onnx, profile), b""))
    monkeypatch.setattr(trt_backend, "CudaRuntime", lambda: CudaRuntime(cudart))
    config = tmp_path / "config.toml"
    config.write_text(f'[models]\ndir = "{models["detector"].parent}"\n'
                      f'[inference]\nengine_dir = "{tmp_path / "engines"}"\n')
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["--config", str(config), "models", "build-engines"]) == 0
    assert "build engines" in terminal.getvalue() and "2/2" in terminal.getvalue()
    out = capsys.readouterr().out
    assert out.count("ok ") == 2 and "build engines" not in out  # the bar stays off stdout


# -- building: what build_engine asks TensorRT's builder for (stand-in builder, no GPU) ---------

def _build_config() -> tuple[object, object]:
    """The network and builder config of the last build the stand-in saw."""
    return tensorrt_standin.Builder.builds[-1]


def test_engines_build_fp16_by_default_with_the_workspace_cap_profile_and_timing_cache(
        trt_backend: ModuleType, cudart: object, models: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_backend, "CudaRuntime", lambda: CudaRuntime(cudart))
    engines = tmp_path / "engines"
    session = trt_backend.open_session(models["embedder"], embedder_profile("data"), "fp16",
                                       256, engines)
    network, config = _build_config()
    assert network.flags == 0  # TensorRT 10: always explicit batch, no flag
    assert config.flags == {tensorrt_standin.BuilderFlag.FP16}
    assert config.pools == {tensorrt_standin.MemoryPoolType.WORKSPACE: 256 * 1024 * 1024}
    (profile,) = config.profiles
    assert profile.shapes == {"data": ((1, 3, 112, 112), (1, 3, 112, 112), (16, 3, 112, 112))}
    # The engine the build made loads and runs every batch size of its profile.
    reference = _reference(models["embedder"])
    for batch in (1, 16):
        blob = _blob((batch, 3, 112, 112), batch)
        np.testing.assert_allclose(session.run({"data": blob})[0],
                                   reference.run({"data": blob})[0], rtol=1e-4, atol=1e-4)
    (timing,) = engines.glob("timing.*.cache")
    first = timing.read_bytes()
    # FP32 is another engine, built with the first build's timing cache as its start.
    trt_backend.open_session(models["embedder"], embedder_profile("data"), "fp32", 256, engines)
    _, config = _build_config()
    assert config.flags == set()
    assert len(config.timing.entries) == 2 and timing.read_bytes() != first
    assert len(tensorrt_standin.Builder.builds) == 2


def test_a_gpu_without_fast_fp16_builds_fp32_and_says_so(
        trt_backend: ModuleType, models: dict[str, Path],
        caplog: pytest.LogCaptureFixture) -> None:
    tensorrt_standin.Builder.platform_has_fast_fp16 = False
    with caplog.at_level("WARNING", logger="edge.inference.tensorrt"):
        trt_backend.build_engine(models["embedder"], embedder_profile("data"), "fp16", 1 << 20,
                                 b"")
    assert _build_config()[1].flags == set()
    assert any("no fast FP16" in r.getMessage() for r in caplog.records)


def test_tensorrt_8_networks_ask_for_explicit_batch(
        cudart: object, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """JetPack 6.0's TensorRT 8.6 parses ONNX only into an explicit-batch network."""
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_standin.module(cudart, "8.6.2.3"))
    monkeypatch.delitem(sys.modules, "edge.inference.tensorrt", raising=False)
    try:
        backend = importlib.import_module("edge.inference.tensorrt")
        backend.build_engine(models["detector"], detector_profile("input", 640), "fp16",
                             1 << 20, b"")
    finally:
        sys.modules.pop("edge.inference.tensorrt", None)
    network, config = _build_config()
    assert network.flags == 1 << int(tensorrt_standin.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    (profile,) = config.profiles
    assert profile.shapes["input"] == ((1, 3, 32, 32), (1, 3, 384, 640), (1, 3, 800, 800))


@pytest.mark.parametrize("saved", [b"\x00truncated", tensorrt_standin.TIMING_MAGIC + b"{",
                                   tensorrt_standin.TIMING_MAGIC
                                   + b'{"tensorrt": "8.6.2.3", "entries": ["x"]}'])
def test_a_damaged_or_foreign_timing_cache_only_costs_the_head_start(
        trt_backend: ModuleType, models: dict[str, Path], saved: bytes,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="edge.inference.tensorrt"):
        plan, timing = trt_backend.build_engine(models["embedder"], embedder_profile("data"),
                                                "fp16", 1 << 20, saved)
    assert plan and timing.startswith(tensorrt_standin.TIMING_MAGIC)
    assert len(_build_config()[1].timing.entries) == 1  # started empty
    assert any("timing cache unusable" in r.getMessage() for r in caplog.records)


def test_an_unparsable_model_or_an_unbounded_input_is_a_backend_error(
        trt_backend: ModuleType, models: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08not a model")
    with pytest.raises(BackendError, match=r"cannot parse broken\.onnx"):
        trt_backend.build_engine(broken, {}, "fp16", 1 << 20, b"")
    with pytest.raises(BackendError, match=r"dynamic dimensions .* but no optimisation profile"):
        trt_backend.build_engine(models["embedder"], {}, "fp16", 1 << 20, b"")
