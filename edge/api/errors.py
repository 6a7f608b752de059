"""Expected failures as HTTP answers: the error's class picks the status, its text the detail.

Why by class: the service layer raises the same errors for the CLI (one line on stderr) and the
API; mapping classes keeps the routes free of ``try``/``except`` and the statuses consistent.
Unexpected exceptions are logged with a traceback and answered 500 without any detail, so no
internal state (paths, SQL, a label in a message) leaks to the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edge.api.tokens import TokenError
from edge.errors import EdgeError, ImageError, ImageFormatError, ImageTooLargeError
from edge.gallery.errors import (
    BundleError,
    ConsentError,
    DeviceKeyMissing,
    GalleryFullError,
    GalleryInputError,
    PersonNotFound,
    TemplateNotFound,
)
from edge.recognition import DuplicatePersonError
from edge.workpool import PoolBusy

log = logging.getLogger(__name__)

#: Field errors listed in one 422 answer; a body with thousands of wrong fields gets the first.
MAX_FIELD_ERRORS = 20

# First match wins: subclasses before their bases.
STATUS_BY_ERROR: tuple[tuple[type[EdgeError], int], ...] = (
    (PersonNotFound, 404),
    (TemplateNotFound, 404),
    (DuplicatePersonError, 409),
    (ConsentError, 409),
    (DeviceKeyMissing, 409),
    (ImageTooLargeError, 413),
    (ImageFormatError, 415),
    (ImageError, 422),
    (GalleryInputError, 422),
    (BundleError, 422),
    (PoolBusy, 429),
    (GalleryFullError, 507),
)


class ApiError(Exception):
    """An HTTP refusal raised by the API layer itself (auth, limits, parsing)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def status_of(exc: EdgeError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status, headers=exc.headers)

    @app.exception_handler(EdgeError)
    async def edge_error(request: Request, exc: EdgeError) -> JSONResponse:
        status = status_of(exc)
        headers = {}
        if isinstance(exc, PoolBusy):
            headers["Retry-After"] = str(exc.retry_after_s)
        if status == 500:
            # A gallery key or corruption problem, a token file that went bad: the operator
            # needs it in the journal; the client gets no internals.
            log.error("request failed", extra={"error": str(exc), "kind": type(exc).__name__,
                                               "path": request.url.path})
            detail = ("the token file is unusable; see the device's log"
                      if isinstance(exc, TokenError) else "internal error; see the device's log")
            return JSONResponse({"detail": detail}, 500)
        return JSONResponse({"detail": str(exc)}, status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes each rejected value ("input"): that can be a label or
        # a consent note. Say where and why, in the one error shape every route documents.
        errors = [{"loc": [str(x) if not isinstance(x, int) else x for x in e.get("loc", ())],
                   "msg": str(e.get("msg", "invalid")), "type": str(e.get("type", "invalid"))}
                  for e in exc.errors()][:MAX_FIELD_ERRORS]
        detail = "; ".join(f"{' '.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
                           for e in errors[:3])
        return JSONResponse({"detail": detail or "invalid input", "errors": errors}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in a request", extra={"path": request.url.path})
        return JSONResponse({"detail": "internal error; see the device's log"}, 500)
