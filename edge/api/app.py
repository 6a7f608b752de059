"""The FastAPI application: routers, error mapping, body limits, access log.

``create_app(context, tokens)`` is all the daemon calls; tests build the same app around a real
daemon context and serve it with uvicorn over TCP (``edge.api.server``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from edge import __version__
from edge.api import errors
from edge.api.access_log import AccessLog
from edge.api.auth import FailureLimiter
from edge.api.context import ApiContext
from edge.api.limits import BodyLimit
from edge.api.routes import audit, events, faces, gallery, health, identify, persons, settings, ui
from edge.api.schemas import Problem
from edge.api.tokens import TokenStore

DESCRIPTION = """\
The local admin API of one edge-face device: enroll consented people, answer subject-access and
erasure requests, check the audit chain, move signed gallery bundles. Every `/v1` route needs a
bearer token from `edge-face token create` (scope `read` or `admin`). Uploaded photos are held in
memory for the request only; no image or template ever appears in an answer or a log.
"""

#: Refusals any authenticated route can give.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "a body that cannot be read (not UTF-8, a bad "
          "Content-Length)"},
    401: {"model": Problem, "description": "no token, or not a token of this device"},
    403: {"model": Problem, "description": "a read token on a route that changes something"},
    413: {"model": Problem, "description": "request body over the limit"},
    422: {"model": Problem, "description": "invalid input"},
    429: {"model": Problem, "description": "too many failed authentications, or busy; see "
          "Retry-After"},
}


def create_app(ctx: ApiContext, tokens: TokenStore) -> FastAPI:
    api = ctx.config.api
    app = FastAPI(title="edge-face admin API", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None,  # no CDN assets: the page would not load offline
                  openapi_url="/openapi.json")
    app.state.ctx = ctx
    app.state.tokens = tokens
    app.state.auth_limiter = FailureLimiter(api.auth_failures_per_minute)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(ui.router)
    for module in (persons, faces, identify, audit, gallery, settings, events):
        app.include_router(module.router, responses=AUTH_RESPONSES)
    app.add_middleware(BodyLimit, default=api.max_upload_bytes,
                       per_path={"/v1/gallery/import": api.max_bundle_bytes})
    app.add_middleware(AccessLog, metrics=ctx.metrics)
    return app
