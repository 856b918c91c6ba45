"""The OpenAI-compatible API: /v1/models and /v1/chat/completions (plain or streamed), so any
OpenAI client can ask the paper index.

The ``model`` of a chat request is echoed and otherwise ignored, except
``rag-papers:<llm spec>`` (e.g. ``rag-papers:extractive``), which answers that one request with
that llm. The answer text ends in a sources list (``[n] Title (year) id``, or the closest papers
when the engine abstained); the full Answer rides along as ``rag_papers`` and ``citations``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from rag_papers import Answer, __version__
from rag_papers.server.deps import EngineDep
from rag_papers.server.errors import ApiError
from rag_papers.server.schemas import ERROR_RESPONSES, MODEL_ID, ChatBody, ChatMessage
from rag_papers.server.sse import answer_stream, error_event

if TYPE_CHECKING:
    from rag_papers import PaperQA, Settings

__all__ = [
    "chat_completion",
    "chat_completions",
    "model",
    "models",
    "router",
    "sources_block",
    "split_messages",
]

router = APIRouter(tags=["openai"])


@router.get("/v1/models")
async def models(engine: EngineDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(engine.settings)]}


@router.get("/v1/models/{model_id}", responses=ERROR_RESPONSES)
async def model(model_id: str, engine: EngineDep) -> dict[str, Any]:
    if model_id != MODEL_ID:
        raise ApiError(
            404, f"no model {model_id!r}; this server has {MODEL_ID!r}", "not_found_error"
        )
    return _model_card(engine.settings)


@router.post("/v1/chat/completions", responses=ERROR_RESPONSES)
async def chat_completions(body: ChatBody, engine: EngineDep) -> Any:
    question, history = split_messages(body.messages)
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
    return chat_completion(answer, completion_id, body.model)


# --- the answer as OpenAI objects --------------------------------------------------------------
def _reference(title: str, year: int | None, paper_id: str) -> str:
    """'Title (year) id': the one form of a paper in a chat reply (clients show plain text)."""
    return f"{title} ({year}) {paper_id}" if year else f"{title} {paper_id}"


def sources_block(answer: Answer) -> str:
    """'Sources:' with one '[n] Title (year) id' line per citation (closest papers on abstain)."""
    if answer.citations:
        cited = answer.citations
        lines = [f"[{c.marker}] {_reference(c.title, c.year, c.paper_id)}" for c in cited]
        return "Sources:\n" + "\n".join(lines)
    if answer.abstained and answer.sources:
        lines = [f"- {_reference(s.title, s.year, s.paper_id)}" for s in answer.sources[:3]]
        return "Closest papers:\n" + "\n".join(lines)
    return ""


# What sources_block appends, to take it off an earlier reply sent back as history.
_SOURCES_TAIL = re.compile(r"\n\n(?:Sources|Closest papers):\n.*\Z", re.DOTALL)


def _full_text(answer: Answer) -> str:
    block = sources_block(answer)
    return f"{answer.text}\n\n{block}" if block else answer.text


def _usage(answer: Answer) -> dict[str, int]:
    u = answer.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def chat_completion(answer: Answer, completion_id: str, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion, with the Answer and its citations as extra fields."""
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
    """chat.completion.chunk events: role, content deltas, the sources, stop, usage, [DONE]."""
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> ServerSentEvent:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return ServerSentEvent(data=json.dumps(body))

    def delta(content: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        choice = {"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}
        return chunk([choice], **extra)

    yield delta({"role": "assistant", "content": ""})
    answer: Answer | None = None
    try:
        async with answer_stream(qa, question, kwargs) as items:
            async for item in items:
                if isinstance(item, Answer):
                    answer = item
                elif item:
                    yield delta({"content": item})
    except Exception as exc:  # headers are sent already: report it as an event
        yield error_event(exc)
        return
    assert answer is not None  # astream always ends with the Answer
    if block := sources_block(answer):
        yield delta({"content": f"\n\n{block}"})
    yield delta(
        {},
        "stop",
        citations=[c.model_dump(mode="json") for c in answer.citations],
        rag_papers=answer.model_dump(mode="json"),
    )
    if include_usage:
        yield chunk([], usage=_usage(answer))
    yield ServerSentEvent(data="[DONE]")


def split_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
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
