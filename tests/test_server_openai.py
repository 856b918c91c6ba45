"""The OpenAI-compatible endpoint held to what OpenAI clients expect: errors the official SDK
raises with ``.param``, parameters it cannot honour refused by name, ``stop`` and
``max_tokens`` honoured, citations as ``url_citation`` annotations, typed schemas, and
llama-index's ``OpenAILike`` as a client. A real uvicorn, the sample index, and a scripted
OpenAI-compatible LLM (CannedServer) for replies whose text the tests know."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from servers import CannedServer, Reply, isolate_user_dirs
from test_server import SELF_RAG, SELF_RAG_ID, LiveServer, error_of, index_copy, sse_events

from rag_papers import Answer, PaperQA, Settings
from rag_papers.server import MODEL_ID, create_app
from rag_papers.server.limits import MARKER_PATTERN, OutputLimit, expand_marker

CANNED = "openai:canned-model"
LLM_MODEL = f"{MODEL_ID}:{CANNED}"
REPLY = (
    "Self-RAG trains one language model to retrieve passages on demand and to critique its "
    "own output with reflection tokens [1]. STOP It improves factuality and citation "
    "accuracy over retrieval-augmented baselines [1, 2]."
)


class _SwitchQA(PaperQA):
    """A PaperQA whose answers can be marked as cut off by the LLM's token limit."""

    force_truncated = False
    llm_server: CannedServer

    def ask(self, question: str, **kwargs: Any) -> Answer:
        answer = super().ask(question, **kwargs)
        if self.force_truncated:
            answer = answer.model_copy(update={"truncated": True})
        return answer


@pytest.fixture(scope="module")
def server(
    _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, _SwitchQA]]:
    """Extractive by default; a request may pick the canned LLM (it is in allowed_llms)."""
    home = tmp_path_factory.mktemp("openai-home")
    with pytest.MonkeyPatch.context() as mp, CannedServer() as canned:
        isolate_user_dirs(mp, home)
        canned.default = Reply(text=REPLY, piece=3)  # markers and STOP split across deltas
        settings = index_copy(
            _sample_index_master,
            tmp_path_factory.mktemp("openai"),
            allowed_llms=[CANNED],
            openai_base_url=canned.url,
            llm_max_retries=0,
            answer_style="free",  # the canned reply is prose with [n] markers
        )
        qa = _SwitchQA(settings)
        qa.llm_server = canned  # what the LLM was sent
        with qa, LiveServer(create_app(settings, qa=qa)) as live:
            yield live.url, qa


@pytest.fixture
def url(server: tuple[str, _SwitchQA]) -> str:
    return server[0]


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def _ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", LLM_MODEL)
    kwargs.setdefault("messages", [{"role": "user", "content": SELF_RAG}])
    return client.chat.completions.create(**kwargs)


def _stream(client: openai.OpenAI, **kwargs: Any) -> tuple[str, list[Any]]:
    chunks = list(_ask(client, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# --- errors the SDK understands ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": SELF_RAG},
                            {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                        ],
                    }
                ]
            },
            "messages.0.content",
        ),
    ],
)
def test_unsupported_parameters_are_refused_by_name(
    client: openai.OpenAI, kwargs: dict[str, Any], param: str
) -> None:
    """Silently ignoring n=2 or tools would hand the client something it did not ask for."""
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, model=MODEL_ID, **kwargs)
    assert info.value.status_code == 400
    assert info.value.param == param and info.value.code == "unsupported_parameter"
    assert param in info.value.message


def test_parameters_at_their_defaults_are_accepted(client: openai.OpenAI) -> None:
    response = _ask(
        client,
        model=MODEL_ID,
        n=1,
        response_format={"type": "text"},
        tool_choice="none",
        temperature=0.2,
        top_p=0.5,
        seed=7,
        user="someone",
        presence_penalty=0.1,
    )
    assert response.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": []}, "messages"),
        ({"extra_body": {"k": True}}, "k"),
        ({"extra_body": {"filters": {"year_min": 2**63}}}, "filters.year_min"),
    ],
)
def test_bad_values_are_bad_request_errors_naming_the_param(
    client: openai.OpenAI, kwargs: dict[str, Any], param: str
) -> None:
    """400 in OpenAI's error shape (FastAPI's 422 made the SDK raise UnprocessableEntityError
    with no param)."""
    with pytest.raises(openai.BadRequestError) as info:
        _ask(client, model=MODEL_ID, **kwargs)
    assert info.value.param == param, info.value.body
    assert info.value.type == "invalid_request_error" and info.value.code


def test_the_llm_allowlist(url: str, client: openai.OpenAI) -> None:
    """A client may name the server's llm, 'extractive' or an allowed_llms spec; nothing else
    (each spec builds and keeps a backend: any model file, any endpoint)."""
    answer = _ask(client).model_extra["rag_papers"]
    assert answer["mode"] == "llm" and answer["model"] == "canned-model"
    for spec in ("openai:other-model", "gguf:/etc/passwd", "llamacpp:/tmp/x.gguf"):
        with pytest.raises(openai.BadRequestError) as info:
            _ask(client, model=f"{MODEL_ID}:{spec}")
        assert info.value.param == "model" and info.value.code == "model_not_allowed"
        error = error_of(httpx.post(f"{url}/v1/ask", json={"question": SELF_RAG, "llm": spec}), 400)
        assert error["param"] == "llm" and CANNED in error["message"]
    r = httpx.post(f"{url}/v1/ask", json={"question": SELF_RAG, "llm": CANNED}, timeout=120)
    assert r.status_code == 200 and r.json()["mode"] == "llm"
    card = client.models.retrieve(MODEL_ID)
    assert CANNED in (card.model_extra or {})["metadata"]["allowed_llms"]


# --- stop and max_tokens ----------------------------------------------------------------------
def test_stop_ends_the_reply_before_the_stop_string(client: openai.OpenAI) -> None:
    full = _ask(client).choices[0].message.content
    assert "STOP" in full
    response = _ask(client, stop=["never-there", "STOP"])
    content = response.choices[0].message.content
    assert content == full.split("STOP")[0] and response.choices[0].finish_reason == "stop"
    # Streamed in 3-character deltas, 'STOP' arrives split: none of it reaches the client.
    text, chunks = _stream(client, stop="STOP")
    assert "STOP" not in text and "ST" not in text[-3:]
    assert " ".join(text.split()) == " ".join(content.split())
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"


def test_max_tokens_cuts_the_reply_with_finish_reason_length(client: openai.OpenAI) -> None:
    full = _ask(client).choices[0].message.content
    for key in ("max_tokens", "max_completion_tokens"):
        response = _ask(client, **{key: 7})
        content = response.choices[0].message.content
        assert response.choices[0].finish_reason == "length"
        assert full.startswith(content) and 0 < len(content) < len(full)
        assert count_tokens(content) <= 7
    text, chunks = _stream(client, max_tokens=7)
    assert full.startswith(text) and count_tokens(text) <= 7
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    # The Answer still rides along (the engine ran to its end).
    assert Answer.model_validate((chunks[-1].model_extra or {})["rag_papers"]).citations


def test_generation_options_reach_the_llm(
    server: tuple[str, _SwitchQA], client: openai.OpenAI
) -> None:
    """max_tokens, temperature and stop are the model's too, not only a cut of the reply."""
    _, qa = server
    _ask(client, max_tokens=50, temperature=0.3, stop=["STOP"])
    sent = qa.llm_server.requests[-1]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (50, 0.3, ["STOP"])
    _ask(client)
    assert "stop" not in qa.llm_server.requests[-1]


def test_an_answer_cut_off_by_the_llm_finishes_with_length(
    server: tuple[str, _SwitchQA], client: openai.OpenAI
) -> None:
    url, qa = server
    qa.force_truncated = True
    try:
        assert _ask(client, model=MODEL_ID).choices[0].finish_reason == "length"
        _, chunks = _stream(client, model=MODEL_ID)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        r = httpx.post(f"{url}/v1/ask", json={"question": SELF_RAG}, timeout=60)
        assert r.json()["truncated"] is True
    finally:
        qa.force_truncated = False
    r = httpx.post(f"{url}/v1/ask", json={"question": SELF_RAG}, timeout=60)
    assert r.json()["truncated"] is False


# --- citations as annotations, and the full answer -------------------------------------------
def _check_annotations(content: str, notes: list[Any], answer: Answer) -> None:
    by_marker = {c.marker: c for c in answer.citations}
    body = content.split("\n\nSources:")[0]
    expected = sum(
        1
        for m in MARKER_PATTERN.finditer(body)
        for n in expand_marker(m.group(1))
        if n in by_marker
    )
    assert notes and len(notes) == expected
    titles = {c.title for c in answer.citations}
    for note in notes:
        assert note.type == "url_citation"
        span = content[note.url_citation.start_index : note.url_citation.end_index]
        assert MARKER_PATTERN.fullmatch(span), span
        assert note.url_citation.title in titles and note.url_citation.url


def test_citations_are_url_citation_annotations(url: str, client: openai.OpenAI) -> None:
    response = _ask(client)
    message = response.choices[0].message
    answer = Answer.model_validate((response.model_extra or {})["rag_papers"])
    _check_annotations(message.content or "", list(message.annotations or []), answer)
    # A paper without a URL points at its record on this server, which answers.
    for note in message.annotations or []:
        if note.url_citation.url.startswith(url):
            assert httpx.get(note.url_citation.url).status_code == 200
    text, chunks = _stream(client)
    final = [c for c in chunks if c.choices][-1]
    notes = (final.choices[0].delta.model_extra or {})["annotations"]
    streamed = [openai.types.chat.chat_completion_message.Annotation(**n) for n in notes]
    _check_annotations(text, streamed, answer)
    extractive = _ask(client, model=MODEL_ID)  # the extractive answer cites too
    answer = Answer.model_validate((extractive.model_extra or {})["rag_papers"])
    assert SELF_RAG_ID in answer.cited_ids()
    content = extractive.choices[0].message.content or ""
    _check_annotations(content, list(extractive.choices[0].message.annotations or []), answer)


def test_answers_carry_grounding_fields_everywhere(url: str, client: openai.OpenAI) -> None:
    """grounded, dropped_claims, truncated and each sentence's quotes reach every client."""
    wanted = {"grounded", "dropped_claims", "truncated", "sentences"}
    body = httpx.post(f"{url}/v1/ask", json={"question": SELF_RAG}, timeout=60).json()
    chat = _ask(client, model=MODEL_ID).model_extra["rag_papers"]
    with httpx.stream(
        "POST", f"{url}/v1/ask", json={"question": SELF_RAG, "stream": True}, timeout=60
    ) as r:
        streamed = json.loads(next(d for kind, d in sse_events(r) if kind == "answer"))
    for answer in (body, chat, streamed):
        assert wanted <= set(answer)
        assert answer["sentences"] and all("quotes" in s for s in answer["sentences"])


# --- the schema -------------------------------------------------------------------------------
def test_openapi_declares_typed_responses(url: str) -> None:
    schema = httpx.get(f"{url}/openapi.json").json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert chat["200"]["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletion")
    assert "text/event-stream" in chat["200"]["content"]
    ask = schema["paths"]["/v1/ask"]["post"]["responses"]
    assert ask["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Answer")
    assert "text/event-stream" in ask["200"]["content"]
    components = schema["components"]["schemas"]
    assert {"ChatCompletion", "ChatCompletionChunk", "ErrorResponse", "ModelList"} <= set(
        components
    )
    assert {"message", "type", "param", "code"} <= set(components["ErrorBody"]["properties"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (path, method)  # bad requests are 400
            ok = responses.get("200", {}).get("content", {}).get("application/json", {})
            assert ok.get("schema", {}).get("$ref"), f"{method} {path}: untyped response"
            if path.startswith("/v1/"):
                assert "401" in responses, (path, method)
    assert {"401", "413", "429"} <= set(schema["paths"]["/v1/ingest"]["post"]["responses"])
    k = components["AskBody"]["properties"]["k"]["anyOf"][0]
    assert k["maximum"] == Settings().max_k


# --- llama-index as a client --------------------------------------------------------------------
def test_llama_index_openai_like_talks_to_the_server(url: str) -> None:
    openai_like = pytest.importorskip("llama_index.llms.openai_like")
    from llama_index.core.llms import ChatMessage

    llm = openai_like.OpenAILike(
        model=LLM_MODEL,
        api_base=f"{url}/v1",
        api_key="unused",
        is_chat_model=True,
        max_retries=0,
        timeout=120,
    )
    reply = llm.chat([ChatMessage(role="user", content=SELF_RAG)])
    content = reply.message.content or ""
    assert "[1]" in content and "\n\nSources:\n[1] " in content
    streamed = "".join(
        r.delta or "" for r in llm.stream_chat([ChatMessage(role="user", content=SELF_RAG)])
    )
    assert " ".join(streamed.split()) == " ".join(content.split())
    assert llm.complete(SELF_RAG).text.startswith(content.split(" [1]")[0])
    # Its max_tokens reaches the server and is honoured.
    short = openai_like.OpenAILike(
        model=LLM_MODEL, api_base=f"{url}/v1", api_key="unused", is_chat_model=True, max_tokens=5
    )
    cut = short.chat([ChatMessage(role="user", content=SELF_RAG)])
    assert content.startswith(cut.message.content or "") and len(cut.message.content or "") < 40


# --- the pieces, without a server ---------------------------------------------------------------
def test_marker_pattern_is_the_engines() -> None:
    from rag_papers.answering.citations import expand_markers
    from rag_papers.answering.contract import CITATION_PATTERN

    assert MARKER_PATTERN.pattern == CITATION_PATTERN.pattern
    for inner in ("1", "2, 3", "1-3", "4 – 6", "1; 2", "1-40", "3-1"):
        assert expand_marker(inner) == expand_markers(inner), inner


def count_tokens(text: str) -> int:
    from rag_papers.core.text import count_tokens  # also points tiktoken at its bundled files

    return count_tokens(text)


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000])
def test_output_limit_cuts_the_same_however_the_text_arrives(piece: int) -> None:
    count_tokens("")  # tiktoken's files: the engine's bundled copy (a server opened its index)
    text = "Alpha beta [1]. Gamma STOP delta [2]. " * 3
    for stop, max_tokens, finish in (
        (["STOP"], None, "stop"),
        ([], 6, "length"),
        (["STOP"], 3, "length"),
        (["absent"], None, None),
    ):
        whole = OutputLimit(stop, max_tokens, "cl100k_base")
        expected = whole.feed(text) + whole.flush()
        limit = OutputLimit(stop, max_tokens, "cl100k_base")
        got = "".join(limit.feed(text[i : i + piece]) for i in range(0, len(text), piece))
        got += limit.flush()
        assert limit.finish == whole.finish == finish
        assert got == expected  # the cut does not depend on how the text was split
        if finish == "stop":
            assert got == text.split("STOP")[0]
        elif finish == "length":
            assert text.startswith(got) and count_tokens(got) <= (max_tokens or 0)
        else:
            assert got == text
