"""Who may talk to the server: the bind check (no key, no listening off loopback) and an ASGI
guard that checks the API key and the body size before any route reads a byte."""

from __future__ import annotations

import ipaddress
import secrets

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_papers import Settings, SettingsError
from rag_papers.server.errors import error_response

__all__ = [
    "INGEST_PATH",
    "KEY_HINT",
    "PUBLIC_PATHS",
    "KeyGuard",
    "check_bind",
    "check_key",
    "is_loopback",
    "resolve_key",
]

# Reachable without a key: liveness and readiness for load balancers, and the (data-free)
# API docs.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
# Ingest changes the index (and its jobs' reports name files), so it and everything under it
# need a key even on loopback.
INGEST_PATH = "/v1/ingest"
KEY_HINT = "set RAG_PAPERS_SERVER_API_KEY or pass --api-key"


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


def check_key(settings: Settings, api_key: str | None) -> None:
    """Refuse a key shorter than settings.server_min_key_chars (raises SettingsError)."""
    need = settings.server_min_key_chars
    if api_key and len(api_key) < need:
        raise SettingsError(
            f"the server's API key is {len(api_key)} characters; it needs at least {need} "
            '(server_min_key_chars). Make one with: python -c "import secrets; '
            'print(secrets.token_urlsafe(32))"'
        )


def resolve_key(settings: Settings, api_key: str | None) -> str | None:
    """The key given, else settings.server_api_key; None when neither is set."""
    if api_key:
        return api_key
    secret = settings.server_api_key
    return (secret.get_secret_value() or None) if secret is not None else None


class KeyGuard:
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
        # Constant time: the comparison must not tell an attacker how much of a guess was right.
        return given is not None and secrets.compare_digest(given.encode(), self.api_key.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        denied = self._deny(scope)
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

    def _deny(self, scope: Scope) -> JSONResponse | None:
        """The refusal for this request (403 or 401), or None to let it through."""
        path = scope["path"]
        if path in PUBLIC_PATHS:
            return None
        if self.api_key is None:
            if path == INGEST_PATH or path.startswith(f"{INGEST_PATH}/"):
                return error_response(
                    403,
                    f"ingest needs an API key, and this server has none: {KEY_HINT} when "
                    "starting the server, then send it as 'Authorization: Bearer KEY'.",
                    "permission_error",
                )
            return None
        if self._authorised(scope):
            return None
        return error_response(
            401,
            "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
            "authentication_error",
            headers={"WWW-Authenticate": "Bearer"},
            code="invalid_api_key",
        )

    def _too_large_message(self) -> str:
        return f"request body is larger than the server's limit of {self.max_body} bytes"

    def _too_large(self) -> JSONResponse:
        return error_response(
            413, self._too_large_message(), "request_too_large", {"Connection": "close"}
        )


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
