"""The OpenAI-compatible API: /v1/models and /v1/chat/completions (plain or streamed), so any
OpenAI client can ask the paper index.

The ``model`` of a chat request is echoed and otherwise ignored, except
``rag-papers:<llm spec>`` (e.g. ``rag-papers:extractive``), which answers that one request with
that llm if the server allows it. Parameters the server cannot honour are refused by name
(``schemas_openai``); ``stop`` and ``max_tokens`` cut the reply (``openai_reply``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from rag_papers import Generation, __version__
from rag_papers.server.deps import EngineDep, public_llm
from rag_papers.server.errors import ApiError
from rag_papers.server.limits import OutputLimit
from rag_papers.server.openai_reply import SOURCES_TAIL, chat_completion, chat_events
from rag_papers.server.schemas import MODEL_ID, errors, sse_response
from rag_papers.server.schemas_openai import (
    ChatBody,
    ChatCompletion,
    ChatMessage,
    ModelCard,
    ModelList,
    refuse_unsupported,
)

if TYPE_CHECKING:
    from rag_papers import Settings

__all__ = ["chat_completions", "model", "models", "router", "split_messages"]

router = APIRouter(tags=["openai"])

_CHUNK_EVENTS = "data: chat.completion.chunk JSON per event, then data: [DONE]"


@router.get("/v1/models", responses=errors(401))
async def models(engine: EngineDep) -> ModelList:
    return ModelList(data=[_model_card(engine.settings, engine.allowed_llms())])


@router.get("/v1/models/{model_id}", responses=errors(401, 404))
async def model(model_id: str, engine: EngineDep) -> ModelCard:
    if model_id != MODEL_ID:
        raise ApiError(
            404,
            f"no model {model_id!r}; this server has {MODEL_ID!r}",
            "not_found_error",
            param="model",
            code="model_not_found",
        )
    return _model_card(engine.settings, engine.allowed_llms())


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        **sse_response(_CHUNK_EVENTS, "ChatCompletionChunk"),
        **errors(400, 401, 409, 413, 502, 503),
    },
)
async def chat_completions(body: ChatBody, request: Request, engine: EngineDep) -> Any:
    refuse_unsupported(body)
    question, history = split_messages(body.messages)
    question = engine.check_question(question, "messages")
    engine.check_k(body.k)
    llm = None
    if body.model.startswith(f"{MODEL_ID}:"):
        llm = engine.check_llm(body.model.split(":", 1)[1], param="model")
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
        # The model stops where the client asked; OutputLimit cuts the whole reply (sources too).
        "generation": Generation(
            max_tokens=body.token_limit(),
            temperature=body.temperature,
            stop=tuple(body.stop_list()),
        ),
    }
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    limit = OutputLimit(body.stop_list(), body.token_limit(), engine.settings.tokenizer)
    base_url = str(request.base_url)
    if body.stream:
        options = body.stream_options
        events = chat_events(
            qa,
            question,
            kwargs,
            completion_id=completion_id,
            model=body.model,
            include_usage=bool(options and options.include_usage),
            limit=limit,
            base_url=base_url,
            scrub=engine.scrub,
        )
        return EventSourceResponse(events)
    answer = await qa.aask(question, **kwargs)
    return chat_completion(answer, completion_id, body.model, limit, base_url)


def split_messages(messages: Sequence[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The last user message, and the (user, assistant) turns before it."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise ApiError(
            400, "messages: there is no user message to answer", param="messages", code="missing"
        )
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for m in messages[:last]:
        if m.role == "user":
            pending = m.text()
        elif m.role == "assistant" and pending is not None:
            # Our own earlier replies end in a sources list: not part of what was said.
            history.append((pending, SOURCES_TAIL.sub("", m.text())))
            pending = None
    return messages[last].text(), history


def _model_card(settings: Settings, allowed: list[str]) -> ModelCard:
    llm = public_llm(settings.llm)
    return ModelCard(
        id=MODEL_ID,
        owned_by=llm,
        metadata={
            "llm": llm,
            "allowed_llms": allowed,
            "retrieval_mode": settings.retrieval_mode,
            "top_k": settings.top_k,
            "version": __version__,
            "llm_override": f"send model '{MODEL_ID}:<llm spec>' (an allowed one) to answer "
            "with another llm",
        },
    )
