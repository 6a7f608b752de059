"""The database file: pragmas, permissions, migrations from every version, damaged files."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from edge.gallery import ConsentInput, GalleryCorruptError, GalleryError, GalleryStore
from edge.gallery.db import migrate, open_database, transaction, user_version
from edge.gallery.migrations import LATEST, MIGRATIONS
from edge.gallery.store import DB_NAME

MODEL = "sface-2021dec"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def fill(store: GalleryStore, persons: int) -> list[str]:
    pids = []
    for i in range(persons):
        pid = store.add_person(f"person {i}", ConsentInput("them", "door"))
        store.add_template(pid, MODEL, "1", unit(i), {"score": 1.0})
        pids.append(pid)
    return pids


def test_pragmas_and_file_modes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    conn = open_database(data / DB_NAME)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert user_version(conn) == LATEST
    finally:
        conn.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / DB_NAME).stat().st_mode) == 0o600
    assert not list(data.glob("*.creating*"))


def test_foreign_keys_keep_templates_tied_to_persons(tmp_path: Path) -> None:
    with GalleryStore(tmp_path / "d", tmp_path / "k") as store:
        fill(store, 1)
    conn = sqlite3.connect(tmp_path / "d" / DB_NAME)
    conn.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE templates SET person_id = 'p_nobody'")
    conn.close()


def test_transaction_rolls_back_everything_on_error(tmp_path: Path) -> None:
    conn = open_database(tmp_path / DB_NAME)
    try:
        with pytest.raises(RuntimeError), transaction(conn):
            conn.execute("INSERT INTO persons (id, created_at, updated_at) VALUES ('p', 'a', 'a')")
            raise RuntimeError("half-way")
        assert conn.execute("SELECT COUNT(*) FROM persons").fetchone()[0] == 0
        assert not conn.in_transaction
    finally:
        conn.close()


@pytest.mark.parametrize("start", range(LATEST))
def test_migrates_from_every_earlier_version(tmp_path: Path, start: int) -> None:
    """Version 0 is "no database yet"; each later one is built by the real earlier steps."""
    path = tmp_path / "data" / DB_NAME
    path.parent.mkdir()
    if start >= 1:
        conn = open_database(path, target=start)  # as the version-`start` code created it
        assert user_version(conn) == start
        # a person and consent as version 1 stored them
        conn.execute("INSERT INTO persons (id, label, created_at, updated_at) VALUES "
                     "('p_aaaaaaaaaaaaaaaaaaaaaaaaaa', 'Old', '2025-01-01T00:00:00.000000Z', "
                     "'2025-01-01T00:00:00.000000Z')")
        conn.execute("INSERT INTO consents (id, person_id, given_by, purpose, granted_at) VALUES "
                     "('c_aaaaaaaaaaaaaaaaaaaaaaaaaa', 'p_aaaaaaaaaaaaaaaaaaaaaaaaaa', 'Old', "
                     "'door', '2025-01-01T00:00:00.000000Z')")
        conn.close()
    with GalleryStore(tmp_path / "data", tmp_path / "key") as store:
        check = sqlite3.connect(path)
        assert check.execute("PRAGMA user_version").fetchone()[0] == LATEST
        tables = {r[0] for r in check.execute("SELECT name FROM sqlite_master")}
        check.close()
        assert {"persons", "consents", "templates", "audit", "meta", "bundle_imports"} <= tables
        if start >= 1:
            (old,) = store.list_persons()
            assert (old.label, old.origin, old.consent) == ("Old", "local", "active")
            store.add_template(old.id, MODEL, "1", unit(0), {"score": 1.0})
        pid = store.add_person("New", ConsentInput("x", "door"))
        assert store.get_person(pid).origin == "local"
        assert store.verify_audit().ok


def test_every_step_is_applied_once(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(1, LATEST + 1):
        assert migrate(conn, path, target=version) == version
        assert migrate(conn, path, target=version) == version  # again: nothing to do
    conn.close()
    assert len(MIGRATIONS) == LATEST


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with GalleryStore(tmp_path / "d", tmp_path / "k"):
        pass
    conn = sqlite3.connect(tmp_path / "d" / DB_NAME)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    with pytest.raises(GalleryError, match="newer than this edge-face supports"):
        GalleryStore(tmp_path / "d", tmp_path / "k")


@pytest.fixture(scope="module")
def sound_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 persons with a template each: several pages of every table. Built once."""
    root = tmp_path_factory.mktemp("sound")
    with GalleryStore(root / "data", root / "key") as store:
        fill(store, 150)
    return root


def _damage_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _damage_middle(data: bytes) -> bytes:
    mid = len(data) // 2 // 4096 * 4096
    return data[:mid] + bytes(8192) + data[mid + 8192:]


def _damage_header(data: bytes) -> bytes:
    return b"\x00" * 100 + data[100:]


@pytest.mark.parametrize("damage", [_damage_half, _damage_middle, _damage_header,
                                    lambda d: b"", lambda d: d[:100]],
                         ids=["truncated-half", "zeroed-pages", "header", "empty", "only-header"])
def test_damaged_database_is_a_clear_error_naming_the_file(tmp_path: Path, damage,
                                                          sound_gallery: Path) -> None:
    data_dir, key = tmp_path / "data", tmp_path / "key"
    shutil.copytree(sound_gallery / "data", data_dir)
    shutil.copy2(sound_gallery / "key", key)
    with GalleryStore(data_dir, key) as store:  # the copy is sound before it is damaged
        assert len(store.list_persons()) == 150
    db = data_dir / DB_NAME
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    db.write_bytes(damage(db.read_bytes()))
    with pytest.raises(GalleryCorruptError) as err:
        GalleryStore(data_dir, key)
    assert str(db) in str(err.value)


def test_a_non_database_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / DB_NAME).write_bytes(b"this is a text file, not sqlite\n" * 200)
    with pytest.raises(GalleryCorruptError, match=r"not a gallery database|damaged"):
        GalleryStore(tmp_path / "data", tmp_path / "key")
