"""Answers as server-sent events. Every stream iterates ``qa.astream`` with its own
CancelToken, cancelled however the stream ends: when a client disconnects, sse_starlette
cancels or closes our generator, the token is cancelled, and the worker's next text piece
raises AnswerCancelled, so the LLM stops writing for nobody."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sse_starlette import ServerSentEvent

from rag_papers import Answer, CancelToken
from rag_papers.server.errors import classify, error_body

if TYPE_CHECKING:
    from rag_papers import PaperQA

__all__ = ["answer_stream", "ask_events", "error_event"]

log = logging.getLogger(__name__)


@asynccontextmanager
async def answer_stream(
    qa: PaperQA, question: str, kwargs: dict[str, Any]
) -> AsyncIterator[AsyncIterator[str | Answer]]:
    """``qa.astream(question, cancel=token, **kwargs)``, with the token cancelled on exit.

    The explicit cancel matters: an event generator closed while suspended at its own
    ``yield`` does not close an inner async generator (that waits for garbage collection),
    and until then the LLM would go on generating.
    """
    token = CancelToken()
    items = qa.astream(question, cancel=token, **kwargs)
    try:
        yield items
    finally:
        token.cancel()  # a no-op once the answer is complete
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def error_event(exc: BaseException, scrub: Callable[[str], str]) -> ServerSentEvent:
    """An ``error`` event: once the headers are out, a failure can only be reported in-band
    (the one error shape; ``scrub`` takes the server's paths out of the message)."""
    error = classify(exc)
    if error.status >= 500 and error.type == "server_error":
        log.error("error while streaming", exc_info=exc)
    body = error_body(scrub(error.message), error.type, error.param, error.code)
    return ServerSentEvent(event="error", data=json.dumps(body))


async def ask_events(
    qa: PaperQA, question: str, kwargs: dict[str, Any], scrub: Callable[[str], str]
) -> AsyncIterator[ServerSentEvent]:
    """/v1/ask's stream: ``delta`` events ({"text"}), then ``answer`` (the Answer JSON), then
    ``done``; or an ``error`` event."""
    try:
        async with answer_stream(qa, question, kwargs) as items:
            async for item in items:
                if isinstance(item, Answer):
                    yield ServerSentEvent(event="answer", data=item.model_dump_json())
                else:
                    yield ServerSentEvent(event="delta", data=json.dumps({"text": item}))
    except Exception as exc:  # headers are sent already: report it as an event
        yield error_event(exc, scrub)
        return
    yield ServerSentEvent(event="done", data="{}")
