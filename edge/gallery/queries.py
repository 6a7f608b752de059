"""Row-level helpers shared by the store and the bundle importer, all inside a transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from edge.gallery.crypto import TemplateCipher
from edge.gallery.errors import PersonNotFound
from edge.gallery.ids import PERSON, is_id
from edge.gallery.records import Consent, TemplateInfo

Event = tuple[Any, ...]

CONSENT_COLS = "id, given_by, purpose, granted_at, expires_at, withdrawn_at, evidence"
TEMPLATE_INFO_COLS = "id, model_id, model_version, quality, source, created_at"


class Tx:
    """What a write transaction needs: the connection, the cipher, its time, pending events.

    Events are ``(event, model_id or None)``; the store delivers them after the commit.
    """

    __slots__ = ("cipher", "conn", "events", "now")

    def __init__(self, conn: sqlite3.Connection, cipher: TemplateCipher, now: str) -> None:
        self.conn = conn
        self.cipher = cipher
        self.now = now
        self.events: list[tuple[Event, str | None]] = []


def require_person(conn: sqlite3.Connection, person_id: str) -> tuple[Any, ...]:
    """``(id, label, created_at, updated_at, origin)`` or ``PersonNotFound``."""
    row = None
    if is_id(person_id, PERSON):
        row = conn.execute(
            "SELECT id, label, created_at, updated_at, origin FROM persons WHERE id = ?",
            (person_id,)).fetchone()
    if row is None:
        raise PersonNotFound(f"unknown person id {person_id!r}")
    return tuple(row)


def consents_of(conn: sqlite3.Connection, person_id: str) -> tuple[Consent, ...]:
    rows = conn.execute(f"SELECT {CONSENT_COLS} FROM consents WHERE person_id = ? "
                        "ORDER BY granted_at, id", (person_id,)).fetchall()
    return tuple(Consent(*r) for r in rows)


def insert_consent(conn: sqlite3.Connection, person_id: str, consent: Consent) -> None:
    conn.execute(f"INSERT INTO consents ({CONSENT_COLS}, person_id) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (consent.id, consent.given_by, consent.purpose, consent.granted_at,
                  consent.expires_at, consent.withdrawn_at, consent.evidence, person_id))


def templates_info_of(conn: sqlite3.Connection, person_id: str) -> tuple[TemplateInfo, ...]:
    rows = conn.execute(f"SELECT {TEMPLATE_INFO_COLS} FROM templates WHERE person_id = ? "
                        "ORDER BY created_at, rowid", (person_id,)).fetchall()
    return tuple(TemplateInfo(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows)


def remove_templates(tx: Tx, person_id: str, template_ids: Sequence[str] | None = None
                     ) -> list[str]:
    """Delete a person's templates (all, or the given ids) and queue the matcher events."""
    rows = tx.conn.execute("SELECT id, model_id FROM templates WHERE person_id = ? "
                           "ORDER BY rowid", (person_id,)).fetchall()
    if template_ids is not None:
        wanted = set(template_ids)
        rows = [r for r in rows if r[0] in wanted]
    by_model: dict[str, list[str]] = {}
    for tid, model in rows:
        by_model.setdefault(model, []).append(tid)
    tx.conn.executemany("DELETE FROM templates WHERE id = ?", [(r[0],) for r in rows])
    for model, tids in by_model.items():
        tx.events.append((("templates_removed", person_id, tids), model))
    return [r[0] for r in rows]
