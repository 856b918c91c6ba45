"""Errors as JSON: every failure a client sees is OpenAI's error shape,
``{"error": {"message", "type", "param", "code"}}``, with a status that says whose fault it is
(4xx the request's, 502 the LLM's, 5xx ours). Bad requests are 400 (never FastAPI's 422), so
the official openai SDK raises ``BadRequestError`` with ``.param`` and ``.code``. Messages
never carry the server's own paths: ``Scrubber`` puts names in their place."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag_papers import (
    IndexMismatchError,
    LLMError,
    LoaderError,
    SettingsError,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from rag_papers import Settings

__all__ = [
    "ApiError",
    "Scrubber",
    "as_validation_error",
    "classify",
    "error_body",
    "error_response",
    "install_error_handlers",
    "validation_error",
]

log = logging.getLogger(__name__)

_INTERNAL = "internal server error (the server log has the details)"
_STATUS_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An error with its HTTP status; rendered as {"error": {"message", "type", "param", "code"}}.

    ``param`` names the request field at fault (dotted, e.g. ``filters.year_min``), ``code``
    is a machine-readable reason; both may be None.
    """

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


class Scrubber:
    """Replaces the server's own paths (index, data dir, ingest roots, model files, home) in
    a message with short names, so no response tells a client how the server's disk is laid
    out."""

    def __init__(self, settings: Settings) -> None:
        named: list[tuple[Path, str]] = [
            (settings.resolved_index_dir, "<index>"),
            (settings.data_dir, "<data_dir>"),
            *((root, "<ingest root>") for root in settings.ingest_roots),
            (Path.home(), "~"),
        ]
        for spec in (settings.llm, *settings.allowed_llms):  # a model file by its name
            kind, _, value = spec.partition(":")
            if kind == "gguf" and value.strip():
                named.append((Path(value.strip()), Path(value.strip()).name))
        pairs: dict[str, str] = {}
        for path, name in named:
            for form in {str(path), os.path.realpath(path), str(Path(path).expanduser())}:
                if len(form) > 1:  # never replace a bare '/'
                    pairs.setdefault(form, name)
        # Longest first: the index dir lies inside the data dir.
        self._pairs = sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def __call__(self, text: str) -> str:
        for path, name in self._pairs:
            text = text.replace(path, name)
        return text


# The engine's errors that are a client's (or its LLM's) problem, not a server bug.
_KNOWN: tuple[type[Exception], ...] = (
    ApiError,
    LLMError,
    LoaderError,
    SettingsError,
    IndexMismatchError,
    StoreUnavailableError,
)


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type: str,
    headers: Mapping[str, str] | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type, param, code), status, headers=headers)


def classify(exc: BaseException) -> ApiError:
    """The ApiError (status, message, type, param, code) for an exception a request raised."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, LLMError):
        return ApiError(502, str(exc), "llm_error")
    if isinstance(exc, LoaderError):
        return ApiError(400, str(exc), "loader_error", code="loader_error")
    if isinstance(exc, SettingsError):
        return ApiError(400, str(exc))
    if isinstance(exc, IndexMismatchError):
        return ApiError(409, str(exc), "index_mismatch", code="index_mismatch")
    if isinstance(exc, StoreUnavailableError):
        return ApiError(503, str(exc), "store_unavailable", code="store_unavailable")
    return ApiError(500, _INTERNAL, "server_error")


# Where pydantic says which member of a union failed ('str', 'list[constrained-str]',
# 'function-after[...]'): not a field, so not part of ``param``.
_UNION_TAG = re.compile(r"^(?:str|int|float|bool|list|dict|none|.*[\[\]()\-].*)$")
_SOURCES = ("body", "query", "path", "header")


def validation_error(exc: RequestValidationError) -> ApiError:
    """A 400 naming the first bad field as ``param`` and every bad field in the message."""
    parts: list[str] = []
    param: str | None = None
    code: str | None = None
    for err in exc.errors():
        loc = [
            str(x)
            for x in err.get("loc", ())
            if x not in _SOURCES and not (isinstance(x, str) and _UNION_TAG.match(x))
        ]
        where = ".".join(loc)
        if err.get("type") == "json_invalid":
            parts.append(f"malformed JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
        else:
            parts.append(f"{where or 'body'}: {err.get('msg')}")
        if code is None:
            param, code = where or None, str(err.get("type") or "invalid_value")
    return ApiError(400, "; ".join(parts) or "invalid request", param=param, code=code)


def as_validation_error(exc: ValueError) -> RequestValidationError:
    """A body a route parsed itself, failed as FastAPI's own validation would fail it."""
    if isinstance(exc, ValidationError):
        # pydantic reports bad JSON as 'json_invalid' with the parser message in ctx
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        return RequestValidationError(errors)
    return RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": str(exc)}])


def _scrubber(request: Request) -> Callable[[str], str]:
    engine = getattr(request.app.state, "engine", None)
    return engine.scrub if engine is not None else (lambda text: text)


def _render(request: Request, error: ApiError) -> JSONResponse:
    message = _scrubber(request)(error.message)
    if error.status >= 500:
        log.warning("%s %s -> %d: %s", request.method, request.url.path, error.status, message)
    return error_response(
        error.status,
        message,
        error.type,
        error.headers,
        param=error.param,
        code=error.code,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _render(request, validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
        return error_response(exc.status_code, str(exc.detail), type_, headers=exc.headers)

    async def _known(request: Request, exc: Exception) -> JSONResponse:
        return _render(request, classify(exc))

    for cls in _KNOWN:
        app.add_exception_handler(cls, _known)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, _INTERNAL, "server_error")
