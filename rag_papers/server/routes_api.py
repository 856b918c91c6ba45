"""The server's own API: health and readiness, ask (JSON or SSE), search, papers and stats.
Every handler goes through the app's one PaperQA and runs its blocking calls in worker
threads; ingest is in ``routes_ingest``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse

from rag_papers import Answer, __version__
from rag_papers.server.deps import Engine, EngineDep, public_llm
from rag_papers.server.errors import ApiError
from rag_papers.server.ingest_files import public_source
from rag_papers.server.schemas import (
    AskBody,
    Health,
    PaperList,
    PaperRecord,
    Ready,
    SearchBody,
    SearchResponse,
    SearchResult,
    Stats,
    errors,
    sse_response,
)
from rag_papers.server.sse import ask_events

__all__ = [
    "ask",
    "healthz",
    "list_papers",
    "paper",
    "readyz",
    "router",
    "search",
    "stats",
]

router = APIRouter()

# A page of /v1/papers: papers carry whole abstracts, so a page stays modest.
_PAGE_DEFAULT = 50
_PAGE_MAX = 500
_OFFSET_MAX = 2**31 - 1  # SQLite takes 64-bit offsets; nothing real is past this
_READY_TIMEOUT_S = 10.0
_ASK_EVENTS = "delta events ({text}), then answer (the Answer JSON), then done; or error"


@router.get("/healthz", tags=["meta"])
async def healthz(engine: EngineDep) -> Health:
    """Liveness: answers on the event loop itself, without locks, threads or the index, so
    it never waits behind an ingest or a slow answer. Readiness is /readyz."""
    return Health(version=__version__, llm=public_llm(engine.settings.llm))


@router.get("/readyz", tags=["meta"], responses=errors(409, 503))
async def readyz(engine: EngineDep) -> Ready:
    """Readiness: the index opens and answers (its paper count); 503 when it does not."""

    def count() -> int:
        return engine.ready().count()

    try:
        papers = await asyncio.wait_for(asyncio.to_thread(count), _READY_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(
            503, f"the index did not answer within {_READY_TIMEOUT_S:.0f} s", "store_unavailable"
        ) from None
    return Ready(papers=papers)


@router.post(
    "/v1/ask",
    tags=["papers"],
    response_model=Answer,
    responses={**sse_response(_ASK_EVENTS), **errors(400, 401, 409, 413, 502, 503)},
)
async def ask(body: AskBody, engine: EngineDep) -> Any:
    """The Answer JSON (``truncated`` says the LLM hit its token limit; ``sentences[].quotes``
    hold a grounded answer's verified quotes), or server-sent events with ``stream``."""
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
        return await qa.aask(question, **kwargs)
    return EventSourceResponse(ask_events(qa, question, kwargs, engine.scrub))


@router.post("/v1/search", tags=["papers"], responses=errors(400, 401, 409, 413, 503))
async def search(body: SearchBody, engine: EngineDep) -> SearchResponse:
    """Ranked papers, each with its sentence most similar to the query."""
    query = engine.check_question(body.query, "query")
    engine.check_k(body.k)
    filters = body.filters.to_filters() if body.filters else None
    qa = await asyncio.to_thread(engine.ready)
    found = await asyncio.to_thread(
        qa.search, query, k=body.k, mode=body.mode, filters=filters, sentences=True
    )
    results = [SearchResult(**r.to_dict(), sentence=r.best_sentence or "") for r in found]
    return SearchResponse(query=query, results=results)


@router.get("/v1/papers", tags=["papers"], responses=errors(400, 401, 409, 503))
async def list_papers(
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=_PAGE_MAX)] = _PAGE_DEFAULT,
    offset: Annotated[int, Query(ge=0, le=_OFFSET_MAX)] = 0,
) -> PaperList:
    """A page of the papers in the index, in catalog order: {total, offset, papers}."""
    qa = await asyncio.to_thread(engine.ready)
    page = await asyncio.to_thread(qa.list_papers, limit=limit, offset=offset)
    papers = [_record(p.to_dict(), engine) for p in page.papers]
    return PaperList(total=page.total, offset=page.offset, papers=papers)


@router.get("/v1/papers/{paper_id:path}", tags=["papers"], responses=errors(401, 404, 409, 503))
async def paper(paper_id: str, engine: EngineDep) -> PaperRecord:
    qa = await asyncio.to_thread(engine.ready)
    found = await asyncio.to_thread(qa.paper, paper_id)
    if found is None:
        raise ApiError(
            404, f"no paper with id {paper_id!r} in the index", "not_found_error", param="paper_id"
        )
    return _record(found.to_dict(), engine)


@router.get("/v1/stats", tags=["papers"], responses=errors(401, 409, 503))
async def stats(engine: EngineDep) -> Stats:
    """Papers, chunks, embedding model, chunker, store kind, collection, size, BM25 documents."""
    qa = await asyncio.to_thread(engine.ready)
    data = await asyncio.to_thread(qa.stats)
    # The store's location is a path (or an internal URL): clients learn only its kind.
    data["store"] = "chroma server" if engine.settings.chroma_url else "embedded"
    return Stats(**data)


def _record(data: dict[str, Any], engine: Engine) -> PaperRecord:
    data["source"] = public_source(str(data.get("source") or ""), engine.settings)
    return PaperRecord(**data)
