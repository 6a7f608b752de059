"""Backend selection: ``auto`` falls back to what loads and says why; a named backend is exact.

Everything runs on this machine's real onnxruntime (the CPU build). Where a test needs the GPU
build of onnxruntime, only its list of providers is replaced (the GPU build cannot be installed
here), and the test says so.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import types
from pathlib import Path

import onnxruntime as ort
import pytest

from edge.config import Config, InferenceConfig
from edge.errors import BackendError
from edge.inference import backend as backend_mod
from edge.inference import create_session
from edge.inference.backend import engine_dir
from edge.inference.engine_cache import embedder_profile
from edge.inference.ort import OrtSession, gpu_providers
from edge.models import load_manifest, resolve_prepared


@pytest.fixture(scope="module")
def sface(session_config: Config) -> Path:
    return resolve_prepared(session_config.models.dir, "embedder", load_manifest())[1]


@pytest.fixture(scope="module")
def yunet(session_config: Config) -> Path:
    return resolve_prepared(session_config.models.dir, "detector", load_manifest())[1]


def test_auto_takes_the_cpu_here_and_logs_why_the_gpu_backends_were_skipped(
        yunet: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edge.inference.backend"):
        session = create_session(yunet, InferenceConfig(backend="auto"))
    assert session.backend == "onnxruntime-cpu"
    skipped = {getattr(r, "backend", ""): getattr(r, "reason", "") for r in caplog.records
               if r.getMessage() == "backend skipped"}
    assert set(skipped) == {"tensorrt", "onnxruntime-gpu"}
    assert "TensorRT is not importable" in skipped["tensorrt"]
    assert "no CUDA or TensorRT execution provider" in skipped["onnxruntime-gpu"]
    selected = [r for r in caplog.records if r.getMessage() == "backend selected"]
    assert [getattr(r, "backend", "") for r in selected] == ["onnxruntime-cpu"]


@pytest.mark.parametrize(("name", "message"), [
    ("tensorrt", "TensorRT is not importable"),
    ("onnxruntime-gpu", "no CUDA or TensorRT execution provider"),
])
def test_a_named_gpu_backend_does_not_fall_back(yunet: Path, name: str, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        create_session(yunet, InferenceConfig(backend=name))  # type: ignore[arg-type]


def test_a_stubs_only_tensorrt_package_is_not_taken_for_tensorrt(
        yunet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a site-packages with tensorrt-stubs in it would import: a namespace, no Builder."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(BackendError, match="type stubs only"):
        create_session(yunet, InferenceConfig(backend="tensorrt"))


def test_tensorrt_failing_inside_pybind_falls_back_to_the_cpu(
        yunet: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No CUDA at run time: trt.Runtime(...) raises pybind11's TypeError, not a BackendError.
    (A stand-in module: real TensorRT cannot exist here.)"""
    fake = types.ModuleType("tensorrt")
    fake.Builder = object  # type: ignore[attr-defined]
    backend_fake = types.ModuleType("edge.inference.tensorrt")

    def open_session(*args: object) -> None:
        raise TypeError("__init__(): factory function returned nullptr")

    backend_fake.open_session = open_session  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setitem(sys.modules, "edge.inference.tensorrt", backend_fake)
    import edge.inference

    monkeypatch.setattr(edge.inference, "tensorrt", backend_fake, raising=False)
    with caplog.at_level(logging.INFO, logger="edge.inference.backend"):
        session = create_session(yunet, InferenceConfig(backend="auto"))
    assert session.backend == "onnxruntime-cpu"
    skipped = {getattr(r, "backend", ""): getattr(r, "reason", "") for r in caplog.records
               if r.getMessage() == "backend skipped"}
    assert "factory function returned nullptr" in skipped["tensorrt"]
    with pytest.raises(BackendError, match="TensorRT failed: TypeError"):
        create_session(yunet, InferenceConfig(backend="tensorrt"))


def test_nothing_loads_names_every_backend_and_its_reason(
        tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(BackendError) as info:
        create_session(broken, InferenceConfig(backend="auto", cache=False))
    text = str(info.value)
    for name in ("tensorrt:", "onnxruntime-gpu:", "onnxruntime-cpu:"):
        assert name in text


def test_onnxruntime_that_drops_its_gpu_providers_is_not_a_gpu_backend(sface: Path) -> None:
    """The silent fallback of onnxruntime-gpu (missing cuDNN...) ends on the CPU: refused."""
    with pytest.raises(BackendError, match="dropped its CUDA and TensorRT providers"):
        OrtSession(sface, threads=1, providers=["CPUExecutionProvider"],
                   backend="onnxruntime-gpu")


def test_gpu_provider_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The provider list the GPU build of onnxruntime (not installable here) would advertise."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    providers = gpu_providers(precision="fp16", cache_dir=tmp_path, workspace_mb=512,
                              profile=embedder_profile("data"))
    (trt_name, trt_opts), (cuda_name, cuda_opts), last = providers
    assert (trt_name, cuda_name, last) == ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                           "CPUExecutionProvider")
    assert trt_opts["trt_fp16_enable"] == "True"
    assert trt_opts["trt_engine_cache_enable"] == "True"
    assert trt_opts["trt_engine_cache_path"] == str(tmp_path)
    assert trt_opts["trt_timing_cache_path"] == str(tmp_path)
    assert trt_opts["trt_max_workspace_size"] == str(512 * 1024 * 1024)
    assert trt_opts["trt_profile_min_shapes"] == "data:1x3x112x112"
    assert trt_opts["trt_profile_opt_shapes"] == "data:1x3x112x112"
    assert trt_opts["trt_profile_max_shapes"] == "data:16x3x112x112"
    assert cuda_opts["arena_extend_strategy"] == "kSameAsRequested"
    fp32 = gpu_providers(precision="fp32")[0]
    assert isinstance(fp32, tuple) and fp32[1]["trt_fp16_enable"] == "False"
    assert "trt_engine_cache_path" not in fp32[1]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert gpu_providers() == []


def test_engine_dir_defaults_beside_the_models(sface: Path, tmp_path: Path) -> None:
    assert engine_dir(InferenceConfig(), sface.parent) == sface.parent / "engines"
    assert engine_dir(InferenceConfig(engine_dir=str(tmp_path)), sface.parent) == tmp_path


def test_default_profiles_come_from_the_graphs(sface: Path, yunet: Path) -> None:
    (emb,) = backend_mod.default_profile(sface).values()
    (det,) = backend_mod.default_profile(yunet).values()
    assert emb.max == (16, 3, 112, 112)
    assert det.opt == (1, 3, 384, 640)


def test_precision_and_workspace_are_validated(make_config) -> None:  # type: ignore[no-untyped-def]
    from edge.errors import ConfigError

    cfg = make_config('[inference]\nprecision = "fp32"\nworkspace_mb = 256\n')
    assert (cfg.inference.precision, cfg.inference.workspace_mb) == ("fp32", 256)
    with pytest.raises(ConfigError, match="precision"):
        make_config('[inference]\nprecision = "int8"\n')
    with pytest.raises(ConfigError, match="workspace_mb"):
        make_config("[inference]\nworkspace_mb = 8\n")
    assert dataclasses.replace(cfg.inference, backend="tensorrt").precision == "fp32"


def test_build_engines_without_a_gpu_backend_says_why(
        make_config, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from edge.cli import main

    cfg = make_config("")
    path = Path(cfg.source)
    assert main(["--config", str(path), "models", "build-engines"]) == 1
    assert "TensorRT is not importable" in capsys.readouterr().err
    assert main(["--config", str(path), "models", "build-engines",
                 "--backend", "onnxruntime-gpu"]) == 1
    assert "no CUDA or TensorRT execution provider" in capsys.readouterr().err
    path.write_text(path.read_text() + '[inference]\nbackend = "onnxruntime-cpu"\n')
    assert main(["--config", str(path), "models", "build-engines"]) == 1
    assert "builds no engines" in capsys.readouterr().err
