"""Request and response bodies of the admin API, as the OpenAPI schema documents them.

Why strict models: a typo in an operator's script (``"purpous"``) must be a 422 that names the
field, not a consent recorded without a purpose; every request model forbids unknown fields.
Response models mirror the service layer's dicts exactly (``docs/gallery.md``), so the CLI's
``--json`` and the API answer alike, and schemathesis can check every answer against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PERSON_ID = "p_pgbkuke2szxhhzqn5votyurt5i"
TEMPLATE_ID = "t_rpxu7lyefgz23643c3gvhh2fvq"
CONSENT_ID = "c_2mc5hvya2suhgnouu6zvlikaea"
WHEN = "2026-12-04T09:30:00.000000Z"
HASH = "92bb4ed2aade1770eda9cd69b35f57527eca3b408b62ecaebabdbabb3220a667"


def examples(*bodies: dict[str, Any], strict: bool = False) -> ConfigDict:
    """A model config carrying OpenAPI examples (and, for request bodies, no extra fields)."""
    config = ConfigDict(json_schema_extra={"examples": list(bodies)})
    if strict:
        config["extra"] = "forbid"
    return config


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- requests

class ConsentIn(Strict):
    model_config = examples({"given_by": "Ada Lovelace", "purpose": "front door access",
                             "expires_at": "2027-12-31T23:59:00Z",
                             "evidence": "form 2026-118"}, strict=True)
    given_by: str = Field(min_length=1, max_length=500,
                          description="who gave the consent (the person, a guardian, ...)")
    purpose: str = Field(min_length=1, max_length=500, description="what it is for")
    expires_at: datetime | None = Field(
        None, description="when it ends (ISO 8601; without an offset, UTC); must be future")
    evidence: str | None = Field(None, max_length=500,
                                 description="where the signed form or record is kept")


class PersonCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "label": "Ada Lovelace",
        "consent": {"given_by": "Ada Lovelace", "purpose": "front door access",
                    "expires_at": "2027-12-31T23:59:00Z", "evidence": "form 2026-118"}}]})
    label: str | None = Field(None, max_length=200,
                              description="human-readable name; kept on the device only")
    consent: ConsentIn


class PersonPatch(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"label": "Ada King"}, {"label": None}]})
    label: str | None = Field(max_length=200, description="new label, or null to remove it")


# ---------------------------------------------------------------------------- responses

class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str
    type: str


class Problem(BaseModel):
    detail: str = Field(description="what went wrong, for a human")
    errors: list[FieldProblem] | None = Field(
        None, description="for invalid input: each field that is wrong (the value not echoed)")
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"detail": "no person p_2hq5c5vbqyd6mfsjwcvwa4uhvy"},
        {"detail": "body consent.purpose: Field required",
         "errors": [{"loc": ["body", "consent", "purpose"], "msg": "Field required",
                     "type": "missing"}]}]})


class Health(BaseModel):
    model_config = examples({"status": "ok"})
    status: Literal["ok"]


class Ready(BaseModel):
    model_config = examples({"ready": True, "reasons": [],
                              "checks": {"models": "ok", "camera": "ok", "broker": "ok"}},
                             {"ready": False, "checks": {"models": "ok", "camera": "none",
                                                         "broker": "not connected"},
                              "reasons": ["broker not connected"]})
    ready: bool
    checks: dict[str, str] = Field(description="models, camera, broker: ok, none or why not")
    reasons: list[str] = Field(default_factory=list)


class Consent(BaseModel):
    id: str
    given_by: str
    purpose: str
    granted_at: str
    expires_at: str | None
    withdrawn_at: str | None
    evidence: str | None


class TemplateInfo(BaseModel):
    id: str
    model_id: str
    model_version: str
    quality: dict[str, float]
    source: str
    created_at: str


ConsentState = Literal["active", "expired", "withdrawn", "none"]


class _PersonBase(BaseModel):
    id: str
    label: str | None
    created_at: str
    updated_at: str
    origin: str
    consent: ConsentState


class PersonSummary(_PersonBase):
    templates: int
    consent_expires_at: str | None = Field(
        description="when the consent in force ends; null while active means never")


class Person(_PersonBase):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": PERSON_ID, "label": "Ada Lovelace", "created_at": WHEN, "updated_at": WHEN,
        "origin": "local", "consent": "active",
        "consents": [{"id": CONSENT_ID, "given_by": "Ada Lovelace",
                      "purpose": "front door access", "granted_at": WHEN,
                      "expires_at": None, "withdrawn_at": None, "evidence": None}],
        "templates": []}]})
    consents: list[Consent]
    templates: list[TemplateInfo]


class PersonPage(BaseModel):
    model_config = examples({"persons": [{"id": PERSON_ID, "label": "Ada Lovelace",
                                           "created_at": WHEN, "updated_at": WHEN,
                                           "origin": "local",
                                           "consent": "active", "templates": 2,
                                           "consent_expires_at": None}],
                              "next_cursor": None})
    persons: list[PersonSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: end")


class Removed(BaseModel):
    templates: int
    consents: int
    label: bool


class ErasureReceipt(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "person_id": PERSON_ID, "deleted_at": WHEN,
        "removed": {"templates": 3, "consents": 1, "label": True}, "audit_seq": 42,
        "audit_hash": "9f2c" + "0" * 60, "wal_checkpointed": True}]})
    person_id: str
    deleted_at: str
    removed: Removed
    audit_seq: int
    audit_hash: str = Field(description="hash of the audit entry that records the erasure")
    wal_checkpointed: bool = Field(description="the WAL was folded in and truncated")


class TemplateReceipt(BaseModel):
    model_config = examples({"person_id": PERSON_ID, "template_id": TEMPLATE_ID, "removed_at": WHEN,
                              "audit_seq": 5, "audit_hash": HASH, "wal_checkpointed": True})
    person_id: str
    template_id: str
    removed_at: str
    audit_seq: int
    audit_hash: str
    wal_checkpointed: bool


class ConsentWithdrawn(BaseModel):
    model_config = examples({"person_id": PERSON_ID, "consents_withdrawn": 1,
                             "templates_removed": 2})
    person_id: str
    consents_withdrawn: int
    templates_removed: int


class ConsentGranted(BaseModel):
    model_config = examples({"person_id": PERSON_ID, "consent_id": CONSENT_ID})
    person_id: str
    consent_id: str


class AuditEntry(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    target_id: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class SubjectAccess(BaseModel):
    """Everything the device holds about one person, except the template vectors."""

    model_config = examples({
        "exported_at": WHEN, "person": {"id": PERSON_ID, "label": "Ada Lovelace",
                                        "created_at": WHEN, "updated_at": WHEN,
                                        "origin": "local"},
        "consent": "active",
        "consents": [{"id": CONSENT_ID, "given_by": "Ada Lovelace",
                      "purpose": "front door access", "granted_at": WHEN, "expires_at": None,
                      "withdrawn_at": None, "evidence": None}],
        "templates": {"count": 0, "items": []},
        "audit": [{"seq": 1, "at": WHEN, "actor": "api:desk-1", "action": "person_added",
                   "target_id": PERSON_ID, "details": {}, "prev_hash": "0" * 64,
                   "hash": HASH}]})

    class PersonRecord(BaseModel):
        id: str
        label: str | None
        created_at: str
        updated_at: str
        origin: str

    class Templates(BaseModel):
        count: int
        items: list[TemplateInfo]

    exported_at: str
    person: PersonRecord
    consent: ConsentState
    consents: list[Consent]
    templates: Templates
    audit: list[AuditEntry]


class ImageResult(BaseModel):
    path: str = Field(description="the uploaded file's name")
    accepted: bool
    template_id: str | None = None
    quality: dict[str, float] | None = Field(None, description="size, sharpness, exposure, "
                                             "contrast, pose, score (0..1)")
    reason: str | None = Field(None, description="why it was refused")


class Rejection(BaseModel):
    path: str
    reason: str


class EnrollResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "person_id": PERSON_ID, "templates_added": 1,
        "rejected": [{"path": "group.jpg", "reason": "several faces (2); enrollment needs a "
                      "photo of one person"}],
        "results": [
            {"path": "ada.jpg", "accepted": True, "template_id": TEMPLATE_ID,
             "quality": {"score": 0.91, "sharpness": 120.5}},
            {"path": "group.jpg", "accepted": False,
             "reason": "several faces (2); enrollment needs a photo of one person"}]}]})
    person_id: str
    templates_added: int
    rejected: list[Rejection]
    results: list[ImageResult]
    warnings: list[str] = Field(default_factory=list)


class IdentifiedFace(BaseModel):
    box: list[float] = Field(description="x, y, width, height in the photo's pixels")
    person_id: str | None
    label: str | None = Field(None, description="only with [events] include_label = true")
    similarity: float | None
    decision: Literal["match", "unknown"]


class IdentifyResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "path": "visitor.jpg", "faces": [{"box": [212.0, 96.5, 180.0, 221.0],
                                          "person_id": PERSON_ID, "similarity": 0.71,
                                          "decision": "match"}]}]})
    path: str = Field(description="the uploaded file's name")
    faces: list[IdentifiedFace]


class AuditPage(BaseModel):
    model_config = examples({"entries": [{"seq": 1, "at": WHEN, "actor": "api:desk-1",
                                           "action": "person_added", "target_id": PERSON_ID,
                                           "details": {"consent_id": CONSENT_ID,
                                                       "has_label": True},
                                           "prev_hash": "0" * 64, "hash": HASH}],
                              "next_after": 1})
    entries: list[AuditEntry]
    next_after: int | None = Field(description="pass as ?after= for the next page; null: end")


class AuditVerification(BaseModel):
    model_config = examples({"ok": True, "entries": 4, "first_bad_seq": None, "reason": None})
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None


class BundleImport(BaseModel):
    model_config = examples({"bundle_id": "b_7rkqzjv4bqlyd5xwq2ekt6hp3m", "created_at": WHEN,
                              "status": "imported", "persons_added": 1, "persons_updated": 0,
                              "persons_removed": 0, "templates_added": 2,
                              "templates_removed": 0, "templates_skipped_no_consent": 0})
    bundle_id: str
    created_at: str
    status: Literal["imported", "already-imported"]
    persons_added: int
    persons_updated: int
    persons_removed: int
    templates_added: int
    templates_removed: int
    templates_skipped_no_consent: int


class EffectiveConfig(BaseModel):
    model_config = examples({"source": "/etc/edge-face/config.toml",
                              "sections": {"api": {"enabled": True, "host": "127.0.0.1",
                                                   "port": 8471}}})
    source: str = Field(description="the file the values came from, or defaults")
    sections: dict[str, dict[str, Any]] = Field(description="every section; secrets as ***")
