"""Bearer-token authentication, scopes, and a brake on guessing.

Every ``/v1`` route depends on ``require("read")`` or ``require("admin")``. Missing or unknown
tokens get 401 with ``WWW-Authenticate: Bearer``; a read token on a write gets 403. Failed
attempts are counted per client address in a token bucket (``[api]
auth_failures_per_minute``); an empty bucket means 429 with ``Retry-After`` for everything that
client sends until it refills, checked before the token is even looked at, so a guesser learns
nothing more by trying harder. On loopback every local client shares one bucket: a local process
that guesses can delay the operator by a minute, never let itself in.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge.api.errors import ApiError
from edge.api.tokens import Scope, Token, TokenStore

#: Clients remembered at most; beyond it the fullest buckets (the least suspicious) are dropped.
MAX_CLIENTS = 10_000

bearer = HTTPBearer(auto_error=False, description="a token from `edge-face token create`")


class FailureLimiter:
    """Per-client token bucket of authentication failures."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (level, at)

    def _level(self, client: str, now: float) -> float:
        level, at = self._buckets.get(client, (self.capacity, now))
        return min(self.capacity, level + (now - at) * self.rate)

    def blocked_for(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may now."""
        now = self._clock()
        with self._lock:
            level = self._level(client, now)
        return 0 if level >= 1.0 else max(1, math.ceil((1.0 - level) / self.rate))

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            self._buckets[client] = (self._level(client, now) - 1.0, now)
            if len(self._buckets) > MAX_CLIENTS:
                fullest = sorted(self._buckets, key=lambda c: self._level(c, now))
                for old in fullest[MAX_CLIENTS // 2:]:
                    del self._buckets[old]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def require(scope: Scope) -> Callable[..., Awaitable[Token]]:
    """A dependency that admits a token of ``scope`` (admin also passes for read)."""

    async def check(request: Request,
                    credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Token:
        limiter: FailureLimiter = request.app.state.auth_limiter
        tokens: TokenStore = request.app.state.tokens
        client = _client(request)
        wait = limiter.blocked_for(client)
        if wait:
            raise ApiError(429, "too many failed authentications from this client; retry later",
                           {"Retry-After": str(wait)})
        token = tokens.verify(credentials.credentials) if credentials is not None else None
        if token is None:
            limiter.failed(client)
            detail = "a bearer token is required" if credentials is None else "unknown token"
            raise ApiError(401, detail, {"WWW-Authenticate": "Bearer"})
        request.state.token_name = token.name
        if not token.allows(scope):
            raise ApiError(403, f"token {token.name!r} has scope {token.scope!r}; this needs "
                           f"{scope!r}")
        return token

    return check


def actor(token: Token) -> str:
    """The audit log's actor for a change made with ``token``."""
    return f"api:{token.name}"
