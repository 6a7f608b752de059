"""Opening the gallery database: pragmas, integrity check, migrations, transactions.

Settings and why:
- WAL, so the daemon's reads never wait for an enrollment and a crash cannot tear a page;
- ``synchronous=FULL``: a committed erasure or consent withdrawal survives a power cut;
- ``foreign_keys=ON``: a template can never outlive its person;
- ``secure_delete=ON``: deleted rows are overwritten with zeros, so erasure is real
  (together with a ``wal_checkpoint(TRUNCATE)`` after it);
- ``PRAGMA quick_check`` at open, so a damaged file is reported at start-up, naming the file,
  and not as a mysterious failure at the first enrollment.

A new database is built under a temporary name and renamed into place once its schema is
committed, so an existing file of 0 bytes can only be a truncation, and is reported as one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from edge.gallery.errors import (
    GalleryCorruptError,
    GalleryError,
    GalleryFullError,
)
from edge.gallery.migrations import LATEST, MIGRATIONS

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


def translate(exc: sqlite3.Error, path: Path) -> GalleryError:
    """Map an sqlite3 error to the gallery error an operator can act on."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == _SQLITE_FULL:
        return GalleryFullError(f"{path}: disk full; the change was rolled back, nothing written")
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return GalleryCorruptError(f"{path}: damaged or not a gallery database ({exc})")
    return GalleryError(f"{path}: database error: {exc}")


def _connect(path: Path) -> sqlite3.Connection:
    # One connection shared by the threads of a process behind the store's lock.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise GalleryError(f"{path}: cannot switch to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; any exception rolls everything back.

    IMMEDIATE takes the write lock up front, so two processes (daemon and CLI) never both read,
    decide, and then fail to upgrade to a write lock half-way.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLITE_FULL may already have rolled back
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path, target: int = LATEST) -> int:
    """Apply the missing steps up to ``target``, each in its own transaction."""
    current = user_version(conn)
    if current > LATEST:
        raise GalleryError(
            f"{path}: schema version {current} is newer than this edge-face supports "
            f"({LATEST}); upgrade edge-face"
        )
    for version in range(current + 1, target + 1):
        with transaction(conn):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        log.info("gallery schema migrated", extra={"db": str(path), "schema_version": version})
    return user_version(conn)


def _create(path: Path, target: int) -> None:
    tmp = path.with_name(path.name + ".creating")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    conn = _connect(tmp)
    try:
        os.chmod(tmp, 0o600)  # labels and consent records are personal data; WAL/SHM follow
        migrate(conn, tmp, target)
    finally:
        conn.close()  # the last close checkpoints the WAL into the file and removes it
    os.replace(tmp, path)


def _check(conn: sqlite3.Connection, path: Path) -> None:
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if rows != [("ok",)]:
        first = "; ".join(str(r[0]) for r in rows[:3])
        raise GalleryCorruptError(f"{path}: database integrity check failed: {first}")


def open_database(path: Path, target: int = LATEST) -> sqlite3.Connection:
    """Open (creating if absent) and migrate the gallery at ``path``; check it is sound."""
    try:
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise GalleryError(f"cannot create data dir {path.parent}: {exc.strerror}") from None
    try:
        if not path.exists():
            _create(path, target)
        elif path.stat().st_size == 0 and not Path(f"{path}-wal").exists():
            raise GalleryCorruptError(
                f"{path}: database file is empty (truncated?); restore it from a backup or move "
                "it away to start a new gallery"
            )
        conn = _connect(path)
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    try:
        _check(conn, path)
        migrate(conn, path, target)
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc, path) from None
    except BaseException:
        conn.close()
        raise
    return conn
