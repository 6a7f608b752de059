"""``/healthz``, ``/readyz`` (no token: load balancers, systemd checks, Ansible's gate) and
``/metrics`` (Prometheus text; a read token, as counts of visits are about the site)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from edge.api.auth import require
from edge.api.context import ApiContext, context
from edge.api.schemas import Health, Problem, Ready
from edge.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, summary="Models loaded, camera and broker up",
            responses={503: {"model": Ready, "description": "not ready, with the reasons"}})
def readyz(ctx: ApiContext = Depends(context)) -> JSONResponse:
    state = ctx.readiness()
    return JSONResponse(state.to_dict(), 200 if state.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(require("read"))],
            responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"},
                       401: {"model": Problem}, 403: {"model": Problem},
                       429: {"model": Problem}})
def metrics(ctx: ApiContext = Depends(context)) -> Response:
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
