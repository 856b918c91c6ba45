"""HTTP front end: a FastAPI app with the server's own API and an OpenAI-compatible API.

Modules, after FastAPI's "bigger applications" layout: ``app`` (create_app, serve),
``routes_api``, ``routes_ingest`` and ``routes_openai`` (the routers), ``schemas`` and
``schemas_openai`` (request and response bodies), ``openai_reply`` (an Answer as OpenAI
objects) and ``limits`` (stop, max_tokens, citation annotations), ``deps`` (the shared engine
and request checks), ``ingest_jobs`` (the ingest queue and its thread), ``ingest_files``
(which files an ingest may read, and what a client learns about them), ``guard`` (bind check,
API key, body size), ``errors`` (OpenAI-shaped JSON errors, path scrubbing), ``openapi``
(the schema tuned to the settings), ``sse`` (streamed answers). The names the CLI and tests
use are re-exported here.
"""

from rag_papers.server.app import create_app, serve
from rag_papers.server.errors import ApiError
from rag_papers.server.guard import check_bind, is_loopback
from rag_papers.server.schemas import MODEL_ID

__all__ = ["MODEL_ID", "ApiError", "check_bind", "create_app", "is_loopback", "serve"]
