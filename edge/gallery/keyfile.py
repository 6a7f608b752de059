"""Secret files on disk: the device template key, the fleet key, the operator's signing key.

Rules, enforced on every read so a mistake is caught on the device and not in an audit:
the file must be readable by its owner only (no group or other bits), and a raw key must have
exactly its length. New files are created complete or not at all (written to a temporary file,
fsynced, then linked or renamed into place), so a crash never leaves a half-written key that a
later start would silently accept.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from edge.gallery.errors import GalleryKeyError

KEY_BYTES = 32


def check_private(path: Path, what: str) -> None:
    """Refuse a secret file that anyone but its owner can read or write."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise GalleryKeyError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise GalleryKeyError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if mode & 0o077:
        raise GalleryKeyError(
            f"{what} {path} has mode {mode:04o}; it must be readable by its owner only "
            f"(chmod 600 {path})"
        )


def read_secret(path: Path, what: str) -> bytes:
    check_private(path, what)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GalleryKeyError(f"{what} {path} cannot be read: {exc.strerror}") from None


def read_key(path: Path, what: str = "key file") -> bytes:
    """Load a raw 32-byte AES-256 key, refusing unsafe modes and wrong lengths."""
    data = read_secret(path, what)
    if len(data) != KEY_BYTES:
        raise GalleryKeyError(
            f"{what} {path} holds {len(data)} bytes; an AES-256 key is exactly {KEY_BYTES}"
        )
    return data


def _make_parent(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh file next to ``path``, fsynced, with ``mode``."""
    _make_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return Path(tmp)


def create_secret(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` holding ``data`` unless it exists; return whether this call created it.

    ``os.link`` of a complete temporary file is an atomic create-if-absent: two processes
    starting at once end up sharing one key instead of each writing its own.
    """
    try:
        tmp = _write_temp(path, data, mode)
    except OSError as exc:
        raise GalleryKeyError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as exc:
        raise GalleryKeyError(f"cannot create {path}: {exc.strerror}") from None
    finally:
        tmp.unlink()
    _fsync_dir(path.parent)
    return True


def replace_secret(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically make ``path`` hold ``data`` (temporary file, fsync, rename, fsync dir)."""
    try:
        tmp = _write_temp(path, data, mode)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise GalleryKeyError(f"cannot write {path}: {exc.strerror}") from None


def move_secret(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst`` durably (the last step of a key rotation)."""
    try:
        os.replace(src, dst)
        _fsync_dir(dst.parent)
    except OSError as exc:
        raise GalleryKeyError(f"cannot move {src} to {dst}: {exc.strerror}") from None


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def load_or_create_key(path: Path, what: str = "key file") -> bytes:
    """Read the key at ``path``, creating a random one (mode 0600, parent 0700) if absent."""
    if not path.exists():
        create_secret(path, new_key())
    return read_key(path, what)
