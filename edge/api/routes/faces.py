"""``/v1/persons/{id}/faces``: enrollment photos in, templates out; one template removed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from edge.api.auth import actor, require
from edge.api.context import ApiContext, context
from edge.api.multipart import read_files
from edge.api.schemas import EnrollResult, Problem, TemplateReceipt
from edge.api.tokens import Token
from edge.api.uploads import UPLOAD_RESPONSES, multipart_body

router = APIRouter(prefix="/v1/persons/{person_id}/faces", tags=["faces"])


@router.post("", response_model=EnrollResult, status_code=201,
             summary="Enroll photos (each must show exactly one usable face)",
             openapi_extra=multipart_body("image", "one or more photos of the person"),
             responses={**UPLOAD_RESPONSES,
                        404: {"model": Problem, "description": "no such person"},
                        409: {"model": Problem, "description":
                              "no valid consent, or the face is already another person's"},
                        422: {"model": EnrollResult | Problem, "description":
                              "no photo was usable (per-photo reasons), or a bad request"}})
async def enroll(person_id: str, request: Request,
                 force: bool = Query(False, description="enroll even if the face matches "
                                     "another person (warns)"),
                 ctx: ApiContext = Depends(context),
                 token: Token = Depends(require("admin"))) -> JSONResponse:
    uploads = await read_files(request, "image", max_files=ctx.config.api.max_files)
    images = [(u.filename, u.data) for u in uploads]
    out: dict[str, Any] = await ctx.pool.run(ctx.recognizer.enroll_images, person_id, images,
                                             force=force, actor=actor(token))
    return JSONResponse(out, 201 if out["templates_added"] else 422)


@router.delete("/{template_id}", response_model=TemplateReceipt,
               responses={404: {"model": Problem, "description": "no such person or template"}},
               summary="Remove one template (a bad photo, an outdated look)")
def remove_face(person_id: str, template_id: str, ctx: ApiContext = Depends(context),
                token: Token = Depends(require("admin"))) -> dict[str, Any]:
    return ctx.gallery.remove_template(person_id, template_id, actor=actor(token))
