"""The app's OpenAPI schema, tuned to what the app does: the configured max_k as k's maximum,
400 (not 422) for a bad request, and (with a key) the two accepted key headers, so /docs can
send one and clients see the truth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rag_papers.server.schemas_openai import ChatCompletionChunk

if TYPE_CHECKING:
    from fastapi import FastAPI

    from rag_papers import Settings

__all__ = ["tune_openapi"]

_PUBLIC = ("/healthz", "/readyz")


def _bound_k(node: Any, max_k: int) -> None:
    """Every schema property named k gets maximum = max_k (in place, recursively)."""
    if isinstance(node, dict):
        k = (
            node.get("properties", {}).get("k")
            if isinstance(node.get("properties"), dict)
            else None
        )
        if isinstance(k, dict):
            for variant in [k, *k.get("anyOf", [])]:
                if isinstance(variant, dict) and variant.get("type") == "integer":
                    variant["maximum"] = max_k
        for value in node.values():
            _bound_k(value, max_k)
    elif isinstance(node, list):
        for value in node:
            _bound_k(value, max_k)


def _no_422(schema: dict[str, Any]) -> None:
    """FastAPI documents validation failures as 422; this server answers them with 400 in
    the one error shape."""
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault(
                    "400",
                    {
                        "description": "Bad Request",
                        "content": {"application/json": {"schema": error_ref}},
                    },
                )
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _add_models(schema: dict[str, Any], *models: type[BaseModel]) -> None:
    """Models no route returns as JSON (a stream's items) as components, with their parts."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, part in body.pop("$defs", {}).items():
            components.setdefault(name, part)
        components.setdefault(model.__name__, body)


def tune_openapi(app: FastAPI, settings: Settings, *, keyed: bool) -> None:
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            _bound_k(schema, settings.max_k)
            _no_422(schema)
            _add_models(schema, ChatCompletionChunk)
            if keyed:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                }
                schema["security"] = [{"bearer": []}, {"apiKey": []}]
                for path in _PUBLIC:
                    schema["paths"].get(path, {}).get("get", {})["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
