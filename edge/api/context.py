"""What the routes share: the daemon's service layer, its worker pool, metrics and health.

The routes are thin on purpose: they parse, call one of these, and return its dict. Everything
here belongs to the daemon, which builds the context once and closes it on shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from edge.api.readiness import Readiness
from edge.config import Config
from edge.metrics import Metrics
from edge.recognition import Recognizer
from edge.service import GalleryService
from edge.workpool import WorkerPool


@dataclass
class ApiContext:
    config: Config
    gallery: GalleryService
    recognizer: Recognizer
    pool: WorkerPool
    metrics: Metrics
    readiness: Callable[[], Readiness]


def context(request: Request) -> ApiContext:
    """The FastAPI dependency that hands a route the daemon's context."""
    ctx: ApiContext = request.app.state.ctx
    return ctx
