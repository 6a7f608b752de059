"""The TensorRT engine cache: keys, atomic writes, stale and corrupt entries, one builder.

The cache is plain files and knows nothing of TensorRT, so all of it runs here on real files;
``build`` and ``load`` are small functions standing in for TensorRT's builder and runtime (which
need a GPU): the bytes they make are what the cache stores and checks.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import pytest

from edge.inference import engine_cache as ec
from edge.inference.engine_cache import (
    EngineCache,
    EngineKey,
    EngineLoadError,
    ShapeRange,
    detector_profile,
    embedder_profile,
    get_or_build,
)

LOGGER = "edge.inference.engine_cache"


def _key(**changes: object) -> EngineKey:
    base = EngineKey(model="sface-2021dec.fp32", onnx_sha256="7f71" * 16, tensorrt="10.3.0.30",
                     gpu="Orin (nvgpu)", compute_capability="8.7", precision="fp16",
                     shapes=EngineKey.shapes_of(embedder_profile("data")))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "00" * 32},
    {"tensorrt": "8.6.2.3"},
    {"gpu": "NVIDIA GeForce RTX 3060"},
    {"compute_capability": "7.2"},
    {"precision": "fp32"},
    {"shapes": EngineKey.shapes_of(embedder_profile("data", max_batch=8))},
])
def test_every_part_of_the_key_changes_the_engine_file(change: dict[str, object]) -> None:
    cache = EngineCache(Path("/nonexistent"))
    assert cache.engine_path(_key(**change)) != cache.engine_path(_key())
    assert _key(**change).digest() != _key().digest()


def test_the_key_is_stable_and_names_the_model() -> None:
    assert _key().digest() == _key().digest()
    assert EngineCache(Path("/c")).engine_path(_key()).name.startswith("sface-2021dec.fp32.")


def test_store_then_load_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    assert cache.load(_key()) is None
    assert cache.store(_key(), b"engine-bytes" * 100)
    assert cache.load(_key()) == b"engine-bytes" * 100
    names = sorted(p.name for p in cache.dir.iterdir())
    assert [n for n in names if n.startswith(".") and not n.endswith(".lock")] == []  # no temps
    assert cache.meta_path(_key()).is_file()


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-meta", "bad-json", "other-key"])
def test_a_corrupt_entry_is_removed_with_a_warning(tmp_path: Path, damage: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path)
    key = _key()
    cache.store(key, b"x" * 4096)
    engine, meta = cache.engine_path(key), cache.meta_path(key)
    if damage == "truncate":
        engine.write_bytes(b"x" * 1000)  # a copy cut short
    elif damage == "flip":
        engine.write_bytes(b"x" * 4095 + b"y")
    elif damage == "no-meta":
        meta.unlink()  # a crash between the engine and its metadata
    elif damage == "bad-json":
        meta.write_text("{not json")
    else:
        meta.write_text(meta.read_text().replace("10.3.0.30", "10.3.0.31"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert cache.load(key) is None
    assert "engine cache entry corrupt; rebuilding" in caplog.text
    assert not engine.exists() and not meta.exists()


def test_a_stale_entry_says_what_changed_and_goes_once_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path)
    old, new = _key(tensorrt="8.6.2.3"), _key(tensorrt="10.3.0.30")
    cache.store(old, b"old engine")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert cache.load(new) is None
    stale = [r for r in caplog.records if r.getMessage() == "engine cache stale; rebuilding"]
    assert stale and getattr(stale[0], "changed", "") == "tensorrt 8.6.2.3 -> 10.3.0.30"
    cache.store(new, b"new engine")
    assert not cache.engine_path(old).exists() and not cache.meta_path(old).exists()
    assert cache.load(new) == b"new engine"


def test_an_unwritable_cache_warns_and_the_engine_still_works(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = EngineCache(blocker / "engines")
    builds: list[int] = []
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine, built = get_or_build(cache, _key(), lambda: builds.append(1) or b"e",
                                     lambda data: data.decode())
    assert (engine, built, builds) == ("e", True, [1])
    assert "engine not cached; the next start rebuilds it" in caplog.text


def test_get_or_build_builds_once_then_loads_from_the_cache(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        return b"serialized"

    first = get_or_build(cache, _key(), build, lambda data: ("engine", data))
    second = get_or_build(cache, _key(), build, lambda data: ("engine", data))
    assert first == (("engine", b"serialized"), True)
    assert second == (("engine", b"serialized"), False)
    assert builds == [1]


def test_a_cached_engine_the_runtime_refuses_is_rebuilt(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path)
    cache.store(_key(), b"from another build")

    def load(data: bytes) -> bytes:
        if data != b"fresh":
            raise EngineLoadError("TensorRT refused the serialized engine")
        return data

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine, built = get_or_build(cache, _key(), lambda: b"fresh", load)
    assert (engine, built) == (b"fresh", True)
    assert "cached engine refused by the runtime; rebuilding" in caplog.text
    assert cache.load(_key()) == b"fresh"


def test_a_fresh_engine_that_does_not_load_is_an_error_and_is_not_cached(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def load(data: bytes) -> bytes:
        raise EngineLoadError("refused")

    with pytest.raises(EngineLoadError):
        get_or_build(cache, _key(), lambda: b"bad", load)
    assert not cache.engine_path(_key()).exists()


def test_two_builders_at_once_build_one_engine(tmp_path: Path) -> None:
    """The daemon and ``models build-engines`` may start together: the second waits and loads."""
    cache = EngineCache(tmp_path)
    started, release = threading.Event(), threading.Event()
    builds: list[int] = []
    results: list[bool] = []

    def build() -> bytes:
        builds.append(1)
        started.set()
        release.wait(10)
        return b"engine"

    def worker() -> None:
        results.append(get_or_build(cache, _key(), build, lambda d: d)[1])

    first = threading.Thread(target=worker)
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=worker)
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert builds == [1] and sorted(results) == [False, True]


def test_waiting_on_another_build_is_reported_like_a_build(tmp_path: Path) -> None:
    """The daemon blocked behind ``build-engines`` must keep extending systemd's start timeout."""
    cache = EngineCache(tmp_path)
    starts: list[str] = []
    waiting, release = threading.Event(), threading.Event()

    def hook(model: str, started: bool) -> None:
        if started:
            starts.append(model)
            if len(starts) == 2:  # the second thread is now blocked on the lock
                waiting.set()

    def build() -> bytes:
        release.wait(10)
        return b"engine"

    with ec.build_hook(hook):
        first = threading.Thread(target=get_or_build, args=(cache, _key(), build, lambda d: d))
        first.start()
        while not starts:
            time.sleep(0.01)
        second = threading.Thread(target=get_or_build, args=(cache, _key(), build, lambda d: d))
        second.start()
        assert waiting.wait(10)
        release.set()
        first.join(10)
        second.join(10)
    assert starts == [_key().model, _key().model]


def test_build_hooks_see_start_and_end_and_cannot_break_a_build(tmp_path: Path) -> None:
    seen: list[tuple[str, bool]] = []

    def broken(model: str, started: bool) -> None:
        raise RuntimeError("reporting failed")

    with ec.build_hook(lambda m, s: seen.append((m, s))), ec.build_hook(broken):
        get_or_build(EngineCache(tmp_path), _key(), lambda: b"e", lambda d: d)
        get_or_build(EngineCache(tmp_path), _key(), lambda: b"e", lambda d: d)  # cached
    assert seen == [("sface-2021dec.fp32", True), ("sface-2021dec.fp32", False)]
    get_or_build(EngineCache(tmp_path), _key(model="other"), lambda: b"e", lambda d: d)
    assert len(seen) == 2  # hooks are gone after their block


def test_timing_cache_is_per_tensorrt_and_gpu(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    a = cache.timing_path("10.3.0.30", "Orin (nvgpu)", "8.7")
    assert a != cache.timing_path("8.6.2.3", "Orin (nvgpu)", "8.7")
    assert a != cache.timing_path("10.3.0.30", "Xavier", "7.2")
    assert "/" not in a.name and " " not in a.name
    assert cache.load_timing(a) == b""
    cache.store_timing(a, b"timings")
    assert cache.load_timing(a) == b"timings"


def test_profiles_cover_what_the_pipeline_asks_for() -> None:
    (det,) = detector_profile("input", 640).values()
    assert det.contains((1, 3, 384, 640))  # a 16:9 frame at the default size
    assert det.contains((1, 3, 192, 192))  # the orientation sweep
    assert det.contains((1, 3, 800, 800))  # a rescue upscale (1.25 x input_size)
    assert not det.contains((1, 3, 832, 832)) and not det.contains((2, 3, 384, 640))
    assert det.opt == (1, 3, 384, 640)
    (emb,) = embedder_profile("data").values()
    assert all(emb.contains((n, 3, 112, 112)) for n in range(1, 17))
    assert not emb.contains((17, 3, 112, 112))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeRange((2, 3), (1, 3), (4, 3))


def test_discarding_a_model_removes_its_engines_only(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    mine, other = _key(), _key(model="yunet-2023mar.fp32")
    for key in (mine, other):
        cache.store(key, b"engine of " + key.model.encode())
    (tmp_path / "ort-trt").mkdir()  # onnxruntime's own cache beside ours is not touched
    assert cache.discard_model(mine.model) == 1
    assert cache.load(mine) is None and not list(tmp_path.glob(f"{mine.model}.*"))
    assert cache.load(other) == b"engine of yunet-2023mar.fp32"
    assert (tmp_path / "ort-trt").is_dir()
