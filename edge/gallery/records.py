"""What the store hands out: plain frozen records, JSON-ready through ``to_dict``.

None of them carries an embedding except the two that exist to move templates (to the matcher,
into a fleet bundle); those never reach the CLI, the API or a log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

ACTIVE = "active"
EXPIRED = "expired"
WITHDRAWN = "withdrawn"
NONE = "none"


@dataclass(frozen=True)
class ConsentInput:
    """A consent as recorded by an operator: who gave it, for what, until when, on what proof."""

    given_by: str
    purpose: str
    expires_at: datetime | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class Consent:
    id: str
    given_by: str
    purpose: str
    granted_at: str
    expires_at: str | None
    withdrawn_at: str | None
    evidence: str | None

    def status(self, now: str) -> str:
        if self.withdrawn_at is not None:
            return WITHDRAWN
        if self.expires_at is not None and self.expires_at <= now:
            return EXPIRED
        return ACTIVE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def consent_expiry(consents: tuple[Consent, ...] | list[Consent], now: str) -> str | None:
    """The latest end among the consents valid now; None if one of them never ends (or none)."""
    live = [c for c in consents if c.status(now) == ACTIVE]
    if not live or any(c.expires_at is None for c in live):
        return None
    return max(str(c.expires_at) for c in live)


def consent_status(consents: tuple[Consent, ...] | list[Consent], now: str) -> str:
    """``active`` if any consent is valid now, else why not (withdrawn wins over expired)."""
    statuses = {c.status(now) for c in consents}
    for status in (ACTIVE, WITHDRAWN, EXPIRED):
        if status in statuses:
            return status
    return NONE


@dataclass(frozen=True)
class TemplateInfo:
    """A template's metadata; the embedding itself is never part of it."""

    id: str
    model_id: str
    model_version: str
    quality: dict[str, float]
    source: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PersonSummary:
    id: str
    label: str | None
    created_at: str
    updated_at: str
    origin: str
    consent: str
    templates: int
    # When the consent in force ends: None while active means never (also None when not active).
    consent_expires_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Person:
    id: str
    label: str | None
    created_at: str
    updated_at: str
    origin: str
    consent: str
    consents: tuple[Consent, ...] = ()
    templates: tuple[TemplateInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "label": self.label, "created_at": self.created_at,
            "updated_at": self.updated_at, "origin": self.origin, "consent": self.consent,
            "consents": [c.to_dict() for c in self.consents],
            "templates": [t.to_dict() for t in self.templates],
        }


@dataclass(frozen=True)
class NewTemplate:
    """One embedding to add, with its quality numbers (``score`` decides which are kept)."""

    vector: Any
    quality: dict[str, float]
    source: str = ""


@dataclass(frozen=True)
class TemplateAddResult:
    """``kept`` is False when the new template scored below the ones already kept."""

    template_id: str
    kept: bool
    dropped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"template_id": self.template_id, "kept": self.kept, "dropped": list(self.dropped)}


@dataclass(frozen=True)
class TemplateBatchResult:
    """Outcome of adding several templates at once (one transaction).

    ``added``: new templates kept; ``rejected``: new ones that scored below the
    ``max_templates`` already kept; ``dropped``: older templates evicted to make room.
    """

    added: tuple[str, ...]
    rejected: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    #: Every new template id, in the order the items were given (kept or not).
    created: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"added": list(self.added), "rejected": list(self.rejected),
                "dropped": list(self.dropped)}


@dataclass(frozen=True)
class TemplateMatrix:
    """Every template of one model, decrypted, as one contiguous float32 matrix (row i = ids i)."""

    template_ids: list[str]
    person_ids: list[str]
    vectors: np.ndarray


@dataclass(frozen=True)
class SnapshotTemplate:
    id: str
    model_id: str
    model_version: str
    vector: np.ndarray
    quality: dict[str, float]
    source: str
    created_at: str


@dataclass(frozen=True)
class SnapshotPerson:
    """A person as carried by a fleet bundle: everything, including decrypted embeddings."""

    id: str
    label: str | None
    created_at: str
    updated_at: str
    consents: tuple[Consent, ...] = ()
    templates: tuple[SnapshotTemplate, ...] = field(default_factory=tuple)
