"""Built TensorRT engines on disk, so a device pays the minutes of a build once.

Why a key over exactly these things: an engine is only valid for the TensorRT version that built
it, the GPU it was tuned on (name and compute capability), the precision, the optimisation
profile's shapes and the ONNX file it came from (its sha256, not its name or mtime: Ansible may
copy the same bytes with a new mtime). Anything else changing gives a new key, so a device that
gets JetPack 6.2 over 6.0 rebuilds instead of loading an engine TensorRT would refuse or, worse,
run wrongly.

Why a metadata file beside each engine: it is written last, after the engine is complete and
fsynced, and holds the engine's own sha256. An engine without it (a crash mid-write), or whose
bytes do not match it (a truncated copy, a bit flip on an SD card), is corrupt: it is removed and
rebuilt with a warning, never loaded. An entry for the same model under another key is stale;
the warning says which part of the key changed (``tensorrt 8.6.2 -> 10.3.0``).

This module knows nothing of TensorRT itself, so everything here is tested on any machine; the
TensorRT backend supplies ``build`` and ``load`` callables.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge.errors import BackendError
from edge.models.fetch import write_atomic

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Bumped when the on-disk layout or what the key covers changes.
FORMAT = 1
ENGINE_SUFFIX = ".engine"
META_SUFFIX = ".engine.json"


class EngineLoadError(BackendError):
    """Cached engine bytes that the runtime refused (another build, damaged on disk)."""


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimisation profile: the smallest, the tuned-for and the largest shape."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"shape range of mixed ranks: {self.min} {self.opt} {self.max}")
        for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True):
            if not 1 <= lo <= mid <= hi:
                raise ValueError(f"shape range needs 1 <= min <= opt <= max: "
                                 f"{self.min} {self.opt} {self.max}")

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max, strict=True))

    def text(self) -> str:
        def dims(shape: tuple[int, ...]) -> str:
            return "x".join(map(str, shape))

        return f"{dims(self.min)}..{dims(self.max)} (opt {dims(self.opt)})"


#: Input name -> its range. Both GPU backends build for the same profile.
Profile = dict[str, ShapeRange]

#: Faces embedded in one run: SFace's batch is cut at 16 (edge/embedding/sface.py).
EMBEDDER_MAX_BATCH = 16


def _ceil32(value: float) -> int:
    return max(32, -(-int(value) // 32) * 32)


def detector_profile(input_name: str, input_size: int) -> Profile:
    """YuNet's height and width: from 32 up to what the rescue passes can ask for.

    The first pass runs at ``input_size`` on the long side; a rescue pass upscales small images
    so their long side reaches at most 1.25 x ``input_size`` (edge/detection/rescue.py), padded
    to a multiple of 32. The profile is tuned for a 16:9 frame (640x384 at the default).
    """
    side = _ceil32(input_size * 1.25)
    return {input_name: ShapeRange((1, 3, 32, 32), (1, 3, _ceil32(input_size * 9 / 16),
                                                    input_size), (1, 3, side, side))}


def embedder_profile(input_name: str, max_batch: int = EMBEDDER_MAX_BATCH) -> Profile:
    """SFace: batch 1..16, tuned for one face (most frames at a door hold one)."""
    return {input_name: ShapeRange((1, 3, 112, 112), (1, 3, 112, 112), (max_batch, 3, 112, 112))}


def role_profile(role: str, input_name: str, detector_input_size: int) -> Profile:
    """The profile for a model by its role: the one rule the daemon, the doctor and
    ``build-engines`` share, so an engine built ahead of time has the key the daemon asks for."""
    if role == "detector":
        return detector_profile(input_name, detector_input_size)
    return embedder_profile(input_name)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on; ``digest`` names its file."""

    model: str  # the ONNX file's stem, for people reading the cache dir
    onnx_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    format: int = FORMAT

    @staticmethod
    def shapes_of(profile: Profile) -> dict[str, dict[str, list[int]]]:
        return {name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
                for name, r in sorted(profile.items())}

    def fields(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        text = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def _safe(text: str) -> str:
    """A GPU name or version as part of a file name (``Orin (nvgpu)`` -> ``Orin_nvgpu_``)."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text)[:64] or "unknown"


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            before, after = old.get(name), new.get(name)
            if isinstance(before, (dict, list)) or isinstance(after, (dict, list)):
                out.append(name)
            else:
                out.append(f"{name} {before} -> {after}")
    return out


class EngineCache:
    """One directory of engines (``<model>.<digest>.engine`` plus metadata) and timing caches."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def engine_path(self, key: EngineKey) -> Path:
        return self.dir / f"{key.model}.{key.digest()}{ENGINE_SUFFIX}"

    def meta_path(self, key: EngineKey) -> Path:
        return self.dir / f"{key.model}.{key.digest()}{META_SUFFIX}"

    def timing_path(self, tensorrt: str, gpu: str, compute_capability: str) -> Path:
        """TensorRT's own timing cache is only valid for one TensorRT build and GPU, too."""
        return self.dir / (f"timing.{_safe(tensorrt)}.{_safe(gpu)}."
                           f"sm{_safe(compute_capability)}.cache")

    def _entries(self, model: str) -> list[Path]:
        """Metadata files of every cached engine of ``model`` (any key)."""
        return sorted(self.dir.glob(f"{model}.*{META_SUFFIX}"))

    def load(self, key: EngineKey) -> bytes | None:
        """The engine for ``key`` if whole and matching, else None (after saying why)."""
        engine, meta_file = self.engine_path(key), self.meta_path(key)
        if not engine.is_file():
            self._report_stale(key)
            return None
        problem = None
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            data = engine.read_bytes()
        except FileNotFoundError:
            problem = "no metadata (an interrupted write)"
        except (OSError, ValueError) as exc:
            problem = f"unreadable: {exc}"
        else:
            if not isinstance(meta, dict) or meta.get("key") != key.fields():
                problem = "metadata does not match the key"
            elif meta.get("engine_sha256") != hashlib.sha256(data).hexdigest():
                problem = "engine bytes do not match their recorded sha256 (damaged on disk)"
        if problem is not None:
            log.warning("engine cache entry corrupt; rebuilding",
                        extra={"path": str(engine), "reason": problem})
            self.discard(key)
            return None
        return data

    def _report_stale(self, key: EngineKey) -> None:
        for meta_file in self._entries(key.model):
            try:
                old = json.loads(meta_file.read_text(encoding="utf-8")).get("key", {})
            except (OSError, ValueError, AttributeError):
                old = {}
            changed = _changes(old, key.fields()) if isinstance(old, dict) else ["metadata"]
            log.warning("engine cache stale; rebuilding",
                        extra={"model": key.model, "path": str(meta_file),
                               "changed": ", ".join(changed) or "unknown"})

    def store(self, key: EngineKey, data: bytes) -> bool:
        """Write engine then metadata atomically and drop this model's other entries.

        A cache that cannot be written costs a rebuild at every start, which on a Jetson is
        minutes, so it is a warning (not silent), but never an error: the engine still runs.
        """
        meta = {"key": key.fields(), "engine_sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data)}
        try:
            self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomic(self.engine_path(key), data)
            write_atomic(self.meta_path(key), (json.dumps(meta, indent=1) + "\n").encode())
        except OSError as exc:
            log.warning("engine not cached; the next start rebuilds it",
                        extra={"path": str(self.engine_path(key)), "reason": str(exc)})
            return False
        for meta_file in self._entries(key.model):
            if meta_file != self.meta_path(key):
                _drop_entry(meta_file)
        return True

    def discard_model(self, model: str) -> int:
        """Remove every cached engine of ``model`` (any key), under its build lock; how many."""
        removed = 0
        with self.lock(model):
            for meta in self._entries(model):
                _drop_entry(meta)
                removed += 1
        return removed

    def discard(self, key: EngineKey) -> None:
        _unlink(self.meta_path(key))  # metadata first: a half-removed entry reads as corrupt
        _unlink(self.engine_path(key))

    def load_timing(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""

    def store_timing(self, path: Path, data: bytes) -> None:
        try:
            self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomic(path, data)
        except OSError as exc:
            log.warning("timing cache not saved", extra={"path": str(path), "reason": str(exc)})

    @contextlib.contextmanager
    def lock(self, model: str) -> Iterator[None]:
        """One builder per model at a time across processes (the daemon and build-engines).

        The second waits, then finds the first one's engine in the cache. Without a writable
        directory there is nothing to share, so no lock either.
        """
        try:
            self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            fh = open(self.dir / f".{model}.lock", "a+b")  # noqa: SIM115 - held for the block
        except OSError:
            yield
            return
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Another process is building this engine, for minutes: waiting for it is as
                # long as a build of our own, so systemd is told the same way.
                log.info("waiting for another process's engine build", extra={"model": model})
                with building(model):
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            yield
        finally:
            fh.close()


def _drop_entry(meta_file: Path) -> None:
    """An engine and its metadata, metadata first: a half-removed entry reads as corrupt."""
    _unlink(meta_file)
    _unlink(meta_file.with_name(meta_file.name[: -len(META_SUFFIX)] + ENGINE_SUFFIX))


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


# -- telling a supervisor that a long build is under way ---------------------------------------

BuildHook = Callable[[str, bool], None]
_hooks: list[BuildHook] = []


@contextlib.contextmanager
def build_hook(hook: BuildHook) -> Iterator[None]:
    """Call ``hook(model, True)`` when an engine build starts and ``(model, False)`` when it ends.

    The daemon uses it to send systemd ``EXTEND_TIMEOUT_USEC`` while it waits on a build that
    takes far longer than a normal start.
    """
    _hooks.append(hook)
    try:
        yield
    finally:
        _hooks.remove(hook)


@contextlib.contextmanager
def building(model: str) -> Iterator[None]:
    for hook in list(_hooks):
        _call(hook, model, True)
    try:
        yield
    finally:
        for hook in list(_hooks):
            _call(hook, model, False)


def _call(hook: BuildHook, model: str, started: bool) -> None:
    try:
        hook(model, started)
    except Exception:  # a reporting hook must never break a build
        log.exception("engine build hook raised", extra={"model": model})


def get_or_build(cache: EngineCache, key: EngineKey, build: Callable[[], bytes],
                 load: Callable[[bytes], T]) -> tuple[T, bool]:
    """The loaded engine for ``key`` (from the cache, else built and cached); True if built.

    ``load`` raises ``EngineLoadError`` for bytes the runtime refuses: a cached engine that
    does not load is removed and rebuilt; a fresh one that does not load is an error.
    """
    with cache.lock(key.model):
        data = cache.load(key)
        if data is not None:
            try:
                return load(data), False
            except EngineLoadError as exc:
                log.warning("cached engine refused by the runtime; rebuilding",
                            extra={"path": str(cache.engine_path(key)), "reason": str(exc)})
                cache.discard(key)
        log.info("building a TensorRT engine; this takes minutes on a Jetson, once",
                    extra={"model": key.model, "precision": key.precision,
                           "tensorrt": key.tensorrt, "gpu": key.gpu})
        with building(key.model):
            data = build()
        engine = load(data)
        cache.store(key, data)
        return engine, True
