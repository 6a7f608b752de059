"""The append-only, hash-chained audit log of every change to the gallery.

Append-only twice over: SQLite triggers abort any UPDATE or DELETE of the table (so a bug or a
careless SQL shell cannot rewrite history), and each entry's hash covers the previous entry's
hash (so an edit made around the triggers, e.g. with a hex editor, breaks the chain at the
first altered entry, which ``verify`` names).

Entries carry pseudonymous ids only. ``details`` is checked against keys that would smuggle in
a label or biometric data, because erasure deletes a person's rows but never the audit log.
A chain cannot reveal that its *newest* entries were cut off; the erasure receipt carries the
hash of its entry so an operator holding receipts can prove that too.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

GENESIS = "0" * 64
_FORBIDDEN_KEYS = frozenset({"label", "name", "embedding", "vector", "ciphertext", "nonce",
                             "given_by", "evidence", "source", "image"})


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    action: str
    target_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "entries": self.entries}
        if not self.ok:
            out["first_bad_seq"] = self.first_bad_seq
            out["reason"] = self.reason
        return out


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def entry_hash(seq: int, at: str, actor: str, action: str, target_id: str | None,
               details: dict[str, Any], prev_hash: str) -> str:
    body = {"seq": seq, "at": at, "actor": actor, "action": action, "target_id": target_id,
            "details": details, "prev_hash": prev_hash}
    return hashlib.sha256(canonical(body)).hexdigest()


def _check_details(details: dict[str, Any]) -> None:
    for key, value in details.items():
        if key.lower() in _FORBIDDEN_KEYS:
            raise ValueError(f"audit details must not carry {key!r}")
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise ValueError(f"audit details must not carry raw bytes ({key!r})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"audit details must be finite ({key!r})")
        if isinstance(value, dict):
            _check_details(value)


def append(conn: sqlite3.Connection, at: str, actor: str, action: str, target_id: str | None,
           details: dict[str, Any] | None = None) -> AuditEntry:
    """Add one entry; call inside the transaction of the change it records."""
    details = dict(details or {})
    _check_details(details)
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    digest = entry_hash(seq, at, actor, action, target_id, details, prev)
    conn.execute(
        "INSERT INTO audit (seq, at, actor, action, target_id, details, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, actor, action, target_id, canonical(details).decode("utf-8"), prev, digest),
    )
    return AuditEntry(seq, at, actor, action, target_id, details, prev, digest)


def _row_to_entry(row: tuple[Any, ...]) -> AuditEntry:
    seq, at, actor, action, target_id, details, prev_hash, digest = row
    return AuditEntry(seq, at, actor, action, target_id, json.loads(details), prev_hash, digest)


_COLUMNS = "seq, at, actor, action, target_id, details, prev_hash, hash"


def entries(conn: sqlite3.Connection, target_id: str | None = None) -> list[AuditEntry]:
    if target_id is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq").fetchall()
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE target_id = ? ORDER BY seq",
                            (target_id,)).fetchall()
    return [_row_to_entry(r) for r in rows]


def page(conn: sqlite3.Connection, after_seq: int, limit: int,
         target_id: str | None = None) -> list[AuditEntry]:
    """Entries after ``after_seq`` in order, at most ``limit`` (the primary key does the work)."""
    if target_id is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                            (after_seq, limit))
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq > ? AND target_id = ? "
                            "ORDER BY seq LIMIT ?", (after_seq, target_id, limit))
    return [_row_to_entry(r) for r in rows.fetchall()]


def verify(conn: sqlite3.Connection) -> AuditVerification:
    """Walk the chain from the first entry; stop at the first one that does not hold."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    for row in conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq"):
        seq = row[0]
        count += 1
        if seq != expected_seq:
            return AuditVerification(False, count, expected_seq,
                                     f"entry {expected_seq} is missing (next is {seq})")
        try:
            details = json.loads(row[5])
        except (TypeError, ValueError):
            return AuditVerification(False, count, seq, "details are not valid JSON")
        if row[6] != prev:
            return AuditVerification(False, count, seq,
                                     "prev_hash does not match the previous entry's hash")
        digest = entry_hash(seq, row[1], row[2], row[3], row[4], details, row[6])
        if digest != row[7]:
            return AuditVerification(False, count, seq, "hash does not match the entry's content")
        prev = row[7]
        expected_seq += 1
    return AuditVerification(True, count)


def since(conn: sqlite3.Connection, seq: int) -> list[AuditEntry]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq", (seq,))
    return [_row_to_entry(r) for r in rows.fetchall()]


def last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(seq) FROM audit").fetchone()
    return int(row[0] or 0)


def head(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return row[0] if row else GENESIS
