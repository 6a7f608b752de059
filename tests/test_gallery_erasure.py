"""Erasure is real: after a deletion no file in the data dir holds the label or a ciphertext.

The check greps the raw bytes of every file in the data dir (database, ``-wal``, ``-shm``).
Each test first shows the same grep *finding* the bytes before the deletion, and finding the
bytes of a person who was not deleted afterwards, so it cannot pass by looking in the wrong
place.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.gallery import ConsentInput, GalleryStore, NewTemplate
from edge.gallery.store import DB_NAME

MODEL = "sface-2021dec"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


def data_dir_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.iterdir()) if p.is_file())


def secret_label() -> str:
    return f"Label-{secrets.token_hex(12)}"


def ciphertexts(data: Path, person_id: str) -> list[bytes]:
    conn = sqlite3.connect(data / DB_NAME)
    try:
        return [r[0] for r in conn.execute(
            "SELECT ciphertext FROM templates WHERE person_id = ?", (person_id,))]
    finally:
        conn.close()


@pytest.fixture
def gallery(tmp_path: Path) -> tuple[GalleryStore, Path, dict[str, str]]:
    """60 persons with 3 templates each (several pages of rows), labels unguessable."""
    data = tmp_path / "data"
    store = GalleryStore(data, tmp_path / "template.key", max_templates=5)
    labels = {}
    for i in range(60):
        label = secret_label()
        pid = store.add_person(label, ConsentInput(f"Giver {label}", "door access",
                                                   evidence=f"form {label}"))
        store.add_templates(pid, MODEL, "1", [NewTemplate(unit(100 * i + j), {"score": 0.9},
                                                          f"cam-{label}") for j in range(3)])
        labels[pid] = label
    yield store, data, labels
    store.close()


def test_delete_leaves_no_label_or_ciphertext_in_any_file(gallery) -> None:
    store, data, labels = gallery
    victims = list(labels)[10:13]
    keeper = list(labels)[40]
    secrets_of = {pid: [labels[pid].encode(), f"Giver {labels[pid]}".encode(),
                        f"form {labels[pid]}".encode(), f"cam-{labels[pid]}".encode(),
                        *ciphertexts(data, pid)] for pid in labels}
    raw = data_dir_bytes(data)
    for pid in (*victims, keeper):
        assert all(s in raw for s in secrets_of[pid])  # the grep can see them

    receipts = [store.delete_person(pid, actor="cli:op") for pid in victims]

    files = {p.name for p in data.iterdir()}
    assert DB_NAME in files
    raw = data_dir_bytes(data)
    for pid in victims:
        for needle in secrets_of[pid]:
            assert needle not in raw
    assert all(s in raw for s in secrets_of[keeper])
    wal = data / f"{DB_NAME}-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite3.connect(data / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    receipt = receipts[-1]
    assert set(receipt) == {"person_id", "deleted_at", "removed", "audit_seq", "audit_hash",
                            "wal_checkpointed"}
    assert receipt["removed"] == {"templates": 3, "consents": 1, "label": True}
    assert receipt["wal_checkpointed"] is True
    entries = store.audit_entries(receipt["person_id"])
    assert entries[-1].action == "person_deleted"
    assert entries[-1].hash == receipt["audit_hash"] and entries[-1].seq == receipt["audit_seq"]
    assert [e.action for e in entries][:1] == ["person_added"]  # history kept, pseudonymous only
    assert store.verify_audit().ok
    assert len(store.list_persons()) == 57


def test_withdrawal_erases_the_template_ciphertexts(gallery) -> None:
    store, data, labels = gallery
    pid = list(labels)[5]
    cts = ciphertexts(data, pid)
    assert all(ct in data_dir_bytes(data) for ct in cts)
    store.withdraw_consent(pid)
    raw = data_dir_bytes(data)
    assert not any(ct in raw for ct in cts)
    assert labels[pid].encode() in raw  # the person (and label) stay until deleted


def test_audit_log_never_holds_labels_or_consent_text(gallery) -> None:
    store, _, labels = gallery
    store.delete_person(next(iter(labels)))
    text = repr([e.to_dict() for e in store.audit_entries()])
    for label in labels.values():
        assert label not in text
    assert "door access" not in text and "Giver" not in text and "cam-" not in text
