"""An Answer as OpenAI objects: one chat.completion, or a stream of chat.completion.chunk
events. The content is the answer text and a sources list (``[n] Title (year) id``, or the
closest papers on abstain), cut by the request's ``stop`` and ``max_tokens``
(``limits.OutputLimit``); each cited ``[n]`` is also a ``url_citation`` annotation, and the
full Answer rides along as ``rag_papers`` (with ``citations``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

from sse_starlette import ServerSentEvent

from rag_papers import Answer
from rag_papers.server.limits import OutputLimit, url_citations
from rag_papers.server.schemas_openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    ChunkDelta,
    CompletionUsage,
)
from rag_papers.server.sse import answer_stream, error_event

if TYPE_CHECKING:
    from rag_papers import PaperQA

__all__ = ["SOURCES_TAIL", "chat_completion", "chat_events", "sources_block"]


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
SOURCES_TAIL = re.compile(r"\n\n(?:Sources|Closest papers):\n.*\Z", re.DOTALL)


def _tail(answer: Answer) -> str:
    block = sources_block(answer)
    return f"\n\n{block}" if block else ""


def _usage(answer: Answer) -> CompletionUsage:
    u = answer.usage
    return CompletionUsage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
    )


def _finish(limit: OutputLimit, answer: Answer) -> Literal["stop", "length"]:
    # A limit the client set, else the LLM's own: it stopped at the engine's max_tokens.
    return limit.finish or ("length" if answer.truncated else "stop")


def chat_completion(
    answer: Answer, completion_id: str, model: str, limit: OutputLimit, base_url: str
) -> ChatCompletion:
    """An OpenAI chat.completion, with the Answer and its citations as extra fields."""
    content = limit.feed(answer.text + _tail(answer)) + limit.flush()
    message = AssistantMessage(
        content=content, annotations=url_citations(content, len(answer.text), answer, base_url)
    )
    return ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=model,
        choices=[Choice(message=message, finish_reason=_finish(limit, answer))],
        usage=_usage(answer),
        citations=answer.citations,
        rag_papers=answer,
    )


async def chat_events(
    qa: PaperQA,
    question: str,
    kwargs: dict[str, Any],
    *,
    completion_id: str,
    model: str,
    include_usage: bool,
    limit: OutputLimit,
    base_url: str,
    scrub: Callable[[str], str],
) -> AsyncIterator[ServerSentEvent]:
    """chat.completion.chunk events: role, content deltas, the sources, the finish (with
    annotations, citations and the Answer), usage when asked, [DONE].

    Past a stop string or max_tokens nothing more is sent, but the answer runs to its end
    (the engine has no per-request limit yet), so the last chunk still carries the Answer.
    """
    created = int(time.time())

    def event(choices: list[ChunkChoice], **extra: Any) -> ServerSentEvent:
        chunk = ChatCompletionChunk(
            id=completion_id, created=created, model=model, choices=choices, **extra
        )
        data = chunk.model_dump(mode="json")
        for key in ("usage", "citations", "rag_papers"):  # only on the chunks that carry them
            if data[key] is None:
                del data[key]
        for choice in data["choices"]:  # a delta holds only what it changes
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        return ServerSentEvent(data=json.dumps(data))

    def delta(piece: ChunkDelta, finish: Literal["stop", "length"] | None = None) -> ChunkChoice:
        return ChunkChoice(delta=piece, finish_reason=finish)

    yield event([delta(ChunkDelta(role="assistant", content=""))])
    answer: Answer | None = None
    body_len = 0  # the answer text fed so far: annotations stop where the sources begin
    try:
        async with answer_stream(qa, question, kwargs) as items:
            async for item in items:
                if isinstance(item, Answer):
                    answer = item
                elif item:
                    body_len += len(item)
                    if piece := limit.feed(item):
                        yield event([delta(ChunkDelta(content=piece))])
    except Exception as exc:  # headers are sent already: report it as an event
        yield error_event(exc, scrub)
        return
    assert answer is not None  # astream always ends with the Answer
    if piece := limit.feed(_tail(answer)) + limit.flush():
        yield event([delta(ChunkDelta(content=piece))])
    notes = url_citations(limit.emitted, body_len, answer, base_url)
    yield event(
        [delta(ChunkDelta(annotations=notes or None), _finish(limit, answer))],
        citations=answer.citations,
        rag_papers=answer,
    )
    if include_usage:
        yield event([], usage=_usage(answer))
    yield ServerSentEvent(data="[DONE]")
