"""Errors as JSON: every failure a client sees is ``{"error": {"message", "type"}}`` with a
status that says whose fault it is (4xx the request's, 502 the LLM's, 5xx ours)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

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

__all__ = [
    "ApiError",
    "as_validation_error",
    "classify",
    "error_response",
    "install_error_handlers",
    "validation_message",
]

log = logging.getLogger(__name__)

_INTERNAL = "internal server error (the server log has the details)"
_STATUS_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
}


class ApiError(Exception):
    """An error with its HTTP status; rendered as {"error": {"message", "type"}}."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type


# The engine's errors that are a client's (or its LLM's) problem, not a server bug.
_KNOWN: tuple[type[Exception], ...] = (
    ApiError,
    LLMError,
    LoaderError,
    SettingsError,
    IndexMismatchError,
    StoreUnavailableError,
)


def error_response(
    status: int, message: str, type: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type}}, status, headers=headers)


def classify(exc: BaseException) -> tuple[int, str, str]:
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
    return 500, _INTERNAL, "server_error"


def validation_message(exc: RequestValidationError) -> str:
    """One line naming each bad field (or the JSON parser's complaint)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        if err.get("type") == "json_invalid":
            parts.append(f"malformed JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
        else:
            parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def as_validation_error(exc: ValueError) -> RequestValidationError:
    """A body a route parsed itself, failed as FastAPI's own validation would fail it."""
    if isinstance(exc, ValidationError):
        # pydantic reports bad JSON as 'json_invalid' with the parser message in ctx
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        return RequestValidationError(errors)
    return RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": str(exc)}])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(exc), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
        return error_response(exc.status_code, str(exc.detail), type_, headers=exc.headers)

    async def _known(request: Request, exc: Exception) -> JSONResponse:
        status, message, type_ = classify(exc)
        if status >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.url.path, status, message)
        return error_response(status, message, type_)

    for cls in _KNOWN:
        app.add_exception_handler(cls, _known)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, _INTERNAL, "server_error")
