"""Request and response bodies of the HTTP API (pydantic models, shown in /docs).

Modes, formats and the llm spec grammar come from the package's one declaration of them
(``rag_papers.MODES``/``Mode``, ``FORMATS``, ``LLM_SPEC_HELP``), never repeated here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rag_papers import FORMATS, LLM_SPEC_HELP, Filters, Mode

__all__ = [
    "ERROR_RESPONSES",
    "INGEST_REQUEST_BODY",
    "MODEL_ID",
    "AskBody",
    "ChatBody",
    "ChatMessage",
    "ErrorBody",
    "ErrorResponse",
    "FilterBody",
    "IngestPathBody",
    "SearchBody",
]

# The one model the OpenAI-compatible API offers; "rag-papers:<llm spec>" picks another llm.
MODEL_ID = "rag-papers"


class _Body(BaseModel):
    # Our own API refuses unknown fields: a typo ('filter') must not silently do nothing.
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
    mode: Mode | None = None
    filters: FilterBody | None = None
    llm: str | None = Field(
        default=None,
        description=f"Answer with this llm instead of the configured one. Specs are "
        f"{LLM_SPEC_HELP}; a request may name 'extractive', the server's own llm or "
        "'openai:MODEL' (on the configured endpoint), never a local model file.",
    )
    stream: bool = Field(default=False, description="Server-sent events: delta*, answer, done.")


class SearchBody(_Body):
    query: str = Field(min_length=1)
    k: int | None = None
    mode: Mode | None = None
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
    mode: Mode | None = None
    filters: FilterBody | None = None


class ErrorBody(BaseModel):
    message: str
    type: str


class ErrorResponse(BaseModel):
    error: ErrorBody


# The error statuses a route documents in /docs, all with the one error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 502)
}

# /v1/ingest reads its body itself (JSON or multipart), so its schema is declared by hand.
INGEST_REQUEST_BODY: dict[str, Any] = {
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
