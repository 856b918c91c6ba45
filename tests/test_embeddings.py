"""Embedding backends: the offline model, the OpenAI backend (no network), llama-index adapter."""

from __future__ import annotations

import json

import httpx
import numpy as np

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
