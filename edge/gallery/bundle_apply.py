"""Applying a verified fleet bundle to the local gallery, inside one transaction.

The bundle is authoritative for the persons it carries and for the persons earlier bundles
brought (``origin = 'bundle'``): those missing from it are erased, so a "delete me" at the
operator's site reaches every device. Locally enrolled persons are left alone. Only differences
are written, so importing the same content again changes nothing, and the consent rule holds
here too: a person without a consent valid now gets no templates.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from edge.gallery import audit
from edge.gallery.errors import BundleError
from edge.gallery.queries import Tx, consents_of, insert_consent, remove_templates
from edge.gallery.records import ACTIVE, SnapshotPerson, consent_status
from edge.gallery.times import parse_iso, to_iso
from edge.progress import Progress, report


def _check_order(tx: Tx, bundle_id: str, created_at: str, force: bool,
                 max_skew_s: float) -> bool:
    """Return False when this bundle was already imported; raise when it must be refused."""
    if tx.conn.execute("SELECT 1 FROM bundle_imports WHERE bundle_id = ?",
                       (bundle_id,)).fetchone() and not force:
        return False
    if force:
        return True
    latest = to_iso(parse_iso(tx.now) + timedelta(seconds=max_skew_s))
    if created_at > latest:
        raise BundleError(f"bundle {bundle_id} is dated {created_at}, in the future (device "
                          f"time {tx.now}); check the clocks, or --force to import it anyway")
    last = tx.conn.execute("SELECT MAX(created_at) FROM bundle_imports").fetchone()[0]
    if last is not None and created_at < last:
        raise BundleError(f"bundle {bundle_id} ({created_at}) is older than the last imported "
                          f"bundle ({last}); --force to go back to it")
    return True


def _upsert_person(tx: Tx, person: SnapshotPerson, actor: str, bundle_id: str,
                   counts: dict[str, int]) -> None:
    conn = tx.conn
    row = conn.execute("SELECT label, created_at, updated_at FROM persons WHERE id = ?",
                       (person.id,)).fetchone()
    is_new = row is None
    changed = False
    if is_new:
        conn.execute("INSERT INTO persons (id, label, created_at, updated_at, origin) "
                     "VALUES (?, ?, ?, ?, 'bundle')",
                     (person.id, person.label, person.created_at, person.updated_at))
    elif tuple(row) != (person.label, person.created_at, person.updated_at):
        conn.execute("UPDATE persons SET label = ?, created_at = ?, updated_at = ? WHERE id = ?",
                     (person.label, person.created_at, person.updated_at, person.id))
        changed = True

    wanted_consents = sorted(person.consents, key=lambda c: c.id)
    if is_new or sorted(consents_of(conn, person.id), key=lambda c: c.id) != wanted_consents:
        conn.execute("DELETE FROM consents WHERE person_id = ?", (person.id,))
        for consent in wanted_consents:
            insert_consent(conn, person.id, consent)
        changed = True

    # Consent first, here too: no valid consent now, no templates.
    keep = person.templates if consent_status(person.consents, tx.now) == ACTIVE else ()
    skipped = len(person.templates) - len(keep)
    local = {r[0] for r in conn.execute("SELECT id FROM templates WHERE person_id = ?",
                                        (person.id,))}
    wanted_ids = {t.id for t in keep}
    removed = remove_templates(tx, person.id, sorted(local - wanted_ids))
    added = []
    for tpl in keep:
        if tpl.id in local:
            continue
        owner = conn.execute("SELECT person_id FROM templates WHERE id = ?", (tpl.id,)).fetchone()
        if owner is not None:
            raise BundleError(f"bundle {bundle_id}: template {tpl.id} belongs to another person "
                              "in this gallery")
        nonce, ciphertext = tx.cipher.encrypt(tpl.id, person.id, tpl.model_id, tpl.vector)
        conn.execute(
            "INSERT INTO templates (id, person_id, model_id, model_version, nonce, ciphertext, "
            "quality, score, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tpl.id, person.id, tpl.model_id, tpl.model_version, nonce, ciphertext,
             json.dumps(tpl.quality, sort_keys=True), tpl.quality["score"], tpl.source,
             tpl.created_at))
        tx.events.append((("template_added", tpl.id, person.id, tpl.vector), tpl.model_id))
        added.append(tpl.id)
    counts["templates_added"] += len(added)
    counts["templates_removed"] += len(removed)
    counts["templates_skipped_no_consent"] += skipped
    if is_new or changed or added or removed:
        counts["persons_added" if is_new else "persons_updated"] += 1
        audit.append(conn, tx.now, actor, "person_imported" if is_new else "person_updated",
                     person.id, {"bundle_id": bundle_id, "templates_added": added,
                                 "templates_removed": removed})


def apply_snapshot(tx: Tx, persons: Sequence[SnapshotPerson], *, bundle_id: str,
                   created_at: str, signer: str, force: bool, max_skew_s: float,
                   actor: str, progress: Progress | None = None) -> dict[str, Any]:
    counts = dict.fromkeys(("persons_added", "persons_updated", "persons_removed",
                            "templates_added", "templates_removed",
                            "templates_skipped_no_consent"), 0)
    result: dict[str, Any] = {"bundle_id": bundle_id, "created_at": created_at}
    if not _check_order(tx, bundle_id, created_at, force, max_skew_s):
        return {**result, "status": "already-imported", **counts}
    report(progress, 0, len(persons))
    try:
        for done, person in enumerate(persons, 1):
            _upsert_person(tx, person, actor, bundle_id, counts)
            report(progress, done, len(persons))
        incoming = {p.id for p in persons}
        gone = [r[0] for r in tx.conn.execute("SELECT id FROM persons WHERE origin = 'bundle'")
                if r[0] not in incoming]
        for pid in gone:
            templates = len(remove_templates(tx, pid))
            consents = tx.conn.execute("DELETE FROM consents WHERE person_id = ?",
                                       (pid,)).rowcount
            tx.conn.execute("DELETE FROM persons WHERE id = ?", (pid,))
            audit.append(tx.conn, tx.now, actor, "person_deleted", pid,
                         {"templates": templates, "consents": consents, "bundle_id": bundle_id})
            tx.events.append((("person_removed", pid), None))
            counts["templates_removed"] += templates
        counts["persons_removed"] = len(gone)
    except sqlite3.IntegrityError as exc:
        raise BundleError(f"bundle {bundle_id} conflicts with this gallery: {exc}") from None
    tx.conn.execute("INSERT OR IGNORE INTO bundle_imports (bundle_id, created_at, imported_at, "
                    "signer) VALUES (?, ?, ?, ?)", (bundle_id, created_at, tx.now, signer))
    audit.append(tx.conn, tx.now, actor, "bundle_imported", bundle_id,
                 {"signer": signer, "created_at": created_at, **counts})
    return {**result, "status": "imported", **counts}

