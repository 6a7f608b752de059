"""The template key: file rules, wrong keys, swapped rows, rotation and its crash states."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from edge.gallery import ConsentInput, GalleryKeyError, GalleryStore
from edge.gallery.keyring import pending_path
from edge.gallery.store import DB_NAME

MODEL = "sface-2021dec"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def make_gallery(data: Path, key: Path, persons: int = 3) -> dict[str, np.ndarray]:
    """Persons with two templates each; returns template id -> vector."""
    out = {}
    with GalleryStore(data, key) as store:
        for i in range(persons):
            pid = store.add_person(f"person {i}", ConsentInput("them", "door"))
            for j in range(2):
                vec = unit(10 * i + j)
                out[store.add_template(pid, MODEL, "1", vec, {"score": 1.0}).template_id] = vec
    return out


def vectors(store: GalleryStore) -> dict[str, np.ndarray]:
    return {tid: vec for tid, _, vec in store.iter_templates(MODEL)}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_key_file_is_created_private(tmp_path: Path) -> None:
    key = tmp_path / "etc" / "edge-face" / "template.key"
    with GalleryStore(tmp_path / "data", key):
        pass
    assert len(key.read_bytes()) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert not [p for p in key.parent.iterdir() if p != key]  # no temporary files left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "template.key"
    make_gallery(tmp_path / "data", key, persons=1)
    os.chmod(key, mode)
    with pytest.raises(GalleryKeyError, match="chmod 600"):
        GalleryStore(tmp_path / "data", key)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_of_wrong_length_is_refused(tmp_path: Path, size: int) -> None:
    key = tmp_path / "template.key"
    key.write_bytes(os.urandom(size))
    os.chmod(key, 0o600)
    with pytest.raises(GalleryKeyError, match=f"holds {size} bytes"):
        GalleryStore(tmp_path / "data", key)


def test_wrong_key_file_is_a_clear_error(tmp_path: Path) -> None:
    key = tmp_path / "template.key"
    make_gallery(tmp_path / "data", key)
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    os.chmod(other, 0o600)
    with pytest.raises(GalleryKeyError, match=r"not the key .* was encrypted with"):
        GalleryStore(tmp_path / "data", other)


def test_missing_key_file_is_not_silently_replaced(tmp_path: Path) -> None:
    key = tmp_path / "template.key"
    make_gallery(tmp_path / "data", key)
    key.unlink()
    with pytest.raises(GalleryKeyError, match="is missing"):
        GalleryStore(tmp_path / "data", key)
    assert not key.exists()


def test_database_without_key_holds_no_plaintext_template(tmp_path: Path) -> None:
    made = make_gallery(tmp_path / "data", tmp_path / "template.key")
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    for vec in made.values():
        assert vec.astype("<f4").tobytes()[:16] not in raw
    assert b"person 0" in raw  # control: the plain columns are there, the templates are not


def test_swapped_or_repointed_rows_do_not_decrypt(tmp_path: Path) -> None:
    data, key = tmp_path / "data", tmp_path / "template.key"
    made = make_gallery(data, key)
    a, b = list(made)[:2]  # same person
    conn = sqlite3.connect(data / DB_NAME)
    row_a = conn.execute("SELECT nonce, ciphertext FROM templates WHERE id = ?", (a,)).fetchone()
    row_b = conn.execute("SELECT nonce, ciphertext FROM templates WHERE id = ?", (b,)).fetchone()
    conn.execute("UPDATE templates SET nonce = ?, ciphertext = ? WHERE id = ?", (*row_b, a))
    conn.execute("UPDATE templates SET nonce = ?, ciphertext = ? WHERE id = ?", (*row_a, b))
    conn.commit()
    conn.close()
    with GalleryStore(data, key) as store, pytest.raises(GalleryKeyError, match=a):
        store.load_templates(MODEL)

    data2 = tmp_path / "data2"
    made = make_gallery(data2, key)
    tid = next(iter(made))
    conn = sqlite3.connect(data2 / DB_NAME)
    other = conn.execute("SELECT person_id FROM templates WHERE id = ?",
                         (list(made)[-1],)).fetchone()[0]
    conn.execute("UPDATE templates SET person_id = ? WHERE id = ?", (other, tid))
    conn.commit()
    conn.close()
    with GalleryStore(data2, key) as store, pytest.raises(GalleryKeyError, match=tid):
        list(store.iter_templates(MODEL))


def test_rotation_reencrypts_everything(tmp_path: Path) -> None:
    data, key = tmp_path / "data", tmp_path / "template.key"
    made = make_gallery(data, key)
    old_key = key.read_bytes()
    conn = sqlite3.connect(data / DB_NAME)
    before = dict(conn.execute("SELECT id, ciphertext FROM templates").fetchall())
    conn.close()
    with GalleryStore(data, key) as store:
        result = store.rotate_key(actor="cli:op")
        assert result["templates"] == len(made)
        assert same(vectors(store), made)
        assert store.audit_entries()[-1].action == "key_rotated"
        assert store.verify_audit().ok
    assert key.read_bytes() != old_key and len(key.read_bytes()) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not pending_path(key).exists()
    conn = sqlite3.connect(data / DB_NAME)
    after = dict(conn.execute("SELECT id, ciphertext FROM templates").fetchall())
    conn.close()
    assert after.keys() == before.keys() and all(after[t] != before[t] for t in after)
    with GalleryStore(data, key) as store:
        assert same(vectors(store), made)
    old = tmp_path / "old.key"
    old.write_bytes(old_key)
    os.chmod(old, 0o600)
    with pytest.raises(GalleryKeyError):
        GalleryStore(data, old)


def test_crash_after_commit_before_rename_is_finished_at_open(tmp_path: Path) -> None:
    """Rebuild the exact on-disk state of a crash between steps 3 and 4 of the rotation."""
    data, key = tmp_path / "data", tmp_path / "template.key"
    made = make_gallery(data, key)
    old_key = key.read_bytes()
    with GalleryStore(data, key) as store:
        store.rotate_key()
    new_key = key.read_bytes()
    pending_path(key).write_bytes(new_key)
    os.chmod(pending_path(key), 0o600)
    key.write_bytes(old_key)  # the rename never happened
    with GalleryStore(data, key) as store:
        assert same(vectors(store), made)
    assert key.read_bytes() == new_key
    assert not pending_path(key).exists()


def test_crash_before_commit_leaves_the_old_key_working(tmp_path: Path) -> None:
    data, key = tmp_path / "data", tmp_path / "template.key"
    made = make_gallery(data, key)
    old_key = key.read_bytes()
    pending_path(key).write_bytes(os.urandom(32))  # written, but the DB never committed
    os.chmod(pending_path(key), 0o600)
    with GalleryStore(data, key) as store:
        assert same(vectors(store), made)
        assert key.read_bytes() == old_key
        store.rotate_key()  # a later rotation overwrites the stray file
        assert same(vectors(store), made)
    assert not pending_path(key).exists()


def test_rotation_by_another_process_is_picked_up(tmp_path: Path) -> None:
    """Two stores on one database stand for the daemon and the CLI in another process."""
    data, key = tmp_path / "data", tmp_path / "template.key"
    made = make_gallery(data, key)
    with GalleryStore(data, key) as daemon, GalleryStore(data, key) as cli:
        cli.rotate_key()
        (pid, *_) = [p.id for p in daemon.list_persons()]
        added = daemon.add_template(pid, MODEL, "1", unit(99), {"score": 0.5}).template_id
        made[added] = unit(99)
        assert same(vectors(cli), made)
        assert same(vectors(daemon), made)
