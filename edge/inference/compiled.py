"""A cache of graphs already optimised for this runtime on this machine.

Why: onnxruntime rewrites SFace (operator fusion, the NCHWc layout for the CPU's vector width)
every time a session is created, which costs ~120 ms of a 2-core x86's start-up; a CLI command
that embeds one photo spends a third of its life there. The rewritten graph depends only on the
source file, the runtime's version and the CPU, so it is saved once, named by a key over exactly
those, and later loaded with optimisation off. The TensorRT backend keeps its engines the
same way (the same key idea, with the GPU in place of the CPU: ``engine_cache.py``).

Trust: the cache sits in ``<models dir>/compiled``, with the models it derives from. The source
file is checked against the manifest's sha256 before any of this runs; a cached graph is as
trustworthy as the directory it is in, so keep that directory writable only by its owner (the
Ansible role makes it root's). A cache that cannot be written is skipped, never an error, and one
that cannot be loaded (truncated by a crash, another runtime) is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".ort.onnx"


def cpu_signature() -> str:
    """What decides the kernels and layouts onnxruntime picks: CPU model and feature flags."""
    model = flags = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8",
                                            errors="replace") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model", "hardware") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = " ".join(sorted(value.split()))
            if model and flags:
                break
    return f"{platform.machine()}|{model or platform.processor()}|{flags}"


def cache_key(model: Path, runtime: str, options: str) -> str:
    """Changes whenever the source file, the runtime, the options or the CPU change."""
    st = model.stat()
    text = "|".join([model.name, str(st.st_size), str(st.st_mtime_ns), runtime, options,
                     cpu_signature()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_path(cache_dir: Path, model: Path, key: str) -> Path:
    return cache_dir / f"{model.stem}.{key}{SUFFIX}"


def writable_dir(cache_dir: Path) -> bool:
    """Create the cache dir when possible; False when this process cannot write there."""
    try:
        cache_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(cache_dir, os.W_OK | os.X_OK)


def temp_path(final: Path) -> Path:
    """A private name next to ``final``: concurrent writers never share a half-written file."""
    return final.with_name(f".{final.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def publish(temp: Path, final: Path) -> None:
    """Make a complete file visible under its final name in one step, or drop it."""
    try:
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
    except OSError as exc:
        log.debug("compiled graph not cached", extra={"path": str(final), "reason": str(exc)})
        discard(temp)


def discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def prune(cache_dir: Path, model: Path, keep: Path) -> None:
    """Remove this model's graphs for older keys (another runtime version, an older file)."""
    for old in cache_dir.glob(f"{model.stem}.*{SUFFIX}"):
        if old != keep:
            discard(old)
