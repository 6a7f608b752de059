"""Request body limits, enforced while the body arrives, before anything parses it.

Why an ASGI wrapper and not a check in each route: a body that is too big must cost the device
nothing but the bytes already received. A ``Content-Length`` over the limit is answered 413
before one byte is read; a body that turns out bigger (chunked, or a lying header) is cut off
the moment it crosses the limit, wherever in the app it was being read.

A body only a little over the limit (up to as much again) is read to its end and thrown away
before the 413 goes out: a client that sends its whole body before it reads the answer (most
HTTP libraries) would otherwise see its connection reset instead of the reason. A body bigger
than that is not worth the bandwidth; its connection is closed. Clients that send
``Expect: 100-continue`` (curl, for large bodies) get the 413 before they send anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from ``receive``; an ``HTTPException`` so FastAPI's body parsing passes it on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


class BodyLimit:
    """Cap every request body at ``default`` bytes, or at ``per_path[path]``."""

    def __init__(self, app: ASGIApp, default: int, per_path: Mapping[str, int]) -> None:
        self.app = app
        self.default = default
        self.per_path = dict(per_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.default)
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
        if declared is not None:
            try:
                length = int(declared)
                if length < 0:
                    raise ValueError(length)
            except ValueError:
                await _refuse(send, 400, "Content-Length is not a number of bytes")
                return
            if length > limit:
                expects = any(n == b"expect" for n, _ in scope["headers"])
                if not expects and length <= 2 * limit:
                    await _drain(receive, limit)
                await _refuse(send, 413, f"request body is over the limit of {limit} bytes",
                              close=True)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False):
                        await _drain(receive, limit)
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop up to ``budget`` more bytes of the body, so the answer can be read."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _refuse(send: Send, status: int, detail: str, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode("ascii"))]
    if close:  # the client may still be sending: do not let it keep the connection busy
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
