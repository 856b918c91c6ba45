"""The HTTP server: the engine's ask/search/papers/ingest over JSON and server-sent events,
plus an OpenAI-compatible chat endpoint, so any OpenAI client can talk to the paper index.

Endpoints (see /docs for the schemas):

- ``GET /healthz``                 liveness, paper count, version (never needs a key)
- ``POST /v1/ask``                 the Answer JSON; ``"stream": true`` -> SSE delta/answer/done
- ``POST /v1/search``              ranked papers with their best-matching sentence
- ``GET /v1/papers/{id}``          one paper record
- ``POST /v1/ingest``              a file on the server's disk (JSON) or an upload (multipart)
- ``POST /v1/chat/completions``    OpenAI chat.completion / chat.completion.chunk
- ``GET /v1/models``               one model, ``rag-papers``

Keys: when a key is configured, every endpoint but /healthz and the docs needs it
(``Authorization: Bearer KEY`` or ``X-API-Key: KEY``); ingest needs one always. Listening off
loopback without a key is refused. Every error is JSON: ``{"error": {"message", "type"}}``.

The ``model`` of a chat request is echoed and otherwise ignored, except ``rag-papers:<llm spec>``
(e.g. ``rag-papers:extractive``), which answers that one request with that llm.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_papers import __version__
from rag_papers.answering.contract import Answer
from rag_papers.answering.llms import LLMError
from rag_papers.core.settings import Settings, SettingsError
from rag_papers.core.specs import FORMATS
from rag_papers.ingest.loaders import LoaderError
from rag_papers.retrieval.retriever import Filters, best_sentences
from rag_papers.store.index import IndexMismatchError, StoreUnavailableError

if TYPE_CHECKING:
    from rag_papers.engine.qa import PaperQA
    from rag_papers.store.index import IngestReport

__all__ = [
    "MODEL_ID",
    "ApiError",
    "AskBody",
    "ChatBody",
    "ChatMessage",
    "ErrorBody",
    "ErrorResponse",
    "FilterBody",
    "IngestPathBody",
    "SearchBody",
    "check_bind",
    "create_app",
    "is_loopback",
    "serve",
]

log = logging.getLogger("rag_papers.server.app")

MODEL_ID = "rag-papers"
# Reachable without a key: liveness for load balancers, and the (data-free) API docs.
_PUBLIC_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_INGEST_PATH = "/v1/ingest"
_KEY_HINT = "set RAG_PAPERS_SERVER_API_KEY or pass --api-key"


class ApiError(Exception):
    """An error with its HTTP status; rendered as {"error": {"message", "type"}}."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type


# --- bind safety -----------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (IPv4-mapped forms included); else False."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False  # another host name: it may resolve to anything, so assume exposed
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen off loopback without a key (raises SettingsError, a ValueError)."""
    if not api_key and not is_loopback(host):
        raise SettingsError(
            f"refusing to listen on {host!r} without an API key: anyone who can reach it could "
            "query and change the index. Set RAG_PAPERS_SERVER_API_KEY or pass --api-key, or "
            "listen on 127.0.0.1."
        )


def _resolve_key(settings: Settings, api_key: str | None) -> str | None:
    if api_key:
        return api_key
    secret = settings.server_api_key
    return (secret.get_secret_value() or None) if secret is not None else None


# --- request bodies --------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FilterBody(_Body):
    year_min: int | None = None
    year_max: int | None = None
    author: str | None = Field(default=None, description="Case-insensitive substring of an author.")
    category: str | None = Field(default=None, description="Exact category, e.g. cs.CL.")
    paper_ids: list[str] | None = None

    def to_filters(self) -> Filters | None:
        filters = Filters(**self.model_dump())
        return None if filters.empty else filters


class AskBody(_Body):
    question: str = Field(min_length=1)
    k: int | None = Field(default=None, description="Papers to retrieve (1..max_k).")
    mode: Literal["dense", "bm25", "hybrid"] | None = None
    filters: FilterBody | None = None
    llm: str | None = Field(
        default=None,
        description="Answer with this llm instead of the configured one: 'extractive', the "
        "configured spec, or 'openai:MODEL' (on the configured endpoint).",
    )
    stream: bool = Field(default=False, description="Server-sent events: delta*, answer, done.")


class SearchBody(_Body):
    query: str = Field(min_length=1)
    k: int | None = None
    mode: Literal["dense", "bm25", "hybrid"] | None = None
    filters: FilterBody | None = None


class IngestPathBody(_Body):
    path: str = Field(min_length=1, description="A file on the server's disk.")
    format: str | None = Field(
        default=None, description=f"One of {', '.join(FORMATS)}; default: detected."
    )
    fields: dict[str, str] | None = Field(
        default=None, description="json/jsonl/csv: our field name -> the file's key."
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "\n".join(
                str(p.get("text", "")) for p in self.content if p.get("type") == "text"
            )
        return self.content or ""


class ChatBody(BaseModel):
    """OpenAI's chat request; sampling options are accepted and ignored (the engine's apply)."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str = MODEL_ID
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    # rag_papers extensions (send them with the SDK's extra_body)
    k: int | None = None
    mode: Literal["dense", "bm25", "hybrid"] | None = None
    filters: FilterBody | None = None


class ErrorBody(BaseModel):
    message: str
    type: str


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 502)
}


# --- errors ----------------------------------------------------------------------------------
def _error(
    status: int, message: str, type: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type}}, status, headers=headers)


def _classify(exc: BaseException) -> tuple[int, str, str]:
    """(status, message, type) for an exception the engine or a request can raise."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.type
    if isinstance(exc, LLMError):
        return 502, str(exc), "llm_error"
    if isinstance(exc, LoaderError):
        return 400, str(exc), "loader_error"
    if isinstance(exc, SettingsError):
        return 400, str(exc), "invalid_request_error"
    if isinstance(exc, IndexMismatchError):
        return 409, str(exc), "index_mismatch"
    if isinstance(exc, StoreUnavailableError):
        return 503, str(exc), "store_unavailable"
    return 500, "internal server error (the server log has the details)", "server_error"


_STATUS_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        if err.get("type") == "json_invalid":
            parts.append(f"malformed JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
        else:
            parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc.detail), type_, headers=exc.headers)

    async def _known(request: Request, exc: Exception) -> JSONResponse:
        status, message, type_ = _classify(exc)
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, message)
        return _error(status, message, type_)

    for cls in (
        ApiError,
        LLMError,
        LoaderError,
        SettingsError,
        IndexMismatchError,
        StoreUnavailableError,
    ):
        app.add_exception_handler(cls, _known)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal server error (the server log has the details)", "server_error")


# --- the guard: keys and body size, before any body is read ----------------------------------
class _Guard:
    """ASGI middleware: checks the key and the body size before the route reads anything."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body_bytes

    def _authorised(self, scope: Scope) -> bool:
        assert self.api_key is not None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-api-key")
        if given is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        return given is not None and secrets.compare_digest(given.encode(), self.api_key.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        denied = self._deny(scope, path)
        if denied is not None:
            await denied(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await self._too_large()(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # An HTTPException: FastAPI re-raises it from body parsing to our handler.
                    raise StarletteHTTPException(413, self._too_large_message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except StarletteHTTPException as exc:
            # Raised where no handler saw it (e.g. a body read in a background task).
            if exc.status_code != 413 or started:
                raise
            await self._too_large()(scope, receive, send)

    def _deny(self, scope: Scope, path: str) -> JSONResponse | None:
        if path in _PUBLIC_PATHS:
            return None
        if self.api_key is None:
            if path == _INGEST_PATH:
                return _error(
                    403,
                    f"ingest needs an API key, and this server has none: {_KEY_HINT} when "
                    "starting the server, then send it as 'Authorization: Bearer KEY'.",
                    "permission_error",
                )
            return None
        if self._authorised(scope):
            return None
        return _error(
            401,
            "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
            "authentication_error",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _too_large_message(self) -> str:
        return f"request body is larger than the server's limit of {self.max_body} bytes"

    def _too_large(self) -> JSONResponse:
        return _error(413, self._too_large_message(), "request_too_large", {"Connection": "close"})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# --- the engine, shared by every request -----------------------------------------------------
class _Engine:
    """One PaperQA per app, created on first use. Blocking work runs in worker threads."""

    def __init__(self, settings: Settings, qa: PaperQA | None) -> None:
        self.settings = settings
        self._qa = qa
        self._owned = qa is None
        self._opened = False
        self._lock = threading.Lock()
        self.ingest_lock = threading.Lock()  # one ingest at a time; reads go on meanwhile

    @property
    def qa(self) -> PaperQA:
        with self._lock:
            if self._qa is None:
                from rag_papers.engine.qa import PaperQA

                self._qa = PaperQA(self.settings, notify=log.info)
            return self._qa

    def ready(self) -> PaperQA:
        """The engine with its index open (blocking: call from a thread)."""
        qa = self.qa
        qa.index  # noqa: B018 - opens the store (and ingests the sample corpus when empty)
        self._opened = True
        return qa

    def close(self) -> None:
        if self._owned and self._opened and self._qa is not None:
            self._qa.index.close()

    # Checks that make a request fail with a clear 4xx before any work starts.
    def check_k(self, k: int | None) -> None:
        if k is not None and not 1 <= k <= self.settings.max_k:
            raise ApiError(422, f"k={k}: must be between 1 and {self.settings.max_k} (max_k)")

    def check_question(self, text: str, what: str = "question") -> str:
        text = text.strip()
        if not text:
            raise ApiError(422, f"{what} is empty")
        limit = self.settings.max_question_chars
        if len(text) > limit:
            raise ApiError(
                422, f"{what} is {len(text)} characters; the limit is {limit} (max_question_chars)"
            )
        return text

    def check_llm(self, spec: str | None) -> str | None:
        """An llm override a client may ask for: no arbitrary local model files."""
        if spec is None or spec in ("extractive", self.settings.llm):
            return spec
        if spec.startswith("openai:") and len(spec) > len("openai:"):
            return spec
        raise ApiError(
            400,
            f"llm={spec!r}: a request may ask for 'extractive', the server's llm "
            f"({self.settings.llm!r}) or 'openai:MODEL'",
        )

    def prepare(self, llm: str | None) -> PaperQA:
        """Open the index and build the backend, so config errors come before a stream."""
        qa = self.ready()
        qa.backend(llm)
        return qa


# --- the app ---------------------------------------------------------------------------------
def create_app(
    settings: Settings,
    *,
    qa: PaperQA | None = None,
    api_key: str | None = None,
    require_key: bool = False,
) -> FastAPI:
    """The FastAPI app over one engine.

    ``api_key`` defaults to settings.server_api_key; when set, every endpoint but /healthz
    (and the docs) requires it. ``require_key=True`` refuses to build an app without a key
    (serve() passes it when listening off loopback). ``qa`` shares an existing engine.
    """
    key = _resolve_key(settings, api_key)
    if require_key and not key:
        raise SettingsError(f"this server must have an API key: {_KEY_HINT}")
    engine = _Engine(settings, qa)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(
        title="rag-papers",
        version=__version__,
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.add_middleware(_Guard, api_key=key, max_body_bytes=settings.max_body_bytes)
    _install_error_handlers(app)
    if key:
        _document_keys(app)

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, Any]:
        qa = await asyncio.to_thread(engine.ready)
        papers = await asyncio.to_thread(qa.index.catalog.count)
        return {"status": "ok", "papers": papers, "version": __version__, "llm": settings.llm}

    @app.post("/v1/ask", tags=["papers"], responses={200: {"model": Answer}, **_ERRORS})
    async def ask(body: AskBody) -> Any:
        question = engine.check_question(body.question)
        engine.check_k(body.k)
        llm = engine.check_llm(body.llm)
        kwargs: dict[str, Any] = {
            "k": body.k,
            "mode": body.mode,
            "filters": body.filters.to_filters() if body.filters else None,
            "llm": llm,
        }
        qa = await asyncio.to_thread(engine.prepare, llm)
        if not body.stream:
            answer = await qa.aask(question, **kwargs)
            return JSONResponse(answer.model_dump(mode="json"))
        return EventSourceResponse(_ask_events(qa, question, kwargs))

    @app.post("/v1/search", tags=["papers"], responses=_ERRORS)
    async def search(body: SearchBody) -> dict[str, Any]:
        query = engine.check_question(body.query, "query")
        engine.check_k(body.k)
        filters = body.filters.to_filters() if body.filters else None
        qa = await asyncio.to_thread(engine.ready)
        results = await asyncio.to_thread(_search, qa, query, body.k, body.mode, filters)
        return {"query": query, "results": results}

    @app.get("/v1/papers/{paper_id:path}", tags=["papers"], responses=_ERRORS)
    async def paper(paper_id: str) -> dict[str, Any]:
        qa = await asyncio.to_thread(engine.ready)
        found = await asyncio.to_thread(qa.index.paper, paper_id)
        if found is None:
            raise ApiError(404, f"no paper with id {paper_id!r} in the index", "not_found_error")
        return found.to_dict()

    @app.post(
        _INGEST_PATH,
        tags=["papers"],
        responses=_ERRORS,
        openapi_extra={"requestBody": _INGEST_REQUEST_BODY},
    )
    async def ingest(request: Request) -> dict[str, Any]:
        """Add papers: JSON {path, format?, fields?} naming a file on the server's disk, or a
        multipart upload (file, format?). Uploads are kept under <data_dir>/uploads so the
        papers' ``source`` stays a real file. Always needs the API key."""
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith("multipart/form-data"):
            path, fmt, fields = await _receive_upload(request, settings)
        elif content_type.startswith("application/json") or not content_type:
            try:
                spec = IngestPathBody.model_validate_json(await request.body())
            except ValueError as exc:
                raise _as_validation_error(exc) from None
            path, fmt, fields = Path(spec.path).expanduser(), spec.format, spec.fields
        else:
            raise ApiError(
                415,
                f"unsupported content type {content_type!r}: send "
                "application/json or multipart/form-data",
            )
        if fmt is not None and fmt not in FORMATS:
            raise ApiError(422, f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
        qa = await asyncio.to_thread(engine.ready)
        report = await asyncio.to_thread(_ingest, engine, qa, path, fmt, fields)
        papers = await asyncio.to_thread(qa.index.catalog.count)
        return {**report.to_dict(), "papers": papers}

    @app.get("/v1/models", tags=["openai"])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(settings)]}

    @app.get("/v1/models/{model_id}", tags=["openai"], responses=_ERRORS)
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != MODEL_ID:
            raise ApiError(
                404, f"no model {model_id!r}; this server has {MODEL_ID!r}", "not_found_error"
            )
        return _model_card(settings)

    @app.post("/v1/chat/completions", tags=["openai"], responses=_ERRORS)
    async def chat_completions(body: ChatBody) -> Any:
        question, history = _split_messages(body.messages)
        question = engine.check_question(question)
        engine.check_k(body.k)
        llm = None
        if body.model.startswith(f"{MODEL_ID}:"):
            llm = engine.check_llm(body.model.split(":", 1)[1])
        qa = await asyncio.to_thread(engine.prepare, llm)
        standalone = None
        if history:
            rewritten = await asyncio.to_thread(qa.condense, question, history, llm)
            standalone = rewritten if rewritten.strip() != question else None
        kwargs: dict[str, Any] = {
            "k": body.k,
            "mode": body.mode,
            "filters": body.filters.to_filters() if body.filters else None,
            "llm": llm,
            "standalone_question": standalone,
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            events = _chat_events(qa, question, kwargs, completion_id, body.model, include_usage)
            return EventSourceResponse(events)
        answer = await qa.aask(question, **kwargs)
        return _chat_completion(answer, completion_id, body.model)

    return app


_INGEST_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": IngestPathBody.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "format": {"type": "string", "enum": list(FORMATS)},
                },
            }
        },
    },
}


def _document_keys(app: FastAPI) -> None:
    """Declare the two accepted key headers in the OpenAPI schema (so /docs can send one)."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
            schema["paths"].get("/healthz", {}).get("get", {})["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _as_validation_error(exc: ValueError) -> RequestValidationError:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        # pydantic reports bad JSON as 'json_invalid' with the parser message in ctx
        return RequestValidationError(errors)
    return RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": str(exc)}])


# --- handlers' blocking work (run in threads) ------------------------------------------------
def _search(
    qa: PaperQA, query: str, k: int | None, mode: Any, filters: Filters | None
) -> list[dict[str, Any]]:
    embedder = qa.index.embedder
    qvec = embedder.embed_query(query)
    results = qa.retriever.retrieve(query, k=k, mode=mode, filters=filters, query_vector=qvec)
    sentences = best_sentences(qvec, results, embedder)
    return [
        {**r.to_dict(), "sentence": best[0][0] if best else ""}
        for r, best in zip(results, sentences, strict=True)
    ]


def _ingest(
    engine: _Engine, qa: PaperQA, path: Path, fmt: str | None, fields: dict[str, str] | None
) -> IngestReport:
    with engine.ingest_lock:
        try:
            return qa.ingest([path], format=fmt, fields=fields)
        except ValueError as exc:  # a field mapping that cannot apply to this format
            raise ApiError(400, str(exc)) from None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


async def _receive_upload(
    request: Request, settings: Settings
) -> tuple[Path, str | None, dict[str, str] | None]:
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "multipart ingest needs a 'file' part (the papers file)")
        fmt = form.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise ApiError(422, "'format' must be a text field")
        # Keep the client's name (sanitised): the extension drives format detection and
        # the name shows up in rejected-record messages.
        name = _UNSAFE.sub("_", Path(upload.filename or "upload").name).strip("._")[:100]
        dest_dir = settings.data_dir / "uploads"
        dest = (
            dest_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}-{name or 'upload'}"
        )

        def save() -> None:
            import shutil

            dest_dir.mkdir(parents=True, exist_ok=True)
            upload.file.seek(0)
            with dest.open("wb") as fh:
                shutil.copyfileobj(upload.file, fh)

        await asyncio.to_thread(save)
        return dest, (fmt or None), None
    finally:
        await form.close()


# --- answers as events and OpenAI objects ----------------------------------------------------
def _error_event(exc: BaseException) -> ServerSentEvent:
    status, message, type_ = _classify(exc)
    if status >= 500 and type_ == "server_error":
        log.error("error while streaming", exc_info=exc)
    return ServerSentEvent(
        event="error", data=json.dumps({"error": {"message": message, "type": type_}})
    )


async def _ask_events(
    qa: PaperQA, question: str, kwargs: dict[str, Any]
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for item in qa.astream(question, **kwargs):
            if isinstance(item, Answer):
                yield ServerSentEvent(event="answer", data=item.model_dump_json())
            else:
                yield ServerSentEvent(event="delta", data=json.dumps({"text": item}))
    except Exception as exc:  # headers are sent already: report it as an event
        yield _error_event(exc)
        return
    yield ServerSentEvent(event="done", data="{}")


def _sources_block(answer: Answer) -> str:
    """'Sources:' with one '[n] Title (year) id' line per citation (closest papers on abstain)."""
    if answer.citations:
        lines = [
            f"[{c.marker}] {_title_year(c.title, c.year)} {c.paper_id}" for c in answer.citations
        ]
        return "Sources:\n" + "\n".join(lines)
    if answer.abstained and answer.sources:
        lines = [f"- {_title_year(s.title, s.year)} {s.paper_id}" for s in answer.sources[:3]]
        return "Closest papers:\n" + "\n".join(lines)
    return ""


def _title_year(title: str, year: int | None) -> str:
    return f"{title} ({year})" if year else title


def _full_text(answer: Answer) -> str:
    block = _sources_block(answer)
    return f"{answer.text}\n\n{block}" if block else answer.text


def _usage(answer: Answer) -> dict[str, int]:
    u = answer.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def _chat_completion(answer: Answer, completion_id: str, model: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _full_text(answer)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(answer),
        "citations": [c.model_dump(mode="json") for c in answer.citations],
        "rag_papers": answer.model_dump(mode="json"),
    }


async def _chat_events(
    qa: PaperQA,
    question: str,
    kwargs: dict[str, Any],
    completion_id: str,
    model: str,
    include_usage: bool,
) -> AsyncIterator[ServerSentEvent]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return ServerSentEvent(data=json.dumps(body))

    yield chunk({"role": "assistant", "content": ""})
    try:
        answer: Answer | None = None
        async for item in qa.astream(question, **kwargs):
            if isinstance(item, Answer):
                answer = item
            elif item:
                yield chunk({"content": item})
    except Exception as exc:
        yield _error_event(exc)
        return
    assert answer is not None  # astream always ends with the Answer
    if block := _sources_block(answer):
        yield chunk({"content": f"\n\n{block}"})
    yield chunk(
        {},
        "stop",
        citations=[c.model_dump(mode="json") for c in answer.citations],
        rag_papers=answer.model_dump(mode="json"),
    )
    if include_usage:
        usage_chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": _usage(answer),
        }
        yield ServerSentEvent(data=json.dumps(usage_chunk))
    yield ServerSentEvent(data="[DONE]")


_SOURCES_TAIL = re.compile(r"\n\n(?:Sources|Closest papers):\n.*\Z", re.DOTALL)


def _split_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The last user message, and the (user, assistant) turns before it."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise ApiError(422, "messages: there is no user message to answer")
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for m in messages[:last]:
        if m.role == "user":
            pending = m.text()
        elif m.role == "assistant" and pending is not None:
            # Our own earlier replies end in a sources list: not part of what was said.
            history.append((pending, _SOURCES_TAIL.sub("", m.text())))
            pending = None
    return messages[last].text(), history


def _model_card(settings: Settings) -> dict[str, Any]:
    return {
        "id": MODEL_ID,
        "object": "model",
        "created": 0,
        "owned_by": settings.llm,
        "metadata": {
            "llm": settings.llm,
            "retrieval_mode": settings.retrieval_mode,
            "top_k": settings.top_k,
            "version": __version__,
            "llm_override": f"send model '{MODEL_ID}:<llm spec>' to answer with another llm",
        },
    }


# --- running it ------------------------------------------------------------------------------
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

    key = _resolve_key(settings, api_key)
    check_bind(host, key)
    app = create_app(settings, api_key=key, require_key=not is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level=log_level)
