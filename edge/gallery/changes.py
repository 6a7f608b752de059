"""Gallery changes read back from the audit log, for consumers in other processes.

Why the audit log: every change is already recorded there, in commit order, with a sequence
number, by whichever process made it. Turning entries back into the listener events
(``template_added`` with the decrypted vector, ``templates_removed``, ``person_removed``) lets
a daemon follow edits made by the CLI in another process without any extra channel.

A template added and removed again between two polls yields only its removal; removals carry
no model id (the row is gone). Consumers therefore treat the removal of an unknown template id
as a no-op.
"""

from __future__ import annotations

import sqlite3

from edge.gallery import audit
from edge.gallery.crypto import TemplateCipher
from edge.gallery.queries import Event


def _added(conn: sqlite3.Connection, cipher: TemplateCipher, template_id: str,
           model_id: str | None) -> Event | None:
    row = conn.execute("SELECT person_id, model_id, nonce, ciphertext FROM templates "
                       "WHERE id = ?", (template_id,)).fetchone()
    if row is None or (model_id is not None and row[1] != model_id):
        return None
    person_id, model, nonce, ciphertext = row
    return ("template_added", template_id, person_id,
            cipher.decrypt(template_id, person_id, model, nonce, ciphertext))


def since(conn: sqlite3.Connection, cipher: TemplateCipher, seq: int,
          model_id: str | None = None) -> tuple[int, list[Event]]:
    """Events for the audit entries after ``seq``; returns ``(last seq seen, events)``."""
    events: list[Event | None] = []
    last = seq
    for entry in audit.since(conn, seq):
        last = entry.seq
        pid, details = entry.target_id, entry.details
        if entry.action == "template_added":
            events.append(_added(conn, cipher, details["template_id"], model_id))
        elif entry.action in ("template_dropped", "template_removed"):
            events.append(("templates_removed", pid, [details["template_id"]]))
        elif entry.action in ("consent_withdrawn", "consent_lapsed"):
            if details.get("template_ids"):
                events.append(("templates_removed", pid, list(details["template_ids"])))
        elif entry.action == "person_deleted":
            events.append(("person_removed", pid))
        elif entry.action in ("person_imported", "person_updated"):
            if details.get("templates_removed"):
                events.append(("templates_removed", pid, list(details["templates_removed"])))
            events.extend(_added(conn, cipher, tid, model_id)
                          for tid in details.get("templates_added", []))
    return last, [e for e in events if e is not None]
