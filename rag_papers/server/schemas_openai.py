"""The OpenAI-compatible bodies: the chat request (with the parameters this server honours,
and the ones it refuses by name) and the typed chat.completion / chunk / model responses.

Honoured: ``max_tokens`` / ``max_completion_tokens``, ``temperature`` and ``stop`` (passed to
the LLM, and the first two also cut the reply the client gets, sources included;
finish_reason ``length`` / ``stop``), ``stream`` and ``stream_options``. Accepted and not
applied: ``top_p``, penalties, ``seed``, ``user``. Refused with a 400 naming the parameter: anything
that asks for more than one text reply (``n`` > 1, tools and functions, a JSON
``response_format``, ``logprobs``, ``logit_bias``, audio, predicted outputs).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rag_papers import Answer, Citation, Mode
from rag_papers.server.errors import ApiError
from rag_papers.server.schemas import MODEL_ID, FilterBody, StrictK

__all__ = [
    "Annotation",
    "AssistantMessage",
    "ChatBody",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "ChunkDelta",
    "CompletionUsage",
    "ContentPart",
    "ModelCard",
    "ModelList",
    "StreamOptions",
    "UrlCitation",
    "refuse_unsupported",
]

_TEXT_LIMIT = 100_000
FinishReason = Literal["stop", "length"]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=100)
    text: str | None = Field(default=None, max_length=_TEXT_LIMIT)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, refusal...: not used

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: (
        Annotated[str, Field(max_length=_TEXT_LIMIT)]
        | Annotated[list[ContentPart], Field(max_length=100)]
        | None
    ) = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatBody(BaseModel):
    """OpenAI's chat request. Unknown fields are accepted and ignored (clients send new ones
    before servers know them); the ones below are checked."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    model: str = Field(
        default=MODEL_ID,
        max_length=500,
        description=f"Echoed. '{MODEL_ID}:<llm spec>' answers with that llm (an allowed one).",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] | None = Field(
        default=None, description="The reply is cut to this many tokens (finish_reason length)."
    )
    max_completion_tokens: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] | None = None
    stop: (
        Annotated[str, Field(min_length=1, max_length=500)]
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=500)]], Field(max_length=4)]
        | None
    ) = Field(default=None, description="The reply ends before the first of these strings.")
    temperature: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="LLM sampling temperature (default: settings).",
    )
    top_p: float | None = Field(default=None, ge=0, le=1, description="Accepted, not applied.")
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    user: str | None = Field(default=None, max_length=500)
    # Refused unless left at their defaults (see refuse_unsupported).
    n: Annotated[int, Field(strict=True, ge=1, le=128)] | None = Field(
        default=None, description="Only 1."
    )
    tools: list[Any] | None = Field(default=None, description="Not supported.")
    tool_choice: Any = Field(default=None, description="Not supported (only 'none').")
    functions: list[Any] | None = Field(default=None, description="Not supported.")
    function_call: Any = Field(default=None, description="Not supported (only 'none').")
    response_format: dict[str, Any] | None = Field(default=None, description="Only text.")
    logprobs: bool | None = Field(default=None, description="Not supported.")
    top_logprobs: int | None = Field(default=None, description="Not supported.")
    logit_bias: dict[str, Any] | None = Field(default=None, description="Not supported.")
    audio: Any = Field(default=None, description="Not supported.")
    modalities: list[str] | None = Field(default=None, description="Only ['text'].")
    prediction: Any = Field(default=None, description="Not supported.")
    # rag_papers extensions (send them with the SDK's extra_body)
    k: StrictK | None = None
    mode: Mode | None = None
    filters: FilterBody | None = None

    def token_limit(self) -> int | None:
        given = [x for x in (self.max_tokens, self.max_completion_tokens) if x is not None]
        return min(given) if given else None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def _unsupported(body: ChatBody) -> tuple[str, str] | None:
    """(param, why) for the first parameter this server cannot honour, else None."""
    if body.n is not None and body.n != 1:
        return "n", "only one choice is generated (n=1)"
    for name in ("tools", "functions"):
        if getattr(body, name):
            return name, "tool and function calling are not supported"
    for name in ("tool_choice", "function_call"):
        if getattr(body, name) not in (None, "none"):
            return name, "tool and function calling are not supported"
    if body.response_format and body.response_format.get("type") != "text":
        return "response_format", "only {'type': 'text'} is supported"
    if body.logprobs or body.top_logprobs is not None:
        return ("logprobs" if body.logprobs else "top_logprobs"), "logprobs are not supported"
    if body.logit_bias:
        return "logit_bias", "logit_bias is not supported"
    if body.audio is not None or (body.modalities and set(body.modalities) != {"text"}):
        return ("audio" if body.audio is not None else "modalities"), "only text is supported"
    if body.prediction is not None:
        return "prediction", "predicted outputs are not supported"
    for i, message in enumerate(body.messages):
        if isinstance(message.content, list):
            kinds = {p.type for p in message.content} - {"text"}
            if kinds:
                return f"messages.{i}.content", f"only text parts (got {sorted(kinds)[0]!r})"
    return None


def refuse_unsupported(body: ChatBody) -> None:
    """A 400 naming the parameter (``param``) the server would otherwise silently ignore."""
    found = _unsupported(body)
    if found is not None:
        param, why = found
        raise ApiError(400, f"{param}: {why}", param=param, code="unsupported_parameter")


# --- responses ----------------------------------------------------------------------------
class UrlCitation(BaseModel):
    url: str
    title: str
    start_index: int = Field(description="Where the [n] marker starts in the content.")
    end_index: int = Field(description="Just past the marker's closing bracket.")


class Annotation(BaseModel):
    type: Literal["url_citation"] = "url_citation"
    url_citation: UrlCitation


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None
    annotations: list[Annotation] = Field(default_factory=list)


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    citations: list[Citation] = Field(description="The papers the answer cites.")
    rag_papers: Answer = Field(description="The full answer: sources, support, quotes, timings.")


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    annotations: list[Annotation] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a streamed reply; the last choice-bearing chunk carries
    ``citations`` and ``rag_papers``, and with ``include_usage`` a final chunk the usage."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    citations: list[Citation] | None = None
    rag_papers: Answer | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
