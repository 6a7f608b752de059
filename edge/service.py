"""The service layer: the one place the CLI and the admin API call to act on the gallery.

Why one layer: the CLI on the device and the FastAPI admin API must behave identically (same
checks, same audit entries, same JSON), so both are thin shells that parse input, call a method
here, and print or return the plain dict it gives back. Recognition (enroll, identify) lives
beside it in ``edge.recognition.Recognizer``, over the same ``GalleryStore``.

Thread safety: one ``GalleryService`` per process, shared by the daemon's threads and the API's
workers; the store serialises them with its lock (see ``edge.gallery.store``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.gallery import bundle
from edge.gallery.records import ConsentInput
from edge.gallery.store import GalleryStore
from edge.gallery.sweeper import ConsentSweeper
from edge.gallery.times import Clock


class GalleryService:
    """Gallery operations returning JSON-ready dicts; ``actor`` names who asked (audited)."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.store = GalleryStore.from_config(config, clock=clock)

    @classmethod
    def open(cls, config: Config, *, clock: Clock | None = None) -> GalleryService:
        return cls(config, clock=clock)

    def close(self) -> None:
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
                      fleet_key_file: Path | None = None) -> dict[str, Any]:
        storage = self.config.storage
        return bundle.import_bundle(self.store, Path(path),
                                    trusted_keys_dir=trusted_keys_dir or storage.trusted_keys_dir,
                                    fleet_key_file=fleet_key_file or storage.fleet_key_file,
                                    force=force, actor=actor)

    @staticmethod
    def keygen(config: Config, *, signing_key_file: Path | None = None,
               fleet_key_file: Path | None = None) -> dict[str, Any]:
        """Make the operator's key pair and the fleet key; needs no gallery, so no instance."""
        storage = config.storage
        return bundle.generate_keys(signing_key_file or storage.signing_key_file,
                                    fleet_key_file or storage.fleet_key_file)
