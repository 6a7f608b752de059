"""The audit log: append-only by triggers, hash-chained, and ``verify`` names the broken entry.

Tampering is done the way an attacker with the file would do it: a plain sqlite3 connection,
dropping the triggers first where the triggers would stop them.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.gallery import ConsentInput, GalleryStore
from edge.gallery import audit as audit_log
from edge.gallery.store import DB_NAME

MODEL = "sface-2021dec"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    with GalleryStore(tmp_path / "data", tmp_path / "key") as store:
        for i in range(3):
            pid = store.add_person(f"P{i}", ConsentInput("them", "door"))
            store.add_template(pid, MODEL, "1", unit(i), {"score": 1.0})
        store.delete_person(pid)
        assert store.verify_audit().to_dict() == {"ok": True, "entries": 7}
    return tmp_path / "data"


def verify(data: Path) -> dict:
    with GalleryStore(data, data.parent / "key") as store:
        return store.verify_audit().to_dict()


def tamper(data: Path, *statements: str) -> None:
    conn = sqlite3.connect(data / DB_NAME)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_entries_are_chained(data: Path) -> None:
    with GalleryStore(data, data.parent / "key") as store:
        entries = store.audit_entries()
    assert [e.seq for e in entries] == list(range(1, 8))
    assert entries[0].prev_hash == audit_log.GENESIS
    for prev, cur in itertools.pairwise(entries):
        assert cur.prev_hash == prev.hash
    assert [e.action for e in entries] == ["person_added", "template_added"] * 3 + [
        "person_deleted"]
    assert all(e.actor == "system" and e.at.endswith("Z") for e in entries)


@pytest.mark.parametrize("statement", ["UPDATE audit SET actor = 'someone' WHERE seq = 2",
                                       "DELETE FROM audit WHERE seq = 7",
                                       "DELETE FROM audit"])
def test_triggers_make_the_log_append_only(data: Path, statement: str) -> None:
    conn = sqlite3.connect(data / DB_NAME)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(statement)
    conn.close()
    assert verify(data)["ok"]


@pytest.mark.parametrize("statement, seq", [
    ("UPDATE audit SET actor = 'mallory' WHERE seq = 3", 3),
    ("UPDATE audit SET details = '{\"score\":0.1,\"template_id\":\"t\"}' WHERE seq = 4", 4),
    ("UPDATE audit SET target_id = 'p_other' WHERE seq = 5", 5),
    ("UPDATE audit SET hash = '" + "ab" * 32 + "' WHERE seq = 6", 6),
    ("DELETE FROM audit WHERE seq = 2", 2),
    ("UPDATE audit SET details = 'not json' WHERE seq = 1", 1),
])
def test_verify_names_the_first_broken_entry(data: Path, statement: str, seq: int) -> None:
    tamper(data, statement)
    result = verify(data)
    assert result["ok"] is False
    assert result["first_bad_seq"] == seq
    assert result["reason"]


def test_rewriting_one_hash_consistently_still_breaks_the_next_link(data: Path) -> None:
    conn = sqlite3.connect(data / DB_NAME)
    row = conn.execute("SELECT seq, at, actor, action, target_id, details, prev_hash "
                       "FROM audit WHERE seq = 3").fetchone()
    conn.close()
    forged = audit_log.entry_hash(row[0], row[1], "mallory", row[3], row[4],
                                  json.loads(row[5]), row[6])
    tamper(data, f"UPDATE audit SET actor = 'mallory', hash = '{forged}' WHERE seq = 3")
    assert verify(data)["first_bad_seq"] == 4


def test_details_may_not_carry_labels_or_biometrics(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, at, actor, action, target_id, "
                 "details, prev_hash, hash)")
    for details in ({"label": "Ann"}, {"embedding": [0.1]}, {"x": b"raw"},
                    {"nested": {"name": "Ann"}}):
        with pytest.raises(ValueError):
            audit_log.append(conn, "t", "a", "act", None, details)
    assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0
