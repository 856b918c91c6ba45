"""A per-client request limit: a token bucket per client address, refilled at
``rate_limit_per_minute``, for the API routes of a server that is reachable off loopback.

Loopback clients are not limited: they are this machine's own users, or a reverse proxy on
it, which should limit by the real client address itself (README, Security). Liveness,
readiness and the API docs are never limited. A refused request is a 429 with Retry-After.

Buckets live in one process. With ``serve --workers N`` each worker keeps its own and takes
``ceil(limit / N)`` a minute per client, so a client spreading its requests over every worker
still gets at most about the limit; one that keeps one connection (one worker) gets 1/N of it.
"""

from __future__ import annotations

import math
import threading
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from rag_papers.server.errors import error_response
from rag_papers.server.guard import PUBLIC_PATHS, is_loopback

__all__ = ["RateLimit"]

# Buckets of clients idle this long are forgotten, so the table cannot grow without bound.
_IDLE_S = 600.0


class RateLimit:
    """ASGI middleware: at most ``per_minute`` requests a minute per client address (bursts
    up to ``per_minute``); 0 switches it off. ``workers``: the server's worker processes,
    which share the limit (each takes its share)."""

    def __init__(self, app: ASGIApp, per_minute: int, workers: int = 1) -> None:
        self.app = app
        self.limit = per_minute
        self.per_minute = math.ceil(per_minute / workers)  # this process's share
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, last refill)
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.per_minute <= 0 or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        host = (scope.get("client") or ("", 0))[0] or ""
        if is_loopback(host) or (wait := self._take(host)) == 0.0:
            await self.app(scope, receive, send)
            return
        refusal = error_response(
            429,
            f"too many requests from {host}: the limit is {self.limit} a minute"
            f"{self._shared()}; retry in {math.ceil(wait)} s",
            "rate_limit_error",
            {"Retry-After": str(math.ceil(wait))},
            code="rate_limit_exceeded",
        )
        await refusal(scope, receive, send)

    def _shared(self) -> str:
        if self.per_minute == self.limit:
            return ""
        return f" ({self.per_minute} on each of the server's worker processes)"

    def _take(self, host: str) -> float:
        """Take a token for ``host``: 0.0 when granted, else seconds until one is free."""
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            if now - self._swept > _IDLE_S:
                cutoff = now - _IDLE_S
                self._buckets = {h: b for h, b in self._buckets.items() if b[1] > cutoff}
                self._swept = now
            tokens, last = self._buckets.get(host, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[host] = (tokens - 1.0, now)
                return 0.0
            self._buckets[host] = (tokens, now)
            return (1.0 - tokens) / rate
