"""HTTP front end: a FastAPI app with the server's own API and an OpenAI-compatible API.

Modules, after FastAPI's "bigger applications" layout: ``app`` (create_app, serve),
``routes_api`` and ``routes_openai`` (the routers), ``schemas`` (bodies), ``deps`` (the shared
engine), ``guard`` (bind check, API key and body size), ``errors`` (JSON errors), ``sse``
(streamed answers). The names the CLI and tests use are re-exported here.
"""

from rag_papers.server.app import create_app, serve
from rag_papers.server.errors import ApiError
from rag_papers.server.guard import check_bind, is_loopback
from rag_papers.server.schemas import MODEL_ID

__all__ = ["MODEL_ID", "ApiError", "check_bind", "create_app", "is_loopback", "serve"]
