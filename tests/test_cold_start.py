"""A cold ``ask`` is fast because embeddings are cached across processes (store/embed_cache.py,
store/cached_embedder.py): cached vectors are the model's own, byte for byte; an answer whose
texts are all cached never loads the model; the cache survives damage, concurrent writers
and its size cap. Speed itself is measured in benchmarks, never asserted here."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag_papers.answering.contract import Answer
from rag_papers.answering.support import _bare
from rag_papers.core.papers import Paper
from rag_papers.core.settings import Settings, load_settings
from rag_papers.engine.qa import PaperQA
from rag_papers.store.cached_embedder import (
    CachedEmbedder,
    cached_embedder,
    fill_sentences,
    model_key,
)
from rag_papers.store.embed_cache import EmbeddingCache, cache_path

SELF_RAG_Q = "What does Self-RAG add to retrieval-augmented generation?"
TEXTS = [
    "Self-RAG trains a single LM that retrieves passages on demand.",
    "We propose reflection tokens that let the model critique its own generations.",
    "Short.",
    "Experiments show gains on open-domain QA, reasoning and fact verification tasks, and on "
    "long-form generation with citations, across six benchmarks.",
]
# Modules a cold ask whose texts are all cached must not import (the model and its tokenizer
# among them).
HEAVY = ("onnxruntime", "tokenizers", "llama_index", "numba", "fastapi", "uvicorn", "ranx")


def _no_model() -> object:
    raise AssertionError("the model was loaded although every text was cached")


def _wrap(embedder: object, path: Path, **kw: object) -> CachedEmbedder:
    key = model_key(load_settings())
    assert key is not None
    return CachedEmbedder(
        lambda: embedder,  # type: ignore[arg-type,return-value]
        EmbeddingCache(path, **kw),  # type: ignore[arg-type]
        key,
        model_id="all-MiniLM-L6-v2-onnx-int8",
        dimension=384,
    )


# --- the premise: the offline model's vectors do not depend on their batch --------------------
def test_vectors_do_not_depend_on_the_batch(shared_embedder: object) -> None:
    together = shared_embedder.embed_documents(TEXTS)  # type: ignore[attr-defined]
    for i, text in enumerate(TEXTS):
        alone = shared_embedder.embed_documents([text])  # type: ignore[attr-defined]
        assert alone[0].tobytes() == together[i].tobytes()
    query = shared_embedder.embed_query(TEXTS[0])  # type: ignore[attr-defined]
    assert query.tobytes() == together[0].tobytes()
    # Nor on the process's thread count (another process may run with other settings).
    from rag_papers.store.embeddings import MiniLMEmbedder

    one_thread = MiniLMEmbedder(threads=1).embed_documents(TEXTS)
    assert one_thread.tobytes() == together.tobytes()


# --- hits are the model's vectors, and need no model ------------------------------------------
def test_cached_vectors_are_byte_identical_to_fresh(
    shared_embedder: object, tmp_path: Path
) -> None:
    fresh = shared_embedder.embed_documents(TEXTS)  # type: ignore[attr-defined]
    path = tmp_path / "cache" / "embeddings.sqlite"
    first = _wrap(shared_embedder, path)
    assert first.embed_documents(TEXTS[:2]).tobytes() == fresh[:2].tobytes()
    # Hits and misses mixed in one call keep their order.
    assert first.embed_documents(TEXTS).tobytes() == fresh.tobytes()
    assert (first.hits, first.misses) == (2, 4)
    # Another process: a new connection to the same file; no model at all.
    second = CachedEmbedder(
        _no_model,  # type: ignore[arg-type]
        EmbeddingCache(path),
        first.key,
        model_id=first.model_id,
        dimension=384,
    )
    again = second.embed_documents(list(reversed(TEXTS)))
    assert again.dtype == np.float32
    assert again[::-1].tobytes() == fresh.tobytes()
    assert second.embed_query(TEXTS[2]).tobytes() == fresh[2].tobytes()
    assert second.misses == 0


def test_another_model_key_does_not_hit(shared_embedder: object, tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    _wrap(shared_embedder, path).embed_documents(TEXTS)
    other = CachedEmbedder(
        lambda: shared_embedder,  # type: ignore[arg-type,return-value]
        EmbeddingCache(path),
        "another-model|max_tokens=256",
        model_id="x",
        dimension=384,
    )
    other.embed_documents(TEXTS)
    assert (other.hits, other.misses) == (0, len(TEXTS))
    assert model_key(load_settings(embed_max_tokens=128)) != model_key(load_settings())


def test_a_remote_embedder_is_not_cached() -> None:
    sentinel = object()
    settings = load_settings(embed_backend="openai")
    assert cached_embedder(settings, lambda: sentinel) is sentinel  # type: ignore[arg-type,return-value]


def test_fill_sentences_caches_titles_and_sentences(
    shared_embedder: object, tmp_path: Path
) -> None:
    paper = Paper(id="p1", title="A title", abstract=" ".join(TEXTS))
    cached = _wrap(shared_embedder, tmp_path / "embeddings.sqlite")
    assert fill_sentences(cached, [paper]) == 1 + len(TEXTS)
    assert fill_sentences(cached, [paper]) == 0  # all there now
    assert fill_sentences(shared_embedder, [paper]) == 0  # type: ignore[arg-type]


# --- the extractive answer and its check share vectors -----------------------------------------
def test_a_claim_without_its_marker_reads_as_its_source_sentence(shared_embedder: object) -> None:
    assert _bare("Self-RAG retrieves on demand [1].") == "Self-RAG retrieves on demand."
    assert _bare("Self-RAG [1]: it retrieves [1, 2] on demand [3].") == (
        "Self-RAG: it retrieves on demand."
    )
    # The tokenizer splits punctuation off either way: the relevance scores are unchanged.
    a, b = shared_embedder.embed_documents(["It retrieves on demand .", "It retrieves on demand."])  # type: ignore[attr-defined]
    assert a.tobytes() == b.tobytes()


def test_the_check_of_an_extractive_answer_embeds_nothing_new(sample_settings: Settings) -> None:
    qa = PaperQA(sample_settings)
    try:
        pipeline = qa.pipeline()
        retrieved = pipeline.retrieve(SELF_RAG_Q)
        assert pipeline.gate(retrieved) is None
        context = pipeline.context(retrieved)
        generated = pipeline.generate(retrieved, context)
        embedder = pipeline.embedder
        assert isinstance(embedder, CachedEmbedder)
        before = embedder.misses
        answer = Answer(question=SELF_RAG_Q, text="", mode="extractive", model="extractive")
        pipeline.check(answer, generated, context, retrieved.vector)
        assert answer.claims >= 2 and answer.supported == answer.claims
        assert embedder.misses == before  # the quoted sentences' vectors were reused
    finally:
        qa.close()


# --- a cold process ------------------------------------------------------------------------
def _cold(settings: Settings, *args: str) -> tuple[str, list[str]]:
    """The CLI in a new process over ``settings``' index and data dir: (stdout, heavy
    modules it imported)."""
    argv = ["--index-dir", str(settings.resolved_index_dir), *args]
    probe = (
        "import sys\nfrom rag_papers.cli.app import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "RAG_PAPERS_DATA_DIR": str(settings.data_dir), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out, _, heavy = proc.stdout.rpartition("HEAVY=")
    return out, [m for m in heavy.strip().split(",") if m]


def test_a_second_cold_ask_loads_no_model_and_answers_the_same(sample_settings: Settings) -> None:
    first, heavy = _cold(sample_settings, "ask", SELF_RAG_Q, "--json")
    assert "onnxruntime" in heavy  # nothing cached yet: the model ran
    assert cache_path(sample_settings).is_file()
    second, heavy = _cold(sample_settings, "ask", SELF_RAG_Q, "--json")
    assert heavy == []  # every text cached: no model, no tokenizer, nothing heavy
    a, b = json.loads(first), json.loads(second)
    for field in ("text", "citations", "claims", "supported", "sentences"):
        assert a[field] == b[field], field
    assert _ranked(a["sources"]) == _ranked(b["sources"])


def _ranked(items: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """Papers, ranks and their own dense and BM25 scores. Not the fused score: weighted
    fusion normalises over the whole candidate pool, whose approximate (HNSW) tail Chroma
    may fill a little differently in each process."""
    return [(i["paper_id"], i["rank"], i["dense"], i["bm25"]) for i in items]


def test_a_second_cold_search_loads_no_model(sample_settings: Settings) -> None:
    first, _ = _cold(sample_settings, "search", SELF_RAG_Q, "--json")
    second, heavy = _cold(sample_settings, "search", SELF_RAG_Q, "--json")
    a, b = json.loads(first), json.loads(second)
    keep = ("id", "rank", "dense", "bm25", "sentence", "sentence_score")  # not the fused score
    assert [[r[k] for k in keep] for r in a] == [[r[k] for k in keep] for r in b]
    assert heavy == []


# --- a cache that is damaged, shared or full --------------------------------------------------
def test_a_damaged_file_is_discarded_with_one_warning(
    shared_embedder: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "embeddings.sqlite"
    path.write_bytes(b"this is not a database, it was torn by a crash " * 100)
    cached = _wrap(shared_embedder, path)
    with caplog.at_level(logging.WARNING, logger="rag_papers.store"):
        vectors = cached.embed_documents(TEXTS)
        cached.embed_documents(TEXTS)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "damaged" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()
    assert (cached.hits, cached.misses) == (len(TEXTS), len(TEXTS))  # rebuilt, then used
    fresh = shared_embedder.embed_documents(TEXTS)  # type: ignore[attr-defined]
    assert vectors.tobytes() == fresh.tobytes()


def test_a_cache_of_another_version_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE vectors (x)")
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    cache = EmbeddingCache(path)
    cache.put([(b"k" * 32, np.ones(4, dtype=np.float32))])
    assert cache.get([b"k" * 32], 4)[b"k" * 32].tolist() == [1.0] * 4


def test_an_unusable_data_dir_means_no_cache_not_an_error(
    shared_embedder: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    cached = _wrap(shared_embedder, blocker / "cache" / "embeddings.sqlite")
    with caplog.at_level(logging.WARNING, logger="rag_papers.store"):
        assert cached.embed_documents(TEXTS).shape == (len(TEXTS), 384)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(cached.cache) == 0


def test_least_recently_used_rows_go_over_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    cache = EmbeddingCache(path, max_entries=10)
    vec = np.zeros(4, dtype=np.float32)
    old = [bytes([i]) * 32 for i in range(5)]
    cache.put((k, vec) for k in old)
    cache.get(old[:1], 4)  # read recently, but its row says otherwise below
    with sqlite3.connect(path) as conn:  # these rows were last used a day ago
        conn.executemany(
            "UPDATE vectors SET used = used - 86400 WHERE key = ?", [(k,) for k in old]
        )
    conn.close()
    new = [bytes([100 + i]) * 32 for i in range(7)]
    cache.put((k, vec) for k in new)
    assert len(cache) <= 10
    assert set(cache.get(new, 4)) == set(new)  # the newest all stay
    assert len(cache.get(old, 4)) < len(old)  # the oldest went first


def _write_many(path: str, start: int) -> int:
    cache = EmbeddingCache(Path(path))
    for i in range(start, start + 60, 3):
        cache.put(
            (bytes([j % 256, j // 256]) * 16, np.full(8, j, dtype=np.float32))
            for j in range(i, i + 3)
        )
    return len(cache)


def test_processes_share_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        pool.starmap(_write_many, [(str(path), 0), (str(path), 30), (str(path), 60)])
    cache = EmbeddingCache(path)
    keys = [bytes([j % 256, j // 256]) * 16 for j in range(120)]
    found = cache.get(keys, 8)
    assert len(found) == 120  # overlapping writers: every row once, none lost
    assert all(found[k][0] == j for j, k in enumerate(keys))
