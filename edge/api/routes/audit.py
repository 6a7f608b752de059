"""``/v1/audit``: the hash-chained log of every gallery change, and its verification."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from edge.api.auth import require
from edge.api.context import ApiContext, context
from edge.api.schemas import AuditPage, AuditVerification

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(require("read"))])


@router.get("", response_model=AuditPage, summary="Audit entries in order, a page at a time")
def audit(after: int = Query(0, ge=0, le=2**62, description="next_after of the previous page"),
          limit: int = Query(100, ge=1, le=1000),
          target_id: str | None = Query(None, max_length=100,
                                        description="only entries about this id"),
          ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    return ctx.gallery.audit_page(after=after, limit=limit, target_id=target_id)


@router.get("/verify", response_model=AuditVerification,
            summary="Walk the hash chain; names the first entry that does not hold")
def verify(ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    return ctx.gallery.verify_audit()
