"""``/v1/persons``: consented people, their consent records, erasure and subject access."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from edge.api.auth import actor, require
from edge.api.context import ApiContext, context
from edge.api.schemas import (
    ConsentGranted,
    ConsentIn,
    ConsentWithdrawn,
    ErasureReceipt,
    Person,
    PersonCreate,
    PersonPage,
    PersonPatch,
    Problem,
    SubjectAccess,
)
from edge.api.tokens import Token

router = APIRouter(prefix="/v1/persons", tags=["persons"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem,
                                                    "description": "no such person"}}
#: A page is bounded: 500 summaries are ~100 kB, a gallery of 100k is 200 requests.
MAX_PAGE = 500


@router.get("", response_model=PersonPage, summary="List persons, oldest first")
def list_persons(limit: int = Query(100, ge=1, le=MAX_PAGE),
                 cursor: str | None = Query(None, max_length=200,
                                            description="next_cursor of the previous page"),
                 ctx: ApiContext = Depends(context),
                 _: Token = Depends(require("read"))) -> dict[str, Any]:
    return ctx.gallery.list_persons_page(limit, cursor)


@router.post("", response_model=Person, status_code=201,
             summary="Add a person with their consent (no consent, no person)")
def add_person(body: PersonCreate, ctx: ApiContext = Depends(context),
               token: Token = Depends(require("admin"))) -> dict[str, Any]:
    c = body.consent
    made = ctx.gallery.add_person(label=body.label, consent_by=c.given_by, purpose=c.purpose,
                                  expires_at=c.expires_at, evidence=c.evidence,
                                  actor=actor(token))
    return ctx.gallery.show_person(made["id"])


@router.get("/{person_id}", response_model=Person, responses=NOT_FOUND,
            summary="One person: consent records and template metadata (never vectors)")
def show_person(person_id: str, ctx: ApiContext = Depends(context),
                _: Token = Depends(require("read"))) -> dict[str, Any]:
    return ctx.gallery.show_person(person_id)


@router.patch("/{person_id}", response_model=Person, responses=NOT_FOUND,
              summary="Change or remove a person's label")
def patch_person(person_id: str, body: PersonPatch, ctx: ApiContext = Depends(context),
                 token: Token = Depends(require("admin"))) -> dict[str, Any]:
    return ctx.gallery.set_label(person_id, body.label, actor=actor(token))


@router.delete("/{person_id}", response_model=ErasureReceipt, responses=NOT_FOUND,
               summary="Erase a person: templates, consent, label; returns the receipt")
def delete_person(person_id: str, ctx: ApiContext = Depends(context),
                  token: Token = Depends(require("admin"))) -> dict[str, Any]:
    return ctx.gallery.delete_person(person_id, actor=actor(token))


@router.get("/{person_id}/export", response_model=SubjectAccess, responses=NOT_FOUND,
            summary="Subject access: everything held about the person (audited)")
def export_person(person_id: str, ctx: ApiContext = Depends(context),
                  token: Token = Depends(require("admin"))) -> dict[str, Any]:
    return ctx.gallery.export_person(person_id, actor=actor(token))


@router.post("/{person_id}/consents", response_model=ConsentGranted, status_code=201,
             responses=NOT_FOUND, summary="Record a further consent (a renewal)")
def grant_consent(person_id: str, body: ConsentIn, ctx: ApiContext = Depends(context),
                  token: Token = Depends(require("admin"))) -> dict[str, Any]:
    return ctx.gallery.grant_consent(person_id, consent_by=body.given_by, purpose=body.purpose,
                                     expires_at=body.expires_at, evidence=body.evidence,
                                     actor=actor(token))


@router.post("/{person_id}/consents/withdraw", response_model=ConsentWithdrawn,
             responses=NOT_FOUND,
             summary="Withdraw every consent; the person's templates are removed at once")
def withdraw_consent(person_id: str, ctx: ApiContext = Depends(context),
                     token: Token = Depends(require("admin"))) -> dict[str, Any]:
    return ctx.gallery.withdraw_consent(person_id, actor=actor(token))
