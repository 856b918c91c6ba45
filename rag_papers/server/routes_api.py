"""The server's own API: health, ask (JSON or SSE), search, papers, stats and ingest (a file
on the server's disk, or an upload). Every handler goes through the app's one PaperQA and
runs its blocking calls in worker threads."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.datastructures import UploadFile

from rag_papers import FORMATS, Answer, __version__
from rag_papers.server.deps import Engine, EngineDep
from rag_papers.server.errors import ApiError, as_validation_error
from rag_papers.server.guard import INGEST_PATH
from rag_papers.server.schemas import (
    ERROR_RESPONSES,
    INGEST_REQUEST_BODY,
    AskBody,
    IngestPathBody,
    SearchBody,
)
from rag_papers.server.sse import ask_events

if TYPE_CHECKING:
    from rag_papers import IngestReport, PaperQA, Settings

__all__ = [
    "ask",
    "healthz",
    "ingest",
    "list_papers",
    "paper",
    "router",
    "search",
    "stats",
]

router = APIRouter()

# A page of /v1/papers: papers carry whole abstracts, so a page stays modest.
_PAGE_DEFAULT = 50
_PAGE_MAX = 500


@router.get("/healthz", tags=["meta"])
async def healthz(engine: EngineDep) -> dict[str, Any]:
    qa = await asyncio.to_thread(engine.ready)
    papers = await asyncio.to_thread(qa.count)
    return {"status": "ok", "papers": papers, "version": __version__, "llm": engine.settings.llm}


@router.post("/v1/ask", tags=["papers"], responses={200: {"model": Answer}, **ERROR_RESPONSES})
async def ask(body: AskBody, engine: EngineDep) -> Any:
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
    return EventSourceResponse(ask_events(qa, question, kwargs))


@router.post("/v1/search", tags=["papers"], responses=ERROR_RESPONSES)
async def search(body: SearchBody, engine: EngineDep) -> dict[str, Any]:
    """Ranked papers, each with its sentence most similar to the query."""
    query = engine.check_question(body.query, "query")
    engine.check_k(body.k)
    filters = body.filters.to_filters() if body.filters else None
    qa = await asyncio.to_thread(engine.ready)
    found = await asyncio.to_thread(
        qa.search, query, k=body.k, mode=body.mode, filters=filters, sentences=True
    )
    results = [{**r.to_dict(), "sentence": r.best_sentence or ""} for r in found]
    return {"query": query, "results": results}


@router.get("/v1/papers", tags=["papers"], responses=ERROR_RESPONSES)
async def list_papers(
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=_PAGE_MAX)] = _PAGE_DEFAULT,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """A page of the papers in the index, in catalog order: {total, offset, papers}."""
    qa = await asyncio.to_thread(engine.ready)
    page = await asyncio.to_thread(qa.list_papers, limit=limit, offset=offset)
    papers = [p.to_dict() for p in page.papers]
    return {"total": page.total, "offset": page.offset, "papers": papers}


@router.get("/v1/papers/{paper_id:path}", tags=["papers"], responses=ERROR_RESPONSES)
async def paper(paper_id: str, engine: EngineDep) -> dict[str, Any]:
    qa = await asyncio.to_thread(engine.ready)
    found = await asyncio.to_thread(qa.paper, paper_id)
    if found is None:
        raise ApiError(404, f"no paper with id {paper_id!r} in the index", "not_found_error")
    return found.to_dict()


@router.get("/v1/stats", tags=["papers"], responses=ERROR_RESPONSES)
async def stats(engine: EngineDep) -> dict[str, Any]:
    """Papers, chunks, embedding model, chunker, store, collection, size, BM25 documents."""
    qa = await asyncio.to_thread(engine.ready)
    return await asyncio.to_thread(qa.stats)


@router.post(
    INGEST_PATH,
    tags=["papers"],
    responses=ERROR_RESPONSES,
    openapi_extra={"requestBody": INGEST_REQUEST_BODY},
)
async def ingest(request: Request, engine: EngineDep) -> dict[str, Any]:
    """Add papers: JSON {path, format?, fields?} naming a file on the server's disk, or a
    multipart upload (file, format?). Uploads are kept under <data_dir>/uploads so the
    papers' ``source`` stays a real file. Always needs the API key."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        path, fmt, fields = await _receive_upload(request, engine.settings)
    elif content_type.startswith("application/json") or not content_type:
        try:
            spec = IngestPathBody.model_validate_json(await request.body())
        except ValueError as exc:
            raise as_validation_error(exc) from None
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
    papers = await asyncio.to_thread(qa.count)
    return {**report.to_dict(), "papers": papers}


def _ingest(
    engine: Engine, qa: PaperQA, path: Path, fmt: str | None, fields: dict[str, str] | None
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
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        dest = dest_dir / f"{stamp}-{name or 'upload'}"

        def save() -> None:
            dest_dir.mkdir(parents=True, exist_ok=True)
            upload.file.seek(0)
            with dest.open("wb") as fh:
                shutil.copyfileobj(upload.file, fh)

        await asyncio.to_thread(save)
        return dest, (fmt or None), None
    finally:
        await form.close()
