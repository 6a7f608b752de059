"""Faults during writes: a full disk and a kill -9, each leaving a sound, consistent gallery.

Disk full is provoked two ways: SQLite's ``PRAGMA max_page_count`` (works everywhere, gives the
same SQLITE_FULL a full disk gives), and, when the tests run as root and may mount, a real
tiny tmpfs that the gallery fills up (skipped otherwise). kill -9 hits a real child process
that writes in a loop.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.gallery import ConsentInput, GalleryFullError, GalleryStore, NewTemplate
from edge.gallery.store import DB_NAME

MODEL = "sface-2021dec"
REPO = Path(__file__).resolve().parents[1]


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def snapshot(db: Path) -> tuple:
    conn = sqlite3.connect(db)
    try:
        return tuple(tuple(conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall())
                     for t in ("persons", "consents", "templates", "audit"))
    finally:
        conn.close()


def assert_consistent(data: Path, key: Path) -> None:
    """Integrity ok, chain ok, every row has its audit entry, no half-written person."""
    with GalleryStore(data, key, max_templates=5) as store:
        assert store.verify_audit().ok
        entries = store.audit_entries()
        persons = store.list_persons()
        matrix = store.load_templates(MODEL)  # every template decrypts
    conn = sqlite3.connect(data / DB_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        consents = dict(conn.execute(
            "SELECT person_id, COUNT(*) FROM consents GROUP BY person_id").fetchall())
    finally:
        conn.close()
    added = {e.target_id for e in entries if e.action == "person_added"}
    deleted = {e.target_id for e in entries if e.action == "person_deleted"}
    assert {p.id for p in persons} == added - deleted
    assert all(consents.get(p.id) == 1 for p in persons)  # never a person without consent
    assert all(p.templates in (0, 3) for p in persons)  # a batch is all or nothing
    logged = {e.details["template_id"] for e in entries if e.action == "template_added"}
    assert set(matrix.template_ids) <= logged
    alive = {p.id for p in persons if p.templates}
    assert set(matrix.person_ids) == alive


def fill_until_full(store: GalleryStore, db: Path, start: int) -> int:
    """Enroll until the disk is full; check the failing call left no trace. Returns count."""
    for i in range(start, start + 100_000):
        before = snapshot(db)
        try:
            pid = store.add_person(f"person {i}", ConsentInput("them", "door"))
            before = snapshot(db)
            store.add_templates(pid, MODEL, "1", [NewTemplate(unit(10 * i + j), {"score": 1.0})
                                                  for j in range(3)])
        except GalleryFullError as exc:
            assert "disk full" in str(exc) and str(db) in str(exc)
            assert snapshot(db) == before
            return i
    raise AssertionError("the disk never filled up")


def test_disk_full_via_max_page_count(tmp_path: Path) -> None:
    data, key = tmp_path / "data", tmp_path / "key"
    store = GalleryStore(data, key, max_templates=5)
    conn = store._conn  # the store's own connection: max_page_count is per connection
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 12}")
    full_at = fill_until_full(store, data / DB_NAME, 0)
    assert full_at > 0
    assert store.verify_audit().ok  # still usable for reads
    conn.execute("PRAGMA max_page_count = 1000000")  # space freed: writes work again
    pid = store.add_person("after", ConsentInput("them", "door"))
    store.add_templates(pid, MODEL, "1", [NewTemplate(unit(j), {"score": 1.0})
                                          for j in range(3)])
    store.close()
    assert_consistent(data, key)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_on_a_real_full_filesystem(tiny_tmpfs: Path, tmp_path: Path) -> None:
    data, key = tiny_tmpfs / "data", tmp_path / "key"
    with GalleryStore(data, key, max_templates=5) as store:
        full_at = fill_until_full(store, data / DB_NAME, 0)
        assert full_at > 0
        assert store.verify_audit().ok
        assert store.get_person(store.list_persons()[0].id).consent == "active"
    assert_consistent(data, key)
    # more room (as after cleaning up the disk): the same gallery carries on
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_tmpfs)], check=True)
    with GalleryStore(data, key, max_templates=5) as store:
        pid = store.add_person("after", ConsentInput("them", "door"))
        store.add_templates(pid, MODEL, "1", [NewTemplate(unit(j), {"score": 1.0})
                                              for j in range(3)])
    assert_consistent(data, key)


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from edge.gallery import ConsentInput, GalleryStore, NewTemplate

    data, key, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    store = GalleryStore(data, key, max_templates=5)
    pids = []
    i = 0
    while True:
        pid = store.add_person(f"kill {seed} {i}", ConsentInput("them", "door"))
        store.add_templates(pid, "sface-2021dec", "1", [
            NewTemplate(rng.standard_normal(128), {"score": 1.0}) for _ in range(3)])
        pids.append(pid)
        if i % 4 == 3:
            store.delete_person(pids.pop(0))
        if i % 7 == 6:
            store.withdraw_consent(pids[-1])
        print(i, flush=True)
        i += 1
""")


@pytest.mark.parametrize("lines", [5, 17, 31])
def test_kill_9_during_writes_leaves_a_sound_gallery(tmp_path: Path, lines: int) -> None:
    data, key = tmp_path / "data", tmp_path / "key"
    for round_ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(data), str(key), str(lines * 10 + round_)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            assert child.stdout is not None
            for _ in range(lines):
                if not child.stdout.readline():
                    raise AssertionError(f"writer died: {child.stderr.read()}")
            os.kill(child.pid, signal.SIGKILL)  # while it is writing the next person
        finally:
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL
        assert_consistent(data, key)
