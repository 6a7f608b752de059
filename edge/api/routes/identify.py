"""``/v1/identify``: who is in this photo, among the enrolled. The photo is not kept or logged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from edge.api.auth import require
from edge.api.context import ApiContext, context
from edge.api.errors import ApiError
from edge.api.multipart import read_files
from edge.api.schemas import IdentifyResult, Problem
from edge.api.uploads import UPLOAD_RESPONSES, multipart_body

router = APIRouter(prefix="/v1", tags=["recognition"])


@router.post("/identify", response_model=IdentifyResult, response_model_exclude_unset=True,
             summary="Identify the faces in one photo (enrolled people only)",
             openapi_extra=multipart_body("image", "one photo", many=False),
             responses={**UPLOAD_RESPONSES,
                        422: {"model": Problem, "description": "corrupt or unusable image"}},
             dependencies=[Depends(require("read"))])
async def identify(request: Request, ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    uploads = await read_files(request, "image", max_files=1)
    if len(uploads) != 1:  # pragma: no cover - read_files stops at max_files
        raise ApiError(422, "send exactly one image")
    out: dict[str, Any] = await ctx.pool.run(ctx.recognizer.identify_image, uploads[0].data)
    return {"path": uploads[0].filename, **out}
