"""API bearer tokens: a name, a scope, and only the SHA-256 of the secret on disk.

Why a small file and not the gallery database: tokens are the device's access control, not
gallery data, and they must be manageable while the daemon runs (``edge-face token revoke`` has
to take effect on the next request, without a restart). The daemon therefore re-reads the file
whenever its identity (inode, size, mtime) changes, which costs one ``stat`` per request.

Why SHA-256 and no slow password hash: generated secrets carry 256 random bits, so a stolen
file cannot be brute-forced anyway; operator-supplied secrets (``--stdin``, for Ansible) must
be at least 32 characters. Checks compare the digest against every stored digest with
``hmac.compare_digest`` and no early exit, so timing says nothing about which token is close.

The file is 0600 and written atomically under an advisory lock, so two CLI commands at once
cannot lose a token; written by root into a directory the service user owns (``sudo edge-face
token create`` on a device), it is handed to that user so the daemon can read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge.config import Config
from edge.errors import EdgeError
from edge.gallery.keyfile import check_private, replace_secret
from edge.gallery.times import to_iso, utc_now

log = logging.getLogger(__name__)

Scope = Literal["read", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "admin")
FORMAT = 1
TOKEN_PREFIX = "eft_"
MIN_SECRET_CHARS = 32
MAX_SECRET_CHARS = 512
MAX_TOKENS = 1000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
DEFAULT_NAME = "api-tokens.json"


class TokenError(EdgeError):
    """A token command that cannot be carried out (bad name, unknown token, unsafe file)."""


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    scope: Scope
    created_at: str
    digest: bytes

    def allows(self, needed: Scope) -> bool:
        return needed == "read" or self.scope == "admin"

    def to_dict(self) -> dict[str, Any]:
        """What may be shown: never the digest."""
        return {"id": self.id, "name": self.name, "scope": self.scope,
                "created_at": self.created_at}


def token_file(config: Config) -> Path:
    """``[api] token_file``, else ``<data dir>/api-tokens.json``."""
    if config.api.token_file:
        return Path(config.api.token_file).expanduser()
    return config.storage.data_dir / DEFAULT_NAME


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TokenError(f"token name {name!r} must be 1-64 letters, digits or ._@- "
                         "(starting with a letter or digit)")
    return name


def _check_scope(scope: str) -> Scope:
    if scope not in SCOPES:
        raise TokenError(f"token scope {scope!r} must be one of {', '.join(SCOPES)}")
    return scope  # type: ignore[return-value]


def _check_secret(secret: str) -> str:
    secret = secret.strip()
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise TokenError(f"a token secret must be {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} "
                         f"characters (got {len(secret)})")
    if any(ord(ch) <= 32 or ord(ch) > 126 for ch in secret):
        raise TokenError("a token secret must be printable ASCII without spaces")
    return secret


class TokenStore:
    """The token file; see the module docstring for the reload, hash and locking rules."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int] | None = None
        self._tokens: tuple[Token, ...] = ()
        self._error: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> TokenStore:
        return cls(token_file(config))

    # -- reading -------------------------------------------------------------------------------
    def _parse(self, data: bytes) -> tuple[Token, ...]:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT or not isinstance(doc.get("tokens"), list):
                raise ValueError("not a token file of this version")
            tokens = tuple(Token(str(t["id"]), _check_name(t["name"]), _check_scope(t["scope"]),
                                 str(t["created_at"]), bytes.fromhex(t["sha256"]))
                           for t in doc["tokens"])
        except (ValueError, KeyError, TypeError, AttributeError, TokenError) as exc:
            raise TokenError(f"token file {self.path} is damaged ({exc}); restore it or "
                             "remove it and create the tokens again") from None
        if any(len(t.digest) != 32 for t in tokens):
            raise TokenError(f"token file {self.path} is damaged (a digest is not SHA-256)")
        return tokens

    def _read(self) -> tuple[Token, ...]:
        """Every token; a missing file is no tokens, an unsafe or damaged one an error."""
        if not self.path.exists():
            return ()
        try:
            check_private(self.path, "token file")
            data = self.path.read_bytes()
        except (OSError, EdgeError) as exc:
            raise TokenError(str(exc)) from None
        return self._parse(data)

    def tokens(self) -> tuple[Token, ...]:
        """The current tokens, re-read when the file changed; fails closed on a bad file."""
        try:
            st = os.stat(self.path)
            identity: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            identity = None
        except OSError as exc:
            identity = (-1, -1, -1)
            self._error = f"token file {self.path}: {exc.strerror}"
        with self._lock:
            if identity != self._identity or self._error:
                try:
                    self._tokens, self._error = self._read(), None
                except TokenError as exc:
                    if str(exc) != self._error:
                        log.error("api tokens unusable; every request is refused",
                                  extra={"error": str(exc)})
                    self._tokens, self._error = (), str(exc)
                self._identity = identity
            return self._tokens

    def verify(self, secret: str) -> Token | None:
        """The token whose secret this is, or None; constant time over the stored tokens."""
        if not secret or len(secret) > MAX_SECRET_CHARS:
            return None
        digest = _digest(secret)
        found: Token | None = None
        for token in self.tokens():
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    # -- writing (the CLI) -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _editing(self) -> Iterator[list[Token]]:
        """Read-modify-write under an exclusive lock; the list is written back if no error."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            tokens = list(self._read())
            yield tokens
            doc = {"format": FORMAT, "tokens": [
                {**t.to_dict(), "sha256": t.digest.hex()} for t in tokens]}
            replace_secret(self.path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))
            _hand_to_directory_owner(self.path, lock_path)
        finally:
            os.close(fd)

    def create(self, name: str, scope: str, secret: str | None = None) -> dict[str, Any]:
        """A new token; with ``secret`` (operator-chosen) the call is idempotent per name."""
        name, checked_scope = _check_name(name), _check_scope(scope)
        given = secret is not None
        secret = _check_secret(secret) if secret is not None else (
            TOKEN_PREFIX + secrets.token_urlsafe(32))
        digest = _digest(secret)
        with self._editing() as tokens:
            same = [t for t in tokens if t.name == name]
            if same and not given:
                raise TokenError(f"a token named {name!r} exists: revoke it first, or "
                                 f"`edge-face token rotate {name}` for a new secret")
            if same and same[0].scope == checked_scope and hmac.compare_digest(
                    same[0].digest, digest):
                return {**same[0].to_dict(), "changed": False}
            if any(hmac.compare_digest(t.digest, digest) for t in tokens if t.name != name):
                raise TokenError("that secret is already used by another token")
            if len(tokens) - len(same) >= MAX_TOKENS:
                raise TokenError(f"at most {MAX_TOKENS} tokens; revoke unused ones first")
            token = Token("tk_" + secrets.token_hex(8), name, checked_scope,
                          to_iso(utc_now()), digest)
            tokens[:] = [t for t in tokens if t.name != name] + [token]
        log.info("api token created", extra={"token_name": name, "scope": checked_scope,
                                             "token_id": token.id, "replaced": bool(same)})
        out = {**token.to_dict(), "changed": True}
        if not given:
            out["token"] = secret
        return out

    def rotate(self, name_or_id: str) -> dict[str, Any]:
        """A fresh secret for an existing token (same name and scope); the old one dies now."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._editing() as tokens:
            old = self._find(tokens, name_or_id)
            token = Token("tk_" + secrets.token_hex(8), old.name, old.scope,
                          to_iso(utc_now()), _digest(secret))
            tokens[:] = [token if t is old else t for t in tokens]
        log.info("api token rotated", extra={"token_name": old.name, "token_id": token.id})
        return {**token.to_dict(), "changed": True, "token": secret}

    def revoke(self, name_or_id: str) -> dict[str, Any]:
        with self._editing() as tokens:
            gone = self._find(tokens, name_or_id)
            tokens.remove(gone)
        log.info("api token revoked", extra={"token_name": gone.name, "token_id": gone.id})
        return {"revoked": gone.id, "name": gone.name}

    def list(self) -> dict[str, Any]:
        return {"tokens": [t.to_dict() for t in self._read()]}

    @staticmethod
    def _find(tokens: list[Token], name_or_id: str) -> Token:
        for token in tokens:
            if name_or_id in (token.name, token.id):
                return token
        raise TokenError(f"no token named {name_or_id!r}")


def _hand_to_directory_owner(*paths: Path) -> None:
    """Run as root in the service's own directory: give the files to the directory's owner."""
    if os.geteuid() != 0:
        return
    parent = paths[0].parent.stat()
    if parent.st_uid == 0:
        return
    for path in paths:
        os.chown(path, parent.st_uid, parent.st_gid)
