"""The cache of graphs onnxruntime optimised for this CPU: faster starts, never wrong answers."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.config import InferenceConfig
from edge.inference import compiled, create_session
from edge.inference.ort import OrtSession
from edge.models import load_manifest
from edge.models.manifest import prepared_path


@pytest.fixture
def yunet(models_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared YuNet graph, so each test owns its cache dir."""
    src = prepared_path(models_dir, load_manifest().model("detector"))
    dst = tmp_path / "models" / src.name
    dst.parent.mkdir()
    shutil.copy2(src, dst)
    return dst


def _open(model: Path, cache_dir: Path | None) -> OrtSession:
    return OrtSession(model, threads=1, providers=["CPUExecutionProvider"],
                      backend="onnxruntime-cpu", cache_dir=cache_dir)


def _outputs(session: OrtSession) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    blob = rng.uniform(0, 255, (1, 3, 96, 128)).astype(np.float32)
    return session.run({session.input_names[0]: blob})


def _cached_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob(f"*{compiled.SUFFIX}"))


def test_second_start_loads_the_saved_graph_with_identical_results(yunet: Path) -> None:
    cache_dir = yunet.parent / "compiled"
    first = _open(yunet, cache_dir)
    assert not first.cached
    files = _cached_files(cache_dir)
    assert len(files) == 1 and files[0].stat().st_size > 0
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]
    second = _open(yunet, cache_dir)
    assert second.cached
    plain = _open(yunet, None)
    for a, b, c in zip(_outputs(first), _outputs(second), _outputs(plain), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_a_truncated_cache_file_is_rebuilt(yunet: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache_dir = yunet.parent / "compiled"
    want = _outputs(_open(yunet, None))
    _open(yunet, cache_dir)
    (path,) = _cached_files(cache_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # as after a crash
    with caplog.at_level(logging.WARNING, logger="edge.inference.ort"):
        session = _open(yunet, cache_dir)
    assert not session.cached
    assert "compiled graph unusable" in caplog.text
    for a, b in zip(_outputs(session), want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _open(yunet, cache_dir).cached  # the rebuilt file is whole again


def test_a_changed_model_file_gets_a_new_entry_and_the_old_one_goes(yunet: Path) -> None:
    cache_dir = yunet.parent / "compiled"
    _open(yunet, cache_dir)
    (old,) = _cached_files(cache_dir)
    st = yunet.stat()
    os.utime(yunet, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not _open(yunet, cache_dir).cached
    (new,) = _cached_files(cache_dir)
    assert new != old


def test_an_unwritable_cache_location_just_means_no_cache(yunet: Path) -> None:
    blocker = yunet.parent / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")  # mkdir below a file fails, even for root
    session = _open(yunet, blocker / "compiled")
    assert not session.cached
    assert _outputs(session)


def test_cache_off_in_config_writes_nothing(yunet: Path) -> None:
    session = create_session(yunet, InferenceConfig(backend="onnxruntime-cpu", cache=False))
    assert _outputs(session)
    assert not (yunet.parent / "compiled").exists()
    create_session(yunet, InferenceConfig(backend="onnxruntime-cpu"))
    assert len(_cached_files(yunet.parent / "compiled")) == 1


def test_the_key_follows_runtime_options_and_cpu(yunet: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = compiled.cache_key(yunet, "1.0", "optimization=all")
    assert key == compiled.cache_key(yunet, "1.0", "optimization=all")
    assert key != compiled.cache_key(yunet, "1.1", "optimization=all")
    assert key != compiled.cache_key(yunet, "1.0", "optimization=basic")
    monkeypatch.setattr(compiled, "cpu_signature", lambda: "aarch64|Cortex-A78AE|asimd fp16")
    assert key != compiled.cache_key(yunet, "1.0", "optimization=all")


def test_cpu_signature_names_the_machine() -> None:
    sig = compiled.cpu_signature()
    assert sig.split("|")[0] == os.uname().machine
    if Path("/proc/cpuinfo").is_file():
        assert len(sig.split("|")[2]) > 0  # the feature flags decide the kernels
