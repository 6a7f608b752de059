"""The gallery schema, as forward-only steps; ``PRAGMA user_version`` records the last applied.

Why steps and never edits: devices in the field run every version ever shipped. A new version
appends a step; step N is applied to version N-1 inside one transaction (SQLite DDL is
transactional, so is ``user_version``), so a crash mid-upgrade leaves the old version intact.
Tests migrate from every earlier version (``tests/test_gallery_db.py``).
"""

from __future__ import annotations

# v1: persons, consent records, encrypted templates, the append-only audit log, key check.
_V1 = (
    """CREATE TABLE persons (
        id TEXT PRIMARY KEY,
        label TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE consents (
        id TEXT PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
        given_by TEXT NOT NULL,
        purpose TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        expires_at TEXT,
        withdrawn_at TEXT,
        evidence TEXT
    )""",
    "CREATE INDEX consents_person ON consents(person_id)",
    """CREATE TABLE templates (
        id TEXT PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
        model_id TEXT NOT NULL,
        model_version TEXT NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        quality TEXT NOT NULL,
        score REAL NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX templates_person ON templates(person_id, model_id)",
    "CREATE INDEX templates_model ON templates(model_id)",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target_id TEXT,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX audit_target ON audit(target_id)",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
)

# v2: fleet bundles. Persons remember where they came from, so a person erased at the operator's
# site is erased on every device by the next bundle; imported bundles are recorded for
# idempotency and to refuse going back to an older one.
_V2 = (
    "ALTER TABLE persons ADD COLUMN origin TEXT NOT NULL DEFAULT 'local'",
    """CREATE TABLE bundle_imports (
        bundle_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        signer TEXT NOT NULL
    )""",
)

# v3: the admin API pages through persons in creation order; without an index every page of a
# 100k-person gallery would sort the whole table.
_V3 = (
    "CREATE INDEX persons_created ON persons(created_at, id)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3)
LATEST = len(MIGRATIONS)
