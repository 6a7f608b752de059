"""One structured log line and one metrics sample per request; never a body, never a query.

Logged: method, the route's template (``/v1/persons/{person_id}``, so ids do not become metric
labels), status, duration and the token's name. The query string is left out (it can carry a
cursor or a target id that says nothing useful), and bodies are never looked at.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.metrics import Metrics

log = logging.getLogger("edge.api.access")


class AccessLog:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.monotonic() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            state = scope.get("state") or {}
            method = scope.get("method", "?")
            self.metrics.observe_request(method, template, status, seconds)
            log.info("api request", extra={
                "method": method, "route": template, "status": status,
                "duration_ms": round(seconds * 1000.0, 2),
                "token_name": state.get("token_name"),
                "client": (scope.get("client") or ("?",))[0]})
