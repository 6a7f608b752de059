"""The gallery store: consented persons, encrypted templates, erasure, subject access.

Thread-safety model: one SQLite connection per store, guarded by one re-entrant lock. The
daemon, the consent sweeper and the admin API share a store in one process; every public
method takes the lock for its whole transaction, so they serialise (each is short: one small
transaction). Other processes (the CLI next to a running daemon) open their own store; SQLite's
WAL and ``BEGIN IMMEDIATE`` serialise writers across processes, and each write first re-reads
the key check, so a key rotated by another process is picked up instead of mixing two keys.

Change events for the in-memory matcher: ``add_listener(callback, model_id=None)``. After each
commit, in commit order and under the store lock, the callback receives one of
``("template_added", template_id, person_id, vector)``, ``("templates_removed", person_id,
[template_ids])``, ``("person_removed", person_id)``. ``attach(model_id, load, listener)`` hands
the full matrix to ``load`` and subscribes ``listener`` under the lock, so no change falls in
between. Listeners hear only writes made through this object; ``changes_since(seq)`` replays
changes made by any process (the CLI next to the daemon) from the audit log. Callbacks must be
quick and must not call back into the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.gallery import audit, changes, keyring, validate
from edge.gallery.bundle_apply import apply_snapshot
from edge.gallery.crypto import VECTOR_BYTES, TemplateCipher
from edge.gallery.db import open_database, transaction, translate
from edge.gallery.errors import (
    ConsentError,
    GalleryInputError,
    GalleryKeyError,
    TemplateNotFound,
)
from edge.gallery.ids import CONSENT, PERSON, TEMPLATE, new_id
from edge.gallery.keyfile import load_or_create_key, new_key, read_key, replace_secret
from edge.gallery.queries import (
    CONSENT_COLS,
    Event,
    Tx,
    consents_of,
    insert_consent,
    remove_templates,
    require_person,
    templates_info_of,
)
from edge.gallery.records import (
    ACTIVE,
    Consent,
    ConsentInput,
    NewTemplate,
    Person,
    PersonSummary,
    SnapshotPerson,
    SnapshotTemplate,
    TemplateAddResult,
    TemplateBatchResult,
    TemplateMatrix,
    consent_expiry,
    consent_status,
)
from edge.gallery.times import Clock, to_iso, utc_now
from edge.progress import Progress

if TYPE_CHECKING:
    from edge.config import Config

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]

DB_NAME = "gallery.db"
SWEEPER = "system:consent-sweeper"
_ACTIVE_SQL = "withdrawn_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"


class GalleryStore:
    """The persistent gallery; see the module docstring for threads, processes and events."""

    def __init__(self, data_dir: Path, key_file: Path, *, max_templates: int = 5,
                 clock: Clock | None = None) -> None:
        if max_templates < 1:
            raise GalleryInputError("max_templates must be at least 1")
        self._path = Path(data_dir) / DB_NAME
        self._key_file = Path(key_file)
        self._max_templates = max_templates
        self._clock: Clock = clock or utc_now
        self._lock = threading.RLock()
        self._listeners: list[tuple[Listener, str | None]] = []
        self._pending_checkpoint = False
        self._conn = open_database(self._path)
        try:
            self._cipher, self._key_check = self._bind_key()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock | None = None) -> GalleryStore:
        return cls(config.storage.data_dir, config.storage.key_file,
                   max_templates=config.enrollment.max_templates, clock=clock)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def key_file(self) -> Path:
        return self._key_file

    def now(self) -> datetime:
        """The store's clock (injectable, so consent expiry can be tested without waiting)."""
        return self._clock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _bind_key(self) -> tuple[TemplateCipher, bytes]:
        """Find the key of this database; a new database adopts (or creates) the key file."""
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
            if row is None:
                cipher = TemplateCipher(load_or_create_key(self._key_file, keyring.WHAT))
                with transaction(self._conn):
                    row = self._conn.execute(
                        "SELECT value FROM meta WHERE key = 'key_check'").fetchone()
                    if row is None:
                        check = cipher.key_check()
                        self._conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?)",
                                           (check,))
                        return cipher, check
        except sqlite3.Error as exc:
            raise translate(exc, self._path) from None
        check = bytes(row[0])
        return keyring.resolve(check, self._key_file, self._path), check

    def _ensure_key(self) -> None:
        """Pick up a key rotated by another process since this store last looked."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        if row is None:
            raise GalleryKeyError(f"{self._path}: the key check is missing from the database")
        check = bytes(row[0])
        if check != self._key_check:
            self._cipher = keyring.resolve(check, self._key_file, self._path)
            self._key_check = check

    @contextlib.contextmanager
    def _write(self, now: str | None = None) -> Iterator[Tx]:
        """One write transaction; its events are delivered only once it has committed."""
        with self._lock:
            try:
                with transaction(self._conn) as conn:
                    self._ensure_key()
                    tx = Tx(conn, self._cipher, now or to_iso(self._clock()))
                    yield tx
            except sqlite3.Error as exc:
                raise translate(exc, self._path) from None
            self._dispatch(tx.events)

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one consistent state."""
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                try:
                    self._ensure_key()
                    yield self._conn
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise translate(exc, self._path) from None

    def _dispatch(self, events: list[tuple[Event, str | None]]) -> None:
        for event, model_id in events:
            for listener, wanted in list(self._listeners):
                if wanted is not None and model_id is not None and wanted != model_id:
                    continue
                try:
                    listener(event)
                except Exception:
                    log.exception("gallery listener failed", extra={"event": event[0]})

    def _checkpoint(self) -> bool:
        """Fold the WAL into the database and truncate it, so no erased row survives in it."""
        with self._lock:
            try:
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed", extra={"db": str(self._path),
                                                             "error": str(exc)})
                busy = 1
            self._pending_checkpoint = bool(busy)
            if busy:
                log.warning("WAL checkpoint blocked by a reader; retried at the next sweep",
                            extra={"db": str(self._path)})
            return not busy

    def add_listener(self, listener: Listener, model_id: str | None = None) -> None:
        """Receive change events; with ``model_id``, template additions of that model only."""
        with self._lock:
            self._listeners.append((listener, model_id))

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [(cb, m) for cb, m in self._listeners if cb is not listener]

    def attach(self, model_id: str, load: Callable[[TemplateMatrix], None],
               listener: Listener | None = None) -> int:
        """Hand every template of a model to ``load``, then subscribe ``listener``, atomically.

        Nothing can commit in between (the store lock is held throughout), so the consumer
        neither misses nor sees twice a change. Returns the audit sequence number the snapshot
        corresponds to, the starting point for ``changes_since``.
        """
        with self._lock:
            matrix = self.load_templates(model_id)
            with self._read() as conn:
                seq = audit.last_seq(conn)
            load(matrix)
            if listener is not None:
                self.add_listener(listener, model_id)
            return seq

    def changes_since(self, seq: int, model_id: str | None = None) -> tuple[int, list[Event]]:
        """Changes committed after audit entry ``seq`` by *any* process, as listener events.

        Listeners only hear about writes made through this store object; a daemon whose gallery
        is also edited by the CLI (another process) polls this instead, from the ``seq`` that
        ``attach`` returned. Returns the new ``seq`` to poll from and the events in order.
        """
        with self._read() as conn:
            return changes.since(conn, self._cipher, seq, model_id)

    # ------------------------------------------------------------------ helpers

    def _clean_consent(self, consent: ConsentInput, now: str) -> tuple[Any, ...]:
        given_by = validate.text(consent.given_by, "consent given by", required=True)
        purpose = validate.text(consent.purpose, "consent purpose", required=True)
        evidence = validate.text(consent.evidence, "consent evidence", required=False)
        expires = to_iso(consent.expires_at) if consent.expires_at is not None else None
        if expires is not None and expires <= now:
            raise GalleryInputError(f"consent expiry {expires} is not in the future")
        return given_by, purpose, expires, evidence

    # ------------------------------------------------------------------ persons and consent

    def add_person(self, label: str | None, consent: ConsentInput, *,
                   actor: str = "system") -> str:
        """Create a person together with their consent (never one without the other)."""
        label = validate.label(label)
        with self._write() as tx:
            given_by, purpose, expires, evidence = self._clean_consent(consent, tx.now)
            person_id, consent_id = new_id(PERSON), new_id(CONSENT)
            tx.conn.execute("INSERT INTO persons (id, label, created_at, updated_at, origin) "
                            "VALUES (?, ?, ?, ?, 'local')", (person_id, label, tx.now, tx.now))
            insert_consent(tx.conn, person_id, Consent(consent_id, given_by, purpose, tx.now,
                                                      expires, None, evidence))
            audit.append(tx.conn, tx.now, actor, "person_added", person_id,
                         {"consent_id": consent_id, "expires_at": expires,
                          "has_label": label is not None})
        log.info("person added", extra={"person_id": person_id})
        return person_id

    def grant_consent(self, person_id: str, consent: ConsentInput, *,
                      actor: str = "system") -> str:
        """Record a further consent (e.g. a renewal after expiry); returns the consent id."""
        with self._write() as tx:
            require_person(tx.conn, person_id)
            given_by, purpose, expires, evidence = self._clean_consent(consent, tx.now)
            consent_id = new_id(CONSENT)
            insert_consent(tx.conn, person_id, Consent(consent_id, given_by, purpose, tx.now,
                                                      expires, None, evidence))
            tx.conn.execute("UPDATE persons SET updated_at = ? WHERE id = ?", (tx.now, person_id))
            audit.append(tx.conn, tx.now, actor, "consent_granted", person_id,
                         {"consent_id": consent_id, "expires_at": expires})
        return consent_id

    def withdraw_consent(self, person_id: str, *, actor: str = "system") -> dict[str, Any]:
        """Withdraw every active consent and remove the person's templates at once."""
        with self._lock:
            with self._write() as tx:
                require_person(tx.conn, person_id)
                cur = tx.conn.execute(
                    f"UPDATE consents SET withdrawn_at = ? WHERE person_id = ? AND {_ACTIVE_SQL}",
                    (tx.now, person_id, tx.now))
                withdrawn = cur.rowcount
                removed = remove_templates(tx, person_id)
                tx.conn.execute("UPDATE persons SET updated_at = ? WHERE id = ?",
                                (tx.now, person_id))
                audit.append(tx.conn, tx.now, actor, "consent_withdrawn", person_id,
                             {"consents": withdrawn, "templates_removed": len(removed),
                              "template_ids": removed})
            if removed:
                self._checkpoint()
        return {"person_id": person_id, "consents_withdrawn": withdrawn,
                "templates_removed": len(removed)}

    def get_person(self, person_id: str) -> Person:
        with self._read() as conn:
            pid, label, created, updated, origin = require_person(conn, person_id)
            consents = consents_of(conn, pid)
            templates = templates_info_of(conn, pid)
        now = to_iso(self._clock())
        return Person(pid, label, created, updated, origin, consent_status(consents, now),
                      consents, templates)

    #: One person's summary row: the columns ``_summaries`` turns into ``PersonSummary``.
    _SUMMARY_SELECT = ("SELECT p.id, p.label, p.created_at, p.updated_at, p.origin, "
                       "(SELECT COUNT(*) FROM templates t WHERE t.person_id = p.id) "
                       "FROM persons p ")

    def _summaries(self, rows: Sequence[Sequence[Any]],
                   consents: dict[str, list[Consent]]) -> list[PersonSummary]:
        now = to_iso(self._clock())
        out = []
        for r in rows:
            mine = consents.get(r[0], [])
            out.append(PersonSummary(r[0], r[1], r[2], r[3], r[4], consent_status(mine, now),
                                     r[5], consent_expiry(mine, now)))
        return out

    def list_persons(self) -> list[PersonSummary]:
        with self._read() as conn:
            rows = conn.execute(self._SUMMARY_SELECT + "ORDER BY p.created_at, p.id").fetchall()
            consents: dict[str, list[Consent]] = {}
            for r in conn.execute(f"SELECT person_id, {CONSENT_COLS} FROM consents"):
                consents.setdefault(r[0], []).append(Consent(*r[1:]))
        return self._summaries(rows, consents)

    def list_persons_page(self, limit: int, after: tuple[str, str] | None = None
                          ) -> tuple[list[PersonSummary], tuple[str, str] | None]:
        """At most ``limit`` persons in creation order after the ``(created_at, id)`` key
        ``after``; returns them and the key to continue from (None at the end).

        A keyset page, not an offset: a page costs the same at person 90,000 as at person 1, and
        a person added or deleted meanwhile shifts nothing.
        """
        if limit < 1:
            raise GalleryInputError("limit must be at least 1")
        where, args = "", ()
        if after is not None:
            where, args = "WHERE (p.created_at, p.id) > (?, ?) ", tuple(after)
        with self._read() as conn:
            rows = conn.execute(self._SUMMARY_SELECT + where + "ORDER BY p.created_at, p.id "
                                "LIMIT ?", (*args, limit + 1)).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            consents = {r[0]: list(consents_of(conn, r[0])) for r in rows}
        return self._summaries(rows, consents), ((rows[-1][2], rows[-1][0]) if more else None)

    def set_label(self, person_id: str, label: str | None, *, actor: str = "system") -> None:
        """Change (or clear, with None) a person's label; the old one is overwritten on disk."""
        label = validate.label(label)
        with self._lock:
            with self._write() as tx:
                _, old, _, _, _ = require_person(tx.conn, person_id)
                tx.conn.execute("UPDATE persons SET label = ?, updated_at = ? WHERE id = ?",
                                (label, tx.now, person_id))
                audit.append(tx.conn, tx.now, actor, "label_changed", person_id,
                             {"had_label": old is not None, "has_label": label is not None})
            # secure_delete zeroes the old row in the database; the WAL still holds the page.
            self._checkpoint()

    def remove_template(self, person_id: str, template_id: str, *,
                        actor: str = "system") -> dict[str, Any]:
        """Erase one template of a person (a bad photo, an outdated look); returns a receipt."""
        with self._lock:
            with self._write() as tx:
                require_person(tx.conn, person_id)
                removed = remove_templates(tx, person_id, [template_id])
                if not removed:
                    raise TemplateNotFound(
                        f"person {person_id} has no template {template_id!r}")
                tx.conn.execute("UPDATE persons SET updated_at = ? WHERE id = ?",
                                (tx.now, person_id))
                entry = audit.append(tx.conn, tx.now, actor, "template_removed", person_id,
                                     {"template_id": template_id})
            checkpointed = self._checkpoint()
        return {"person_id": person_id, "template_id": template_id, "removed_at": tx.now,
                "audit_seq": entry.seq, "audit_hash": entry.hash,
                "wal_checkpointed": checkpointed}

    def stats(self) -> dict[str, int]:
        with self._read() as conn:
            persons = conn.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
            templates = conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        return {"persons": persons, "templates": templates}

    # ------------------------------------------------------------------ templates

    def add_template(self, person_id: str, model_id: str, model_version: str, vector: Any,
                     quality: dict[str, float], source: str = "", *,
                     actor: str = "system") -> TemplateAddResult:
        batch = self.add_templates(person_id, model_id, model_version,
                                   [NewTemplate(vector, quality, source)], actor=actor)
        if batch.added:
            return TemplateAddResult(batch.added[0], True, batch.dropped)
        return TemplateAddResult(batch.rejected[0], False, batch.dropped)

    def add_templates(self, person_id: str, model_id: str, model_version: str,
                      items: Sequence[NewTemplate], *,
                      actor: str = "system") -> TemplateBatchResult:
        """Add embeddings in one transaction; keep the ``max_templates`` best per model.

        Refused (``ConsentError``) unless the person has a consent valid now.
        """
        model_id = validate.model_id(model_id)
        model_version = validate.model_id(model_version, "model version")
        prepared = [(validate.vector(item.vector), validate.quality(item.quality),
                     validate.text(item.source, "source", required=False) or "")
                    for item in items]
        if not prepared:
            raise GalleryInputError("no templates to add")
        with self._write() as tx:
            require_person(tx.conn, person_id)
            consents = consents_of(tx.conn, person_id)
            status = consent_status(consents, tx.now)
            if status != ACTIVE:
                raise ConsentError.no_valid_consent(person_id, status)
            new: dict[str, np.ndarray] = {}
            for vec, qual, source in prepared:
                tid = new_id(TEMPLATE)
                nonce, ciphertext = tx.cipher.encrypt(tid, person_id, model_id, vec)
                tx.conn.execute(
                    "INSERT INTO templates (id, person_id, model_id, model_version, nonce, "
                    "ciphertext, quality, score, source, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tid, person_id, model_id, model_version, nonce, ciphertext,
                     json.dumps(qual, sort_keys=True), qual["score"], source, tx.now))
                audit.append(tx.conn, tx.now, actor, "template_added", person_id,
                             {"template_id": tid, "model_id": model_id,
                              "model_version": model_version, "score": qual["score"]})
                new[tid] = vec
            evicted = self._enforce_cap(tx, person_id, model_id, actor)
            tx.conn.execute("UPDATE persons SET updated_at = ? WHERE id = ?", (tx.now, person_id))
            added = tuple(t for t in new if t not in evicted)
            for tid in added:
                tx.events.append((("template_added", tid, person_id, new[tid]), model_id))
            dropped = tuple(t for t in evicted if t not in new)
            if dropped:
                tx.events.append((("templates_removed", person_id, list(dropped)), model_id))
        return TemplateBatchResult(added, tuple(t for t in new if t in evicted), dropped,
                                   tuple(new))

    def _enforce_cap(self, tx: Tx, person_id: str, model_id: str, actor: str) -> list[str]:
        """Drop the lowest-scoring templates (oldest first on ties) beyond ``max_templates``."""
        rows = tx.conn.execute(
            "SELECT id FROM templates WHERE person_id = ? AND model_id = ? "
            "ORDER BY score ASC, created_at ASC, rowid ASC", (person_id, model_id)).fetchall()
        excess = len(rows) - self._max_templates
        if excess <= 0:
            return []
        drop = [r[0] for r in rows[:excess]]
        tx.conn.executemany("DELETE FROM templates WHERE id = ?", [(t,) for t in drop])
        for tid in drop:
            audit.append(tx.conn, tx.now, actor, "template_dropped", person_id,
                         {"template_id": tid, "reason": "max_templates"})
        return drop

    def _template_rows(self, model_id: str) -> tuple[list[Any], TemplateCipher]:
        with self._read() as conn:
            rows = conn.execute("SELECT id, person_id, nonce, ciphertext FROM templates "
                                "WHERE model_id = ? ORDER BY rowid", (model_id,)).fetchall()
            return rows, self._cipher

    def iter_templates(self, model_id: str) -> Iterator[tuple[str, str, np.ndarray]]:
        """Yield ``(template_id, person_id, float32[128])`` for every template of a model."""
        rows, cipher = self._template_rows(model_id)
        for tid, pid, nonce, ciphertext in rows:
            yield tid, pid, cipher.decrypt(tid, pid, model_id, nonce, ciphertext)

    def load_templates(self, model_id: str) -> TemplateMatrix:
        """Decrypt every template of a model into one contiguous (n, 128) float32 matrix."""
        rows, cipher = self._template_rows(model_id)
        buf = bytearray(len(rows) * VECTOR_BYTES)
        view = memoryview(buf)
        decrypt = cipher.decrypt_bytes
        for i, (tid, pid, nonce, ciphertext) in enumerate(rows):
            view[i * VECTOR_BYTES:(i + 1) * VECTOR_BYTES] = decrypt(tid, pid, model_id, nonce,
                                                                    ciphertext)
        vectors = np.frombuffer(buf, dtype="<f4").reshape(len(rows), VECTOR_BYTES // 4)
        return TemplateMatrix([r[0] for r in rows], [r[1] for r in rows],
                              vectors.astype(np.float32, copy=False))

    # ------------------------------------------------------------------ lifecycle

    def sweep_consent(self, now: datetime | None = None, *,
                      actor: str = SWEEPER) -> list[dict[str, Any]]:
        """Remove the templates of everyone whose consent has expired or been withdrawn."""
        when = to_iso(now or self._clock())
        swept: list[dict[str, Any]] = []
        with self._lock:
            with self._write(when) as tx:
                pids = [r[0] for r in tx.conn.execute(
                    "SELECT DISTINCT t.person_id FROM templates t WHERE NOT EXISTS ("
                    "SELECT 1 FROM consents c WHERE c.person_id = t.person_id AND "
                    "c.withdrawn_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > ?))",
                    (when,))]
                for pid in pids:
                    reason = consent_status(consents_of(tx.conn, pid), when)
                    removed = remove_templates(tx, pid)
                    audit.append(tx.conn, when, actor, "consent_lapsed", pid,
                                 {"reason": reason, "templates_removed": len(removed),
                                  "template_ids": removed})
                    swept.append({"person_id": pid, "reason": reason,
                                  "templates_removed": len(removed)})
            if swept or self._pending_checkpoint:
                self._checkpoint()
        if swept:
            log.info("consent sweep removed templates", extra={"persons": len(swept)})
        return swept

    def delete_person(self, person_id: str, *, actor: str = "system") -> dict[str, Any]:
        """Erase a person: templates, consent, label; then truncate the WAL. Returns a receipt."""
        with self._lock:
            with self._write() as tx:
                _, label, _, _, _ = require_person(tx.conn, person_id)
                templates = tx.conn.execute("SELECT COUNT(*) FROM templates WHERE person_id = ?",
                                            (person_id,)).fetchone()[0]
                consents = tx.conn.execute("SELECT COUNT(*) FROM consents WHERE person_id = ?",
                                           (person_id,)).fetchone()[0]
                tx.conn.execute("DELETE FROM templates WHERE person_id = ?", (person_id,))
                tx.conn.execute("DELETE FROM consents WHERE person_id = ?", (person_id,))
                tx.conn.execute("DELETE FROM persons WHERE id = ?", (person_id,))
                entry = audit.append(tx.conn, tx.now, actor, "person_deleted", person_id,
                                     {"templates": templates, "consents": consents})
                tx.events.append((("person_removed", person_id), None))
            checkpointed = self._checkpoint()
        log.info("person deleted", extra={"person_id": person_id})
        return {"person_id": person_id, "deleted_at": tx.now,
                "removed": {"templates": templates, "consents": consents,
                            "label": label is not None},
                "audit_seq": entry.seq, "audit_hash": entry.hash,
                "wal_checkpointed": checkpointed}

    def export_person(self, person_id: str, *, actor: str = "system") -> dict[str, Any]:
        """Everything held about one person (no embeddings); the access itself is audited."""
        with self._write() as tx:
            pid, label, created, updated, origin = require_person(tx.conn, person_id)
            audit.append(tx.conn, tx.now, actor, "person_exported", pid, {})
            consents = consents_of(tx.conn, pid)
            templates = templates_info_of(tx.conn, pid)
            entries = audit.entries(tx.conn, pid)
        return {
            "exported_at": tx.now,
            "person": {"id": pid, "label": label, "created_at": created, "updated_at": updated,
                       "origin": origin},
            "consent": consent_status(consents, tx.now),
            "consents": [c.to_dict() for c in consents],
            "templates": {"count": len(templates), "items": [t.to_dict() for t in templates]},
            "audit": [e.to_dict() for e in entries],
        }

    # ------------------------------------------------------------------ audit and keys

    def verify_audit(self) -> audit.AuditVerification:
        with self._read() as conn:
            return audit.verify(conn)

    def audit_entries(self, target_id: str | None = None) -> list[audit.AuditEntry]:
        with self._read() as conn:
            return audit.entries(conn, target_id)

    def audit_page(self, after_seq: int, limit: int, target_id: str | None = None
                   ) -> tuple[list[audit.AuditEntry], int | None]:
        """At most ``limit`` entries after ``after_seq``; returns them and the next ``after``."""
        with self._read() as conn:
            rows = audit.page(conn, after_seq, limit + 1, target_id)
        return rows[:limit], (rows[limit - 1].seq if len(rows) > limit else None)

    def rotate_key(self, *, actor: str = "system") -> dict[str, Any]:
        """Re-encrypt every template under a fresh key; see ``keyring`` for the crash story."""
        pending = keyring.pending_path(self._key_file)
        with self._lock:
            with self._write() as tx:
                replace_secret(pending, new_key())
                fresh = TemplateCipher(read_key(pending, "pending " + keyring.WHAT))
                rows = tx.conn.execute(
                    "SELECT id, person_id, model_id, nonce, ciphertext FROM templates").fetchall()
                updates = []
                for tid, pid, model, nonce, ciphertext in rows:
                    plain = tx.cipher.decrypt_bytes(tid, pid, model, nonce, ciphertext)
                    updates.append((*fresh.encrypt_bytes(tid, pid, model, plain), tid))
                tx.conn.executemany("UPDATE templates SET nonce = ?, ciphertext = ? WHERE id = ?",
                                    updates)
                check = fresh.key_check()
                tx.conn.execute("UPDATE meta SET value = ? WHERE key = 'key_check'", (check,))
                entry = audit.append(tx.conn, tx.now, actor, "key_rotated", None,
                                     {"templates": len(rows)})
            self._cipher, self._key_check = fresh, check
            keyring.finish_rotation(self._key_file, check)
            self._checkpoint()
        log.info("template key rotated", extra={"templates": len(rows)})
        return {"rotated_at": tx.now, "templates": len(rows), "key_file": str(self._key_file),
                "audit_hash": entry.hash}

    # ------------------------------------------------------------------ fleet bundles

    def export_snapshot(self, bundle_id: str, *, actor: str = "system") -> list[SnapshotPerson]:
        """Every person with consent and decrypted templates, for a fleet bundle (audited)."""
        with self._write() as tx:
            persons = []
            for pid, label, created, updated in tx.conn.execute(
                    "SELECT id, label, created_at, updated_at FROM persons ORDER BY id").fetchall():
                templates = tuple(
                    SnapshotTemplate(tid, model, version,
                                     tx.cipher.decrypt(tid, pid, model, nonce, ciphertext),
                                     json.loads(quality), source, created_t)
                    for tid, model, version, nonce, ciphertext, quality, source, created_t
                    in tx.conn.execute(
                        "SELECT id, model_id, model_version, nonce, ciphertext, quality, source, "
                        "created_at FROM templates WHERE person_id = ? ORDER BY rowid", (pid,)))
                persons.append(SnapshotPerson(pid, label, created, updated,
                                              consents_of(tx.conn, pid), templates))
            audit.append(tx.conn, tx.now, actor, "bundle_exported", bundle_id,
                         {"persons": len(persons),
                          "templates": sum(len(p.templates) for p in persons)})
        return persons

    def import_snapshot(self, persons: Sequence[SnapshotPerson], *, bundle_id: str,
                        created_at: str, signer: str, force: bool = False,
                        max_skew_s: float = 300.0, actor: str = "system",
                        progress: Progress | None = None) -> dict[str, Any]:
        """Make this gallery hold exactly the bundle's persons, in one transaction.

        Persons that came from an earlier bundle and are absent now are erased (so an erasure
        at the operator's site reaches every device); locally enrolled persons are kept.
        """
        with self._lock:
            with self._write() as tx:
                result = apply_snapshot(tx, persons, bundle_id=bundle_id,
                                        created_at=created_at, signer=signer, force=force,
                                        max_skew_s=max_skew_s, actor=actor,
                                        progress=progress)
            if result["persons_removed"] or result["templates_removed"]:
                self._checkpoint()
        return result

