"""The HTTP server: the engine's ask/search/papers/ingest over JSON and server-sent events,
plus an OpenAI-compatible chat endpoint, so any OpenAI client can talk to the paper index.

Endpoints (see /docs for the schemas):

- ``GET /healthz``                 liveness and version (never needs a key, never waits)
- ``GET /readyz``                  readiness: the index answers (its paper count)
- ``POST /v1/ask``                 the Answer JSON; ``"stream": true`` -> SSE delta/answer/done
- ``POST /v1/search``              ranked papers with their best-matching sentence
- ``GET /v1/papers``               a page of papers (``limit``, ``offset``) and the total
- ``GET /v1/papers/{id}``          one paper record
- ``GET /v1/stats``                the index: papers, chunks, embedding model, size
- ``POST /v1/ingest``              an upload (multipart), or a file inside ingest_roots (JSON);
                                   a queued job: 200 with the report, or 202 + status URL
- ``GET /v1/ingest/{job}``         an ingest job's status and report
- ``POST /v1/chat/completions``    OpenAI chat.completion / chat.completion.chunk
- ``GET /v1/models``               one model, ``rag-papers``

Keys: when a key is configured, every endpoint but /healthz, /readyz and the docs needs it
(``Authorization: Bearer KEY`` or ``X-API-Key: KEY``); ingest needs one always, and a key
shorter than server_min_key_chars is refused at start. Listening off loopback without a key
is refused. Every error is JSON: ``{"error": {"message", "type", "param", "code"}}``; a bad
request is 400.

The ``model`` of a chat request is echoed and otherwise ignored, except ``rag-papers:<llm spec>``
(e.g. ``rag-papers:extractive``), which answers that one request with that llm, if the server
allows it (its llm, ``extractive``, or one of allowed_llms).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI

from rag_papers import SettingsError, __version__
from rag_papers.server import routes_api, routes_ingest, routes_openai
from rag_papers.server.deps import Engine
from rag_papers.server.errors import install_error_handlers
from rag_papers.server.guard import (
    KEY_HINT,
    KeyGuard,
    check_bind,
    check_key,
    is_loopback,
    resolve_key,
)
from rag_papers.server.openapi import tune_openapi
from rag_papers.server.ratelimit import RateLimit

if TYPE_CHECKING:
    from rag_papers import PaperQA, Settings

__all__ = ["create_app", "serve"]


def create_app(
    settings: Settings,
    *,
    qa: PaperQA | None = None,
    api_key: str | None = None,
    require_key: bool = False,
) -> FastAPI:
    """The FastAPI app over one engine.

    ``api_key`` defaults to settings.server_api_key; when set, every endpoint but /healthz,
    /readyz (and the docs) requires it, and it must have server_min_key_chars characters.
    ``require_key=True`` refuses to build an app without a key (serve() passes it when
    listening off loopback). ``qa`` shares an existing engine (the caller closes it);
    otherwise the app makes its own and closes it on shutdown.
    """
    key = resolve_key(settings, api_key)
    if require_key and not key:
        raise SettingsError(f"this server must have an API key: {KEY_HINT}")
    check_key(settings, key)
    engine = Engine(settings, qa)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(title="rag-papers", version=__version__, description=__doc__, lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(KeyGuard, api_key=key, max_body_bytes=settings.max_body_bytes)
    # Added last, so it runs first: a refused client costs no key check or body read.
    app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute)
    install_error_handlers(app)
    app.include_router(routes_api.router)
    app.include_router(routes_ingest.router)
    app.include_router(routes_openai.router)
    tune_openapi(app, settings, keyed=bool(key))
    return app


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
) -> None:
    """Run the server with uvicorn until interrupted. Off loopback a key is mandatory."""
    import uvicorn

    key = resolve_key(settings, api_key)
    check_bind(host, key)
    check_key(settings, key)
    app = create_app(settings, api_key=key, require_key=not is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level=log_level)
