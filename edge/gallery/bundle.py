"""Fleet bundles: one gallery, encrypted for the fleet, signed by the operator.

File layout (all lengths big-endian)::

    b"EDGE-FACE-BUNDLE" | u32 header length | header (canonical JSON) | ciphertext | signature

- the payload (persons, consent records, templates as float32) is AES-256-GCM encrypted with the
  fleet key (a 32-byte key file shared by the fleet), the magic and header as associated data;
- the Ed25519 signature (64 bytes, last in the file) covers everything before it, and is
  checked against the configured public keys *before* anything else is parsed, so a tampered,
  truncated or foreign bundle is rejected without touching its content.

Why a symmetric fleet key and not one key per device: a bundle is written once and copied to
thousands of devices by Ansible; per-device encryption would make the operator's machine hold
every device's public key and the bundle grow with the fleet. Devices hold the fleet key (0600)
next to their own template key; templates are re-encrypted with the device key on import.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.gallery import validate
from edge.gallery.audit import canonical
from edge.gallery.crypto import NONCE_BYTES, VECTOR_BYTES
from edge.gallery.errors import BundleError, GalleryError, GalleryKeyError
from edge.gallery.ids import BUNDLE, CONSENT, PERSON, TEMPLATE, is_id, new_id
from edge.gallery.keyfile import create_secret, read_key, read_secret, replace_secret
from edge.gallery.records import Consent, SnapshotPerson, SnapshotTemplate
from edge.gallery.times import parse_iso, to_iso
from edge.progress import Progress

if TYPE_CHECKING:
    from edge.gallery.store import GalleryStore

MAGIC = b"EDGE-FACE-BUNDLE"
FORMAT = 1
SIGNATURE_BYTES = 64
MAX_HEADER_BYTES = 64 * 1024
MAX_BUNDLE_BYTES = 2 * 1024 ** 3
MAX_SKEW_S = 300.0
_LEN = struct.Struct(">I")


# ---------------------------------------------------------------------- keys

def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def fleet_key_id(key: bytes) -> str:
    """A name for the fleet key that reveals nothing about it, to explain a wrong-key failure."""
    return hashlib.sha256(b"edge-face/fleet-key-id/v1\x00" + key).hexdigest()[:32]


def public_key_path(signing_key_file: Path) -> Path:
    return signing_key_file.with_suffix(".pub")


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    data = read_secret(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise GalleryKeyError(f"signing key {path} is not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise GalleryKeyError(f"signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise BundleError(f"public key {path} cannot be read: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise BundleError(f"public key {path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"public key {path} is not an Ed25519 key")
    return key


def load_trusted_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Every ``*.pub`` in ``directory``, by key id; none at all is an error, not "trust all"."""
    if not directory.is_dir():
        raise BundleError(f"trusted keys directory {directory} does not exist; put the "
                          "operator's .pub files there")
    keys = {key_id(k): k for k in (load_public_key(p) for p in sorted(directory.glob("*.pub")))}
    if not keys:
        raise BundleError(f"no trusted public keys (*.pub) in {directory}")
    return keys


def generate_keys(signing_key_file: Path, fleet_key_file: Path) -> dict[str, Any]:
    """Create the operator's Ed25519 pair and the fleet key, each only if absent."""
    created: list[str] = []
    if not signing_key_file.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        if create_secret(signing_key_file, pem):
            created.append(str(signing_key_file))
    private = load_signing_key(signing_key_file)
    public_file = public_key_path(signing_key_file)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not public_file.exists() or public_file.read_bytes() != public_pem:
        replace_secret(public_file, public_pem, mode=0o644)
        created.append(str(public_file))
    if not fleet_key_file.exists() and create_secret(fleet_key_file, os.urandom(32)):
        created.append(str(fleet_key_file))
    return {"signing_key": str(signing_key_file), "public_key": str(public_file),
            "fleet_key": str(fleet_key_file), "key_id": key_id(private.public_key()),
            "fleet_key_id": fleet_key_id(read_key(fleet_key_file, "fleet key file")),
            "created": created}


# ---------------------------------------------------------------------- payload

def _encode(persons: list[SnapshotPerson]) -> bytes:
    out = []
    for p in persons:
        out.append({
            "id": p.id, "label": p.label, "created_at": p.created_at, "updated_at": p.updated_at,
            "consents": [c.to_dict() for c in p.consents],
            "templates": [{
                "id": t.id, "model_id": t.model_id, "model_version": t.model_version,
                "vector": base64.b64encode(np.asarray(t.vector, "<f4").tobytes()).decode("ascii"),
                "quality": t.quality, "source": t.source, "created_at": t.created_at,
            } for t in p.templates],
        })
    return canonical({"format": FORMAT, "persons": out})


def _field(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise BundleError(f"{where}: missing {key!r}")
    return obj[key]


def _time(value: Any, where: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BundleError(f"{where}: expected an ISO 8601 time")
    return to_iso(parse_iso(value, where))


def _decode_template(raw: Any, where: str) -> SnapshotTemplate:
    tid = _field(raw, "id", where)
    if not is_id(tid, TEMPLATE):
        raise BundleError(f"{where}: bad template id {tid!r}")
    try:
        blob = base64.b64decode(_field(raw, "vector", where), validate=True)
    except (ValueError, TypeError):
        raise BundleError(f"{where}: vector is not base64") from None
    if len(blob) != VECTOR_BYTES:
        raise BundleError(f"{where}: vector has {len(blob)} bytes, expected {VECTOR_BYTES}")
    return SnapshotTemplate(
        tid, validate.model_id(_field(raw, "model_id", where)),
        validate.model_id(_field(raw, "model_version", where), "model version"),
        validate.vector(np.frombuffer(blob, dtype="<f4")),
        validate.quality(_field(raw, "quality", where)),
        validate.text(_field(raw, "source", where), "source", required=False) or "",
        str(_time(_field(raw, "created_at", where), where)))


def _decode_consent(raw: Any, where: str) -> Consent:
    cid = _field(raw, "id", where)
    if not is_id(cid, CONSENT):
        raise BundleError(f"{where}: bad consent id {cid!r}")
    return Consent(
        cid, str(validate.text(_field(raw, "given_by", where), "given_by", required=True)),
        str(validate.text(_field(raw, "purpose", where), "purpose", required=True)),
        str(_time(_field(raw, "granted_at", where), where)),
        _time(raw.get("expires_at"), where, optional=True),
        _time(raw.get("withdrawn_at"), where, optional=True),
        validate.text(raw.get("evidence"), "evidence", required=False))


def _decode(data: bytes) -> list[SnapshotPerson]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BundleError("bundle payload is not valid JSON") from None
    if _field(doc, "format", "payload") != FORMAT:
        raise BundleError(f"bundle payload format {doc.get('format')!r} is not supported")
    raw_persons = _field(doc, "persons", "payload")
    if not isinstance(raw_persons, list):
        raise BundleError("payload: persons must be a list")
    persons: list[SnapshotPerson] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_persons):
        where = f"persons[{i}]"
        try:
            pid = _field(raw, "id", where)
            if not is_id(pid, PERSON) or pid in seen:
                raise BundleError(f"{where}: bad or repeated person id {pid!r}")
            seen.add(pid)
            consents = _field(raw, "consents", where)
            templates = _field(raw, "templates", where)
            if not isinstance(consents, list) or not isinstance(templates, list):
                raise BundleError(f"{where}: consents and templates must be lists")
            persons.append(SnapshotPerson(
                pid, validate.label(raw.get("label")),
                str(_time(_field(raw, "created_at", where), where)),
                str(_time(_field(raw, "updated_at", where), where)),
                tuple(_decode_consent(c, f"{where}.consents[{j}]")
                      for j, c in enumerate(consents)),
                tuple(_decode_template(t, f"{where}.templates[{j}]")
                      for j, t in enumerate(templates))))
        except BundleError:
            raise
        except GalleryError as exc:
            raise BundleError(f"{where}: {exc}") from None
    return persons


# ---------------------------------------------------------------------- file format

def write_bundle(path: Path, persons: list[SnapshotPerson], *, bundle_id: str, created_at: str,
                 signing_key: Ed25519PrivateKey, fleet_key: bytes) -> dict[str, Any]:
    nonce = os.urandom(NONCE_BYTES)
    header = {
        "format": FORMAT, "bundle_id": bundle_id, "created_at": created_at,
        "signer": key_id(signing_key.public_key()), "fleet_key_id": fleet_key_id(fleet_key),
        "nonce": nonce.hex(), "persons": len(persons),
        "templates": sum(len(p.templates) for p in persons),
    }
    header_bytes = canonical(header)
    prefix = MAGIC + _LEN.pack(len(header_bytes)) + header_bytes
    body = prefix + AESGCM(fleet_key).encrypt(nonce, _encode(persons), prefix)
    replace_secret(path, body + signing_key.sign(body))
    return header


def read_bundle(path: Path, trusted: dict[str, Ed25519PublicKey],
                fleet_key: bytes) -> tuple[dict[str, Any], list[SnapshotPerson]]:
    """Verify, then decrypt and validate; any failure is a ``BundleError`` naming the file."""
    try:
        size = path.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle {path} is {size} bytes, more than the "
                              f"{MAX_BUNDLE_BYTES} allowed")
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"bundle {path} cannot be read: {exc.strerror}") from None
    floor = len(MAGIC) + _LEN.size + SIGNATURE_BYTES
    if len(data) < floor or not data.startswith(MAGIC):
        raise BundleError(f"{path} is not an edge-face bundle (or is truncated)")
    body, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    signer = None
    for kid, key in trusted.items():
        try:
            key.verify(signature, body)
        except InvalidSignature:
            continue
        signer = kid
        break
    if signer is None:
        raise BundleError(f"bundle {path}: signature does not verify with any trusted key "
                          "(tampered, truncated, or signed by an unknown operator)")
    (header_len,) = _LEN.unpack_from(body, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if header_len > MAX_HEADER_BYTES or start + header_len > len(body):
        raise BundleError(f"bundle {path}: header length {header_len} is out of range")
    try:
        header = json.loads(body[start:start + header_len])
        nonce = bytes.fromhex(header["nonce"])
        bundle_id, created_at = header["bundle_id"], header["created_at"]
    except (ValueError, KeyError, TypeError):
        raise BundleError(f"bundle {path}: header is not valid") from None
    if header.get("format") != FORMAT or not is_id(bundle_id, BUNDLE):
        raise BundleError(f"bundle {path}: unsupported format or bad bundle id")
    header["created_at"] = _time(created_at, f"bundle {path}: created_at")
    if header.get("fleet_key_id") != fleet_key_id(fleet_key):
        raise BundleError(f"bundle {path} is encrypted for another fleet key "
                          f"({header.get('fleet_key_id')}); check [storage] fleet_key_file")
    try:
        plain = AESGCM(fleet_key).decrypt(nonce, body[start + header_len:],
                                          body[:start + header_len])
    except (InvalidTag, ValueError):
        raise BundleError(f"bundle {path}: payload does not decrypt with the fleet key") from None
    header["signer"] = signer
    return header, _decode(plain)


# ---------------------------------------------------------------------- store side

def export_bundle(store: GalleryStore, path: Path, *, signing_key_file: Path,
                  fleet_key_file: Path, now: datetime | None = None,
                  actor: str = "system") -> dict[str, Any]:
    """Write the whole gallery as a signed, encrypted bundle; the export is audited."""
    signing_key = load_signing_key(signing_key_file)
    fleet_key = read_key(fleet_key_file, "fleet key file")
    bundle_id = new_id(BUNDLE)
    created_at = to_iso(now or store.now())
    persons = store.export_snapshot(bundle_id, actor=actor)
    header = write_bundle(path, persons, bundle_id=bundle_id, created_at=created_at,
                          signing_key=signing_key, fleet_key=fleet_key)
    return {"path": str(path), "bundle_id": bundle_id, "created_at": created_at,
            "signer": header["signer"], "persons": header["persons"],
            "templates": header["templates"]}


def import_bundle(store: GalleryStore, path: Path, *, trusted_keys_dir: Path,
                  fleet_key_file: Path, force: bool = False,
                  actor: str = "system", progress: Progress | None = None) -> dict[str, Any]:
    """Verify and apply a bundle atomically; see ``bundle_apply`` for what changes."""
    trusted = load_trusted_keys(trusted_keys_dir)
    fleet_key = read_key(fleet_key_file, "fleet key file")
    header, persons = read_bundle(path, trusted, fleet_key)
    return store.import_snapshot(persons, bundle_id=header["bundle_id"],
                                 created_at=header["created_at"], signer=header["signer"],
                                 force=force, max_skew_s=MAX_SKEW_S, actor=actor,
                                 progress=progress)
