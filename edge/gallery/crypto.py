"""Template encryption at rest: AES-256-GCM with a random nonce per row.

The associated data binds each ciphertext to its row (template id, person id, model id): a
ciphertext copied onto another row, or a row re-pointed at another person, fails to decrypt
instead of silently enrolling one face under someone else's id.

The database also holds a *key check* (a constant encrypted with the key), so a wrong key is
reported at open as a wrong key, not later as thousands of "tampered" rows.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.gallery.errors import GalleryKeyError

EMBEDDING_DIM = 128
VECTOR_BYTES = EMBEDDING_DIM * 4
NONCE_BYTES = 12
_AAD_PREFIX = b"edge-face/template/v1\x00"
_CHECK_AAD = b"edge-face/key-check/v1"
_CHECK_PLAIN = b"edge-face template key"


def template_aad(template_id: str, person_id: str, model_id: str) -> bytes:
    # NUL separators: ids and model ids never contain NUL, so the encoding is unambiguous.
    return _AAD_PREFIX + b"\x00".join(
        part.encode("utf-8") for part in (template_id, person_id, model_id)
    )


class TemplateCipher:
    """Encrypts and decrypts 128-d float32 embeddings with one device key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, template_id: str, person_id: str, model_id: str,
                vector: np.ndarray) -> tuple[bytes, bytes]:
        """Return ``(nonce, ciphertext)`` for a float32[128] vector (little-endian bytes)."""
        plain = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        return self.encrypt_bytes(template_id, person_id, model_id, plain)

    def encrypt_bytes(self, template_id: str, person_id: str, model_id: str,
                      plain: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._aead.encrypt(nonce, plain, template_aad(template_id, person_id,
                                                                    model_id))

    def decrypt_bytes(self, template_id: str, person_id: str, model_id: str, nonce: bytes,
                      ciphertext: bytes) -> bytes:
        try:
            plain = self._aead.decrypt(nonce, ciphertext,
                                       template_aad(template_id, person_id, model_id))
        except InvalidTag:
            raise GalleryKeyError(
                f"template {template_id} cannot be decrypted: the key does not match or the row "
                "was altered or moved to another person"
            ) from None
        if len(plain) != VECTOR_BYTES:
            raise GalleryKeyError(f"template {template_id} decrypts to {len(plain)} bytes, "
                                  f"expected {VECTOR_BYTES}")
        return plain

    def decrypt(self, template_id: str, person_id: str, model_id: str, nonce: bytes,
                ciphertext: bytes) -> np.ndarray:
        plain = self.decrypt_bytes(template_id, person_id, model_id, nonce, ciphertext)
        return np.frombuffer(plain, dtype="<f4").astype(np.float32)

    def key_check(self) -> bytes:
        """A fresh ``nonce || ciphertext`` of a constant, stored in the database."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, _CHECK_PLAIN, _CHECK_AAD)

    def matches(self, check: bytes) -> bool:
        """Whether this cipher's key is the one that produced ``check``."""
        try:
            plain = self._aead.decrypt(check[:NONCE_BYTES], check[NONCE_BYTES:], _CHECK_AAD)
        except (InvalidTag, ValueError):
            return False
        return plain == _CHECK_PLAIN
