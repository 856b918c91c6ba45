"""Embedding backends: the offline model, the OpenAI backend (no network), llama-index adapter."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import numpy as np
import pytest

from rag_papers.store.embeddings import (
    Embedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    as_llama_index_embedding,
)


def test_minilm_vectors_are_normalised_and_order_independent(
    shared_embedder: MiniLMEmbedder,
) -> None:
    texts = [
        "Retrieval-augmented generation with self-reflection.",
        "A car dataset for aerodynamic drag prediction with 4000 meshes and " + "long text " * 80,
        "Diffusion models.",
    ]
    vecs = shared_embedder.embed_documents(texts)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Batching sorts by length internally; results must come back in input order.
    single = np.stack([shared_embedder.embed_query(t) for t in texts])
    assert np.allclose(vecs, single, atol=1e-4)
    assert isinstance(shared_embedder, Embedder)


def test_minilm_semantics(shared_embedder: MiniLMEmbedder) -> None:
    q = shared_embedder.embed_query("How fast is a car's drag estimated?")
    docs = shared_embedder.embed_documents(
        ["Fast drag estimation for vehicles from 3D meshes.", "Protein folding with deep nets."]
    )
    sims = docs @ q
    assert sims[0] > sims[1] + 0.2


def test_truncation_at_256_tokens(shared_embedder: MiniLMEmbedder) -> None:
    base = "word " * 300
    a = shared_embedder.embed_query(base)
    b = shared_embedder.embed_query(base + "completely different ending about volcanoes " * 20)
    assert np.allclose(a, b, atol=1e-5)  # everything past the window is cut


def test_openai_embedder_without_network() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i + 1), 0.0, 1.0]}
            for i in range(len(body["input"]))
        ]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            },
        )

    from openai import OpenAI

    client = OpenAI(
        api_key="sk-test",
        base_url="http://embeddings.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    emb = OpenAIEmbedder(model="text-embedding-3-small", client=client, batch_size=2)
    vecs = emb.embed_documents(["a", "b", "c"])
    assert [b["model"] for b in seen] == ["text-embedding-3-small"] * 2  # batched by 2
    assert vecs.shape == (3, 3)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
    assert emb.model_id == "openai:text-embedding-3-small"


def test_llama_index_adapter(shared_embedder: MiniLMEmbedder) -> None:
    adapter = as_llama_index_embedding(shared_embedder)
    q = adapter.get_query_embedding("self-reflective retrieval")
    docs = adapter.get_text_embedding_batch(["self-reflective retrieval", "car aerodynamics"])
    assert len(q) == 384 and len(docs) == 2
    assert np.dot(q, docs[0]) > np.dot(q, docs[1])


def test_openai_embeddings_send_bounded_concurrent_requests_in_input_order() -> None:
    """An embeddings server (TEI, vLLM, Ollama...) gets up to embed_concurrency requests at
    once; the vectors are exactly those of one request after another."""
    from servers import CannedServer

    from rag_papers.core.settings import load_settings
    from rag_papers.store.embeddings import OpenAIEmbedder, make_embedder

    texts = [f"abstract number {i}" for i in range(10)]
    with CannedServer() as server:
        server.embed_delay = 0.3  # long enough for requests to overlap

        def embedder(concurrency: int) -> OpenAIEmbedder:
            return OpenAIEmbedder(
                model="canned-embed",
                api_key="unused",
                base_url=server.url,
                batch_size=2,
                max_retries=0,
                concurrency=concurrency,
            )

        one_stream = embedder(1).embed_documents(texts)
        assert (server.embed_requests, server.max_in_flight) == (5, 1)
        server.max_in_flight = 0
        concurrent = embedder(4).embed_documents(texts)
        assert server.embed_requests == 10
        assert 2 <= server.max_in_flight <= 4  # overlapped, and never past the bound
    assert concurrent.tobytes() == one_stream.tobytes()
    settings = load_settings(
        embed_backend="openai", openai_base_url=server.url, embed_concurrency=7
    )
    assert make_embedder(settings).concurrency == 7  # type: ignore[attr-defined]


def _flaky_server(statuses: list[int]) -> Any:
    """A CannedServer whose /v1/embeddings answers the scripted HTTP statuses first (with a
    1 ms Retry-After, so the SDK's backoff does not slow the test), then vectors."""
    from servers import CannedServer

    class Flaky(CannedServer):
        def _embeddings(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
            with self._lock:
                self.embed_requests += 1
                status = statuses.pop(0) if statuses else 200
            if status == 200:
                self.embed_requests -= 1  # counted again by the real handler
                super()._embeddings(h, body)
                return
            payload = json.dumps(
                {"error": {"message": f"scripted {status}", "type": "server_error"}}
            ).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.send_header("retry-after-ms", "1")
            h.end_headers()
            h.wfile.write(payload)

    return Flaky()


def test_openai_embeddings_retry_429_and_5xx_a_bounded_number_of_times() -> None:
    from rag_papers.store.embeddings import EmbeddingError

    texts = ["one", "two", "three"]
    with _flaky_server([429, 503]) as server:
        emb = OpenAIEmbedder(model="m", base_url=server.url, batch_size=8, max_retries=2)
        vectors = emb.embed_documents(texts)
        assert server.embed_requests == 3  # two refusals, then the answer
    with _flaky_server([]) as clean:
        expected = OpenAIEmbedder(model="m", base_url=clean.url).embed_documents(texts)
    assert vectors.tobytes() == expected.tobytes()

    with _flaky_server([500, 502, 503, 504]) as server:
        emb = OpenAIEmbedder(
            model="m", base_url=server.url, batch_size=2, max_retries=2, concurrency=1
        )
        with pytest.raises(EmbeddingError) as caught:
            emb.embed_documents(texts)
        # The first try and max_retries=2 more; no fourth, and not the second batch.
        assert server.embed_requests == 3
    message = str(caught.value)
    assert "HTTP 503" in message and "texts 1-2 of 3" in message and server.url in message
    assert "after 2 retries" in message


def test_openai_embeddings_do_not_retry_a_bad_request() -> None:
    from rag_papers.core.errors import RagPapersError
    from rag_papers.store.embeddings import EmbeddingError

    texts = [f"text {i}" for i in range(8)]
    with _flaky_server([400]) as server:
        emb = OpenAIEmbedder(
            model="m", base_url=server.url, batch_size=2, max_retries=3, concurrency=1
        )
        with pytest.raises(EmbeddingError) as caught:
            emb.embed_documents(texts)
        # Not retried, and no later batch sent once one failed.
        assert server.embed_requests == 1
    assert isinstance(caught.value, RagPapersError)
    assert "HTTP 400" in str(caught.value) and "retries" not in str(caught.value)


def test_openai_embeddings_stop_sending_after_a_failed_batch() -> None:
    """With requests in flight, a refused batch cancels the queued ones: an ingest that fails
    does not go on to send the rest of the corpus."""
    from rag_papers.store.embeddings import EmbeddingError

    texts = [f"text {i}" for i in range(80)]
    with _flaky_server([400]) as server:
        server.embed_delay = 0.1
        emb = OpenAIEmbedder(
            model="m", base_url=server.url, batch_size=2, max_retries=0, concurrency=2
        )
        with pytest.raises(EmbeddingError):
            emb.embed_documents(texts)
        assert server.embed_requests < 40  # of 40 batches
