"""The service layer: the one place the CLI and the admin API call to act on the gallery.

Why one layer: the CLI on the device and the FastAPI admin API must behave identically (same
checks, same audit entries, same JSON), so both are thin shells that parse input, call a method
here, and print or return the plain dict it gives back. Recognition (enroll, identify) lives
beside it in ``edge.recognition.Recognizer``, over the same ``GalleryStore``.

Thread safety: one ``GalleryService`` per process, shared by the daemon's threads and the API's
workers; the store serialises them with its lock (see ``edge.gallery.store``).
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.gallery import bundle
from edge.gallery.errors import DeviceKeyMissing, GalleryInputError
from edge.gallery.records import ConsentInput
from edge.gallery.store import GalleryStore
from edge.gallery.sweeper import ConsentSweeper
from edge.gallery.times import Clock
from edge.progress import Progress


class GalleryService:
    """Gallery operations returning JSON-ready dicts; ``actor`` names who asked (audited)."""

    def __init__(self, config: Config, *, clock: Clock | None = None,
                 store: GalleryStore | None = None) -> None:
        """``store``: an open store to share (the daemon's, so the API and the camera pipeline
        see one gallery); closing the service then leaves it open for its owner."""
        self.config = config
        self._owns_store = store is None
        self.store = store or GalleryStore.from_config(config, clock=clock)

    @classmethod
    def open(cls, config: Config, *, clock: Clock | None = None) -> GalleryService:
        return cls(config, clock=clock)

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> GalleryService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- persons and consent

    def add_person(self, *, label: str | None, consent_by: str, purpose: str,
                   expires_at: datetime | None = None, evidence: str | None = None,
                   actor: str) -> dict[str, Any]:
        consent = ConsentInput(consent_by, purpose, expires_at, evidence)
        return {"id": self.store.add_person(label, consent, actor=actor)}

    def grant_consent(self, person_id: str, *, consent_by: str, purpose: str,
                      expires_at: datetime | None = None, evidence: str | None = None,
                      actor: str) -> dict[str, Any]:
        consent = ConsentInput(consent_by, purpose, expires_at, evidence)
        consent_id = self.store.grant_consent(person_id, consent, actor=actor)
        return {"person_id": person_id, "consent_id": consent_id}

    def withdraw_consent(self, person_id: str, *, actor: str) -> dict[str, Any]:
        return self.store.withdraw_consent(person_id, actor=actor)

    def list_persons(self) -> dict[str, Any]:
        return {"persons": [p.to_dict() for p in self.store.list_persons()]}

    def list_persons_page(self, limit: int, cursor: str | None = None) -> dict[str, Any]:
        """One page in creation order; ``next_cursor`` (opaque) continues, None at the end."""
        page, after = self.store.list_persons_page(
            limit, _decode_cursor(cursor) if cursor else None)
        return {"persons": [p.to_dict() for p in page],
                "next_cursor": _encode_cursor(after) if after else None}

    def set_label(self, person_id: str, label: str | None, *, actor: str) -> dict[str, Any]:
        self.store.set_label(person_id, label, actor=actor)
        return self.show_person(person_id)

    def remove_template(self, person_id: str, template_id: str, *,
                        actor: str) -> dict[str, Any]:
        return self.store.remove_template(person_id, template_id, actor=actor)

    def show_person(self, person_id: str) -> dict[str, Any]:
        return self.store.get_person(person_id).to_dict()

    def delete_person(self, person_id: str, *, actor: str) -> dict[str, Any]:
        return self.store.delete_person(person_id, actor=actor)

    def export_person(self, person_id: str, *, actor: str) -> dict[str, Any]:
        return self.store.export_person(person_id, actor=actor)

    def sweep_consent(self, now: datetime | None = None) -> dict[str, Any]:
        return {"swept": self.store.sweep_consent(now)}

    def start_sweeper(self, interval_s: float = 60.0) -> ConsentSweeper:
        """For the daemon: sweep now, then every ``interval_s``; call ``stop()`` on shutdown."""
        sweeper = ConsentSweeper(self.store, interval_s)
        sweeper.start()
        return sweeper

    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    # ---------------------------------------------------------------- audit and keys

    def verify_audit(self) -> dict[str, Any]:
        return self.store.verify_audit().to_dict()

    def audit_page(self, *, after: int = 0, limit: int = 100,
                   target_id: str | None = None) -> dict[str, Any]:
        entries, next_after = self.store.audit_page(after, limit, target_id)
        return {"entries": [e.to_dict() for e in entries], "next_after": next_after}

    def rotate_key(self, *, actor: str) -> dict[str, Any]:
        return self.store.rotate_key(actor=actor)

    # ---------------------------------------------------------------- fleet bundles

    def export_bundle(self, path: Path, *, actor: str, signing_key_file: Path | None = None,
                      fleet_key_file: Path | None = None) -> dict[str, Any]:
        storage = self.config.storage
        return bundle.export_bundle(self.store, Path(path),
                                    signing_key_file=signing_key_file or storage.signing_key_file,
                                    fleet_key_file=fleet_key_file or storage.fleet_key_file,
                                    actor=actor)

    def import_bundle(self, path: Path, *, actor: str, force: bool = False,
                      trusted_keys_dir: Path | None = None,
                      fleet_key_file: Path | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
        storage = self.config.storage
        return bundle.import_bundle(self.store, Path(path),
                                    trusted_keys_dir=trusted_keys_dir or storage.trusted_keys_dir,
                                    fleet_key_file=fleet_key_file or storage.fleet_key_file,
                                    force=force, actor=actor, progress=progress)

    def export_bundle_bytes(self, *, actor: str) -> tuple[bytes, dict[str, Any]]:
        """A signed bundle of the whole gallery as bytes (for the API's download).

        It passes through a private file in the data directory (the bundle is encrypted with
        the fleet key, so nothing readable touches the disk) that is removed at once.
        """
        storage = self.config.storage
        for path, what in ((storage.signing_key_file, "operator signing key"),
                           (storage.fleet_key_file, "fleet key")):
            if not Path(path).exists():
                raise DeviceKeyMissing(
                    f"this device holds no {what} ({path}); bundles are made where the "
                    "operator's keys are (`edge-face gallery keygen` there)")
        tmp = storage.data_dir / f".export-{secrets.token_hex(8)}.efb"
        try:
            info = self.export_bundle(tmp, actor=actor)
            return tmp.read_bytes(), info
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def keygen(config: Config, *, signing_key_file: Path | None = None,
               fleet_key_file: Path | None = None) -> dict[str, Any]:
        """Make the operator's key pair and the fleet key; needs no gallery, so no instance."""
        storage = config.storage
        return bundle.generate_keys(signing_key_file or storage.signing_key_file,
                                    fleet_key_file or storage.fleet_key_file)


def _encode_cursor(key: tuple[str, str]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    """The page key inside a cursor; anything not made by ``_encode_cursor`` is refused."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, person_id = json.loads(raw)
        if isinstance(created_at, str) and isinstance(person_id, str):
            return created_at, person_id
    except (ValueError, TypeError):
        pass
    raise GalleryInputError("cursor is not one this device handed out")
