"""Which key file opens this database, and the file side of a key rotation.

Rotation protocol (``GalleryStore.rotate_key``), chosen so that a crash at any instant leaves a
key file that opens the database:

1. take the database write lock (``BEGIN IMMEDIATE``): one rotation at a time, and no other
   process can slip in a row encrypted with the old key;
2. write the new key to ``<key_file>.new`` (0600, fsynced);
3. re-encrypt every template and replace the key check, in that same transaction; COMMIT;
4. rename ``<key_file>.new`` over ``<key_file>`` (fsynced).

Crash before 3 commits: the database still uses the old key, which is still ``<key_file>``; the
stray ``.new`` is never used and the next rotation overwrites it. Crash between 3 and 4: the
database uses the new key, ``<key_file>`` does not match it but ``.new`` does; the next open
finds that out through the key check and finishes step 4. The old key is not kept: backups made
before a rotation become unreadable, which is what an operator rotating after a leak wants.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.gallery.crypto import TemplateCipher
from edge.gallery.errors import GalleryKeyError
from edge.gallery.keyfile import move_secret, read_key

log = logging.getLogger(__name__)

WHAT = "template key file"


def pending_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".new")


def resolve(check: bytes, key_file: Path, db_path: Path) -> TemplateCipher:
    """Return the cipher whose key produced ``check``, finishing an interrupted rotation."""
    pending = pending_path(key_file)
    if key_file.exists():
        cipher = TemplateCipher(read_key(key_file, WHAT))
        if cipher.matches(check):
            return cipher
    if pending.exists():
        cipher = TemplateCipher(read_key(pending, "pending " + WHAT))
        if cipher.matches(check):
            finish_rotation(key_file, check)
            log.warning("finished an interrupted key rotation", extra={"key_file": str(key_file)})
            return cipher
    if not key_file.exists():
        raise GalleryKeyError(
            f"{WHAT} {key_file} is missing and {db_path} is encrypted with it; restore that "
            "file (a new key cannot decrypt the existing templates)"
        )
    raise GalleryKeyError(
        f"{WHAT} {key_file} is not the key {db_path} was encrypted with (wrong key file, or a "
        "database copied from another device)"
    )


def finish_rotation(key_file: Path, check: bytes) -> None:
    """Step 4: make the new key the key file (tolerates another process having done it)."""
    pending = pending_path(key_file)
    try:
        move_secret(pending, key_file)
    except GalleryKeyError:
        if pending.exists() or not TemplateCipher(read_key(key_file, WHAT)).matches(check):
            raise
