"""``/v1/gallery``: signed fleet bundles in and out (the format of ``edge.gallery.bundle``)."""

from __future__ import annotations

import errno
import os
import secrets
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edge.api.auth import actor, require
from edge.api.context import ApiContext, context
from edge.api.errors import ApiError
from edge.api.schemas import BundleImport, Problem
from edge.api.tokens import Token

router = APIRouter(prefix="/v1/gallery", tags=["gallery"])
BUNDLE_TYPE = "application/octet-stream"


@router.post("/import", response_model=BundleImport,
             summary="Apply a signed bundle: this device then holds exactly its persons "
                     "(plus the ones enrolled here)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 BUNDLE_TYPE: {"schema": {"type": "string", "format": "binary"}}}}},
             responses={413: {"model": Problem, "description": "over [api] max_bundle_bytes"},
                        415: {"model": Problem, "description": "not application/octet-stream"},
                        422: {"model": Problem, "description": "bad signature, another fleet's "
                              "key, tampered, older than the last one imported"},
                        507: {"model": Problem, "description": "the disk is full; nothing "
                              "changed"}})
async def import_bundle(request: Request,
                        force: bool = Query(False, description="accept an older bundle"),
                        ctx: ApiContext = Depends(context),
                        token: Token = Depends(require("admin"))) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != BUNDLE_TYPE:
        raise ApiError(415, f"send the bundle file as {BUNDLE_TYPE}")
    # Streamed to a private file in the data directory: a bundle can be hundreds of MB, and it
    # is encrypted with the fleet key, so the disk sees nothing readable.
    path = ctx.config.storage.data_dir / f".import-{secrets.token_hex(8)}.efb"
    try:  # whatever happens (over the limit, client gone, disk full), the file goes
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    out.write(chunk)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ApiError(507, "no space left on the device to receive the bundle; the "
                               "gallery is unchanged") from None
            raise
        if path.stat().st_size == 0:
            raise ApiError(422, "empty body: send the bundle file")
        result: dict[str, Any] = await run_in_threadpool(
            ctx.gallery.import_bundle, path, actor=actor(token), force=force)
        return result
    finally:
        path.unlink(missing_ok=True)


@router.get("/export", summary="The whole gallery as a signed, fleet-encrypted bundle",
            responses={200: {"content": {BUNDLE_TYPE: {"schema": {"type": "string",
                                                                  "format": "binary"}}},
                             "description": "the bundle file"},
                       409: {"model": Problem, "description": "this device holds no signing "
                             "key (bundles are usually made on the operator's machine)"}})
def export_bundle(ctx: ApiContext = Depends(context),
                  token: Token = Depends(require("admin"))) -> Response:
    data, info = ctx.gallery.export_bundle_bytes(actor=actor(token))
    name = f"{info['bundle_id']}.efb"
    return Response(data, media_type=BUNDLE_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
