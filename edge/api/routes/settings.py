"""``/v1/config``: the configuration the daemon runs with, secrets masked."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from edge.api.auth import require
from edge.api.context import ApiContext, context
from edge.api.schemas import EffectiveConfig
from edge.config import config_as_dict

router = APIRouter(prefix="/v1", tags=["device"])


@router.get("/config", response_model=EffectiveConfig, summary="Effective configuration",
            dependencies=[Depends(require("admin"))])
def effective_config(ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    return {"source": ctx.config.source, "sections": config_as_dict(ctx.config)}
