"""Request and response bodies of the server's own API (pydantic models, shown in /docs), the
one error shape, and the documented error statuses. The OpenAI-compatible bodies are in
``schemas_openai``.

Modes, formats and the llm spec grammar come from the package's one declaration of them
(``rag_papers.MODES``/``Mode``, ``FORMATS``, ``LLM_SPEC_HELP``), never repeated here.
Numbers are strict and bounded (``true`` is not a k; a year is 0..9999): a value the engine
cannot take is a 400 here, never a 500 further down.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag_papers import FORMATS, LLM_SPEC_HELP, Filters, Mode

__all__ = [
    "INGEST_REQUEST_BODY",
    "K_LIMIT",
    "MODEL_ID",
    "AskBody",
    "ErrorBody",
    "ErrorResponse",
    "FilterBody",
    "Health",
    "IngestJobBody",
    "IngestPathBody",
    "IngestReportBody",
    "PaperList",
    "PaperRecord",
    "Ready",
    "SearchBody",
    "SearchResponse",
    "SearchResult",
    "Stats",
    "StrictK",
    "errors",
    "sse_response",
]

# The one model the OpenAI-compatible API offers; "rag-papers:<llm spec>" picks another llm.
MODEL_ID = "rag-papers"
# The schema's bound on k (Settings.max_k's own upper bound); the app's OpenAPI shows the
# configured max_k and the routes check it.
K_LIMIT = 1000
_TEXT_LIMIT = 100_000  # beyond any question limit; the route checks max_question_chars

StrictK = Annotated[int, Field(strict=True, ge=1, le=K_LIMIT, description="Papers (1..max_k).")]
Year = Annotated[int, Field(strict=True, ge=0, le=9999)]


class _Body(BaseModel):
    # Our own API refuses unknown fields: a typo ('filter') must not silently do nothing.
    model_config = ConfigDict(extra="forbid")


class FilterBody(_Body):
    year_min: Year | None = None
    year_max: Year | None = None
    author: str | None = Field(
        default=None, max_length=500, description="Case-insensitive substring of an author."
    )
    category: str | None = Field(
        default=None, max_length=200, description="Exact category, e.g. cs.CL."
    )
    paper_ids: list[Annotated[str, Field(max_length=500)]] | None = Field(
        default=None, max_length=1000
    )

    def to_filters(self) -> Filters | None:
        filters = Filters(**self.model_dump())
        return None if filters.empty else filters


class AskBody(_Body):
    question: str = Field(min_length=1, max_length=_TEXT_LIMIT)
    k: StrictK | None = None
    mode: Mode | None = None
    filters: FilterBody | None = None
    llm: str | None = Field(
        default=None,
        max_length=500,
        description=f"Answer with this llm instead of the configured one. Specs are "
        f"{LLM_SPEC_HELP}; a request may name 'extractive', the server's own llm or one of "
        "the server's allowed_llms, nothing else.",
    )
    stream: bool = Field(default=False, description="Server-sent events: delta*, answer, done.")


class SearchBody(_Body):
    query: str = Field(min_length=1, max_length=_TEXT_LIMIT)
    k: StrictK | None = None
    mode: Mode | None = None
    filters: FilterBody | None = None


class IngestPathBody(_Body):
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="A file inside one of the server's ingest_roots: absolute, or relative "
        "to a root. Refused when the server has no ingest_roots.",
    )
    format: str | None = Field(
        default=None,
        description=f"One of {', '.join(FORMATS)}; default: detected.",
        json_schema_extra={"enum": [*FORMATS, None]},
    )
    fields: dict[str, str] | None = Field(
        default=None, description="json/jsonl/csv: our field name -> the file's key."
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        if value is not None and value not in FORMATS:
            raise ValueError(f"expected one of {', '.join(FORMATS)}")
        return value


# --- responses ----------------------------------------------------------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    llm: str


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    papers: int


class SearchResult(BaseModel):
    id: str
    title: str
    year: int | None = None
    url: str | None = None
    rank: int
    score: float
    dense: float | None = None
    bm25: float | None = None
    sentence: str = Field(description="The paper's sentence closest to the query.")


class SearchResponse(BaseModel):
    query: str
    results: list[SearchResult]


class PaperRecord(BaseModel):
    id: str
    title: str
    abstract: str
    authors: list[str] = Field(default_factory=list)
    year: int | None = None
    url: str | None = None
    categories: list[str] = Field(default_factory=list)
    doi: str | None = None
    source: str = Field(default="", description="The file's name (relative to its ingest root).")
    line: int = 0


class PaperList(BaseModel):
    total: int
    offset: int
    papers: list[PaperRecord]


class Stats(BaseModel):
    model_config = ConfigDict(extra="allow")

    papers: int
    chunks: int
    embed_model: str
    chunker: str
    store: str = Field(description="'embedded' or 'chroma server' (never a path or URL).")
    collection: str
    size_on_disk_bytes: int
    bm25_documents: int


class IngestReportBody(BaseModel):
    read: int
    added: int
    updated: int
    unchanged: int
    chunks_written: int
    rejected: list[str]
    duplicates: list[str]
    seconds: float
    papers: int = Field(description="Papers in the index after this ingest.")


class IngestJobBody(BaseModel):
    job: str
    status: Literal["queued", "running", "done", "failed"]
    status_url: str
    report: IngestReportBody | None = None
    error: ErrorBody | None = None


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route documents in /docs, all with the one error shape."""
    return {code: {"model": ErrorResponse} for code in codes}


def sse_response(events: str, item: str | None = None) -> dict[int | str, dict[str, Any]]:
    """The 200's second form, server-sent events (``"stream": true``), next to the route's
    JSON response model. ``item`` names the component each event's data is (x-item-schema:
    OpenAPI 3.1 has no field for a stream's items; 3.2's itemSchema is the same idea)."""
    media: dict[str, Any] = {"schema": {"type": "string", "description": events}}
    if item is not None:
        media["x-item-schema"] = {"$ref": f"#/components/schemas/{item}"}
    return {200: {"content": {"text/event-stream": media}}}


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
