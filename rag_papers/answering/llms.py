"""Answer backends behind one small protocol: OpenAI / OpenAI-compatible servers, local GGUF.

The 'extractive' mode has no backend: the engine answers from the abstracts itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag_papers.core.errors import RagPapersError
from rag_papers.core.specs import parse_llm_spec

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings

__all__ = [
    "Completion",
    "GGUFBackend",
    "Generation",
    "LLMBackend",
    "LLMError",
    "OpenAIBackend",
    "make_backend",
]

Message = dict[str, str]


class LLMError(RagPapersError, RuntimeError):
    """A backend that could not produce an answer; the message names the endpoint or file."""


@dataclass(slots=True)
class Completion:
    text: str
    prompt_tokens: int | None = None  # None: the backend did not report usage
    completion_tokens: int | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    """Per-request overrides of the settings' generation options (None: the setting)."""

    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()

    def args(self, max_tokens: int, temperature: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "max_tokens": self.max_tokens or max_tokens,
            "temperature": temperature if self.temperature is None else self.temperature,
        }
        if self.stop:
            out["stop"] = list(self.stop)
        return out


class LLMBackend(Protocol):
    model_id: str
    context_window: int
    # answer_style 'auto' picks grounded answers for this backend (small or unknown models).
    prefers_grounded: bool

    def complete(
        self,
        messages: list[Message],
        *,
        on_delta: Callable[[str], None] | None = None,
        schema: dict[str, Any] | None = None,
        generation: Generation | None = None,
    ) -> Completion:
        """Generate; when ``on_delta`` is given, stream text pieces to it as they arrive.
        With ``schema``, ask for JSON that matches it (as far as the backend can);
        ``generation`` overrides max_tokens, temperature and stop for this request."""
        ...


# How to ask an OpenAI-compatible server for JSON matching a schema, most standard first:
# OpenAI, vLLM, llama.cpp's llama-server and Ollama take 'json_schema'; llama-cpp-python's
# server takes 'json_object' with a 'schema'; anything else gets a plain request and the
# tolerant parser.
def _json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "grounded_answer", "schema": schema, "strict": True},
    }


def _json_object_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_object", "schema": schema}


_SCHEMA_FORMATS: tuple[Callable[[dict[str, Any]], dict[str, Any]] | None, ...] = (
    _json_schema_format,
    _json_object_format,
    None,
)


class OpenAIBackend:
    """The official openai SDK: OpenAI itself or any OpenAI-compatible server (base_url).

    Retries with backoff on 429, 5xx, timeouts and connection errors are the SDK's own
    (max_retries, honouring Retry-After); after them we raise LLMError naming the endpoint.
    """

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        temperature: float = 0.0,
        max_tokens: int = 512,
        context_window: int | None = None,
        client: Any = None,
    ) -> None:
        from openai import OpenAI

        self.model_id = model
        self.prefers_grounded = base_url is not None
        self._format_choice = 0  # index into _SCHEMA_FORMATS: the first the server took
        self.base_url = base_url or "https://api.openai.com/v1"
        self.context_window = context_window or (128_000 if base_url is None else 4096)
        self.temperature = temperature
        self.max_tokens = max_tokens
        # Local servers accept any key; the SDK insists on one being set.
        key = api_key or ("sk-no-key" if base_url else None)
        if key is None:
            raise LLMError(
                f"llm=openai:{model} needs an API key: set OPENAI_API_KEY (or "
                "RAG_PAPERS_OPENAI_API_KEY), or point openai_base_url at a local server"
            )
        self._client = client or OpenAI(
            api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    def complete(
        self,
        messages: list[Message],
        *,
        on_delta: Callable[[str], None] | None = None,
        schema: dict[str, Any] | None = None,
        generation: Generation | None = None,
    ) -> Completion:
        import httpx
        import openai

        args = (generation or Generation()).args(self.max_tokens, self.temperature)
        try:
            if schema is not None:
                return self._structured(messages, schema, args)
            if on_delta is None:
                response = self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=self.model_id,
                    messages=messages,  # type: ignore[arg-type]
                    **args,
                )
                return _completion(response)
            return self._stream(messages, on_delta, args)
        except openai.APIStatusError as exc:
            raise LLMError(
                f"LLM server {self.base_url} answered HTTP {exc.status_code}: {_short(exc.message)}"
            ) from None
        except (openai.APITimeoutError, httpx.TimeoutException):
            # httpx's own: a stream that stalls past the timeout between two chunks.
            raise LLMError(f"LLM server {self.base_url} timed out") from None
        except openai.APIConnectionError as exc:
            raise LLMError(f"cannot reach the LLM server at {self.base_url}: {exc}") from None
        except httpx.HTTPError as exc:  # the connection broke while the answer streamed
            raise LLMError(
                f"the LLM server {self.base_url} broke off the answer: {exc or type(exc).__name__}"
            ) from None

    def _structured(
        self, messages: list[Message], schema: dict[str, Any], args: dict[str, Any]
    ) -> Completion:
        """A JSON reply, trying the schema formats in turn; the first the server accepts is
        remembered. An error naming response_format moves on to the next (400/422; 500
        from llama-cpp-python's server, whose validation errors are 500s)."""
        import openai

        while True:
            make = _SCHEMA_FORMATS[self._format_choice]
            extra = {"response_format": make(schema)} if make else {}
            try:
                response = self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=self.model_id, messages=messages, **args, **extra
                )
            except openai.APIStatusError as exc:
                said = f"{exc.message} {exc.body}"
                refused = exc.status_code in (400, 422, 500) and "response_format" in said
                if make is None or not refused:
                    raise
                self._format_choice += 1
                continue
            return _completion(response)

    def _stream(
        self, messages: list[Message], on_delta: Callable[[str], None], args: dict[str, Any]
    ) -> Completion:
        import httpx
        import openai

        stream = self._client.chat.completions.create(  # type: ignore[call-overload]
            model=self.model_id,
            messages=messages,
            **args,
            stream=True,
            stream_options={"include_usage": True},
        )
        # Closing the stream when the reader stops (a cancelled answer) hangs up on the
        # server, so it stops generating for nobody.
        with stream:
            try:
                return _collect(iter(stream), on_delta)
            except (openai.APITimeoutError, httpx.TimeoutException):
                raise LLMError(f"LLM server {self.base_url} timed out") from None
            except (openai.APIConnectionError, httpx.TransportError) as exc:
                # After the first chunk: the server went away mid-answer (openai 2 raises
                # httpx's error here, openai 3 wraps it).
                raise LLMError(
                    f"the LLM server {self.base_url} broke off the answer: "
                    f"{exc or type(exc).__name__}"
                ) from None


def _completion(response: Any) -> Completion:
    """A non-streamed chat.completion as a Completion."""
    choice = response.choices[0]
    usage = response.usage
    return Completion(
        text=choice.message.content or "",
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        finish_reason=choice.finish_reason,
    )


def _collect(chunks: Iterator[Any], on_delta: Callable[[str], None]) -> Completion:
    parts: list[str] = []
    out = Completion(text="")
    for chunk in chunks:
        usage = _get(chunk, "usage")
        if usage:
            out.prompt_tokens = _get(usage, "prompt_tokens")
            out.completion_tokens = _get(usage, "completion_tokens")
        for choice in _get(chunk, "choices") or []:
            delta = _get(_get(choice, "delta") or {}, "content")
            if delta:
                parts.append(delta)
                on_delta(delta)
            if _get(choice, "finish_reason"):
                out.finish_reason = _get(choice, "finish_reason")
    out.text = "".join(parts)
    return out


def _get(obj: Any, name: str) -> Any:
    # OpenAI SDK objects and llama-cpp-python dicts carry the same fields.
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class GGUFBackend:
    """A local GGUF model through llama-cpp-python (the 'local' extra); the chat template
    stored in the GGUF file is applied by llama-cpp-python."""

    def __init__(
        self,
        *,
        path: Path,
        context_window: int | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int = 0,
    ) -> None:
        if not path.is_file():
            raise LLMError(f"gguf model file not found: {path}")
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LLMError(
                "llm=gguf:... needs llama-cpp-python: pip install 'rag-papers[local]'"
            ) from None
        self.model_id = f"gguf:{path.name}"
        self.prefers_grounded = True
        self.context_window = context_window or 4096
        self.temperature = temperature
        self.max_tokens = max_tokens
        try:
            # Half the cores for prompt and generation alike: llama.cpp's batch default is
            # every core, which on a shared small machine is several times slower.
            threads = max(1, len(os.sched_getaffinity(0)) // 2)
            self._llm = Llama(
                model_path=str(path),
                n_ctx=self.context_window,
                seed=seed,
                verbose=False,
                n_threads=threads,
                n_threads_batch=threads,
            )
        except Exception as exc:  # llama.cpp reports bad files as ValueError/RuntimeError
            raise LLMError(f"cannot load gguf model {path}: {exc}") from None

    def complete(
        self,
        messages: list[Message],
        *,
        on_delta: Callable[[str], None] | None = None,
        schema: dict[str, Any] | None = None,
        generation: Generation | None = None,
    ) -> Completion:
        # llama.cpp turns the schema into a grammar: the reply cannot leave it.
        extra = {"response_format": _json_object_format(schema)} if schema else {}
        args = (generation or Generation()).args(self.max_tokens, self.temperature)
        result = self._llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            **args,
            stream=on_delta is not None and schema is None,
            **extra,  # type: ignore[arg-type]
        )
        if on_delta is not None and schema is None:
            out = _collect(iter(result), on_delta)  # type: ignore[arg-type]
            return out  # token counts are filled in by the engine with tiktoken
        choice = result["choices"][0]  # type: ignore[index]
        usage = result.get("usage") or {}  # type: ignore[union-attr]
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
        )


def make_backend(settings: Settings, spec: str | None = None) -> LLMBackend | None:
    """The backend for ``spec`` (default: settings.llm); None means extractive."""
    try:
        parsed = parse_llm_spec(spec or settings.llm)
    except ValueError as exc:
        raise LLMError(str(exc)) from None
    kind, rest = parsed.kind, parsed.value
    if kind == "extractive":
        return None
    if kind == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIBackend(
            model=rest,
            api_key=key,
            base_url=settings.openai_base_url,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            context_window=settings.context_window,
        )
    return GGUFBackend(
        path=Path(rest).expanduser(),
        context_window=settings.context_window,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
