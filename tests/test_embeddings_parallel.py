"""Parallel local embedding (embed_workers): the same fixed batches as one stream, run on
several model sessions at once, joined in input order — byte-identical vectors."""

from __future__ import annotations

import threading
from importlib import resources
from typing import Any

import numpy as np
import pytest

from rag_papers.core.settings import load_settings
from rag_papers.ingest.chunking import chunk_paper
from rag_papers.ingest.loaders import load_papers
from rag_papers.store import embeddings
from rag_papers.store.embeddings import MiniLMEmbedder, make_embedder, session_threads

# Small batches give enough of them for four workers from the 84 sample papers.
BATCH = 16


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    """~290 real texts of mixed lengths from the bundled sample: the chunk texts an ingest
    embeds, each abstract's first sentence and each title."""
    path = resources.files("rag_papers.data").joinpath("hf_papers_sample.txt")
    papers = load_papers(str(path)).papers
    assert len(papers) >= 80
    texts = [c.text for p in papers for c in chunk_paper(p)]
    texts += [p.abstract.split(". ")[0] for p in papers]
    texts += [p.title for p in papers]  # last: the quick ones other tests take
    return texts


def test_workers_give_byte_identical_vectors(sample_texts: list[str]) -> None:
    one_stream = MiniLMEmbedder(batch_size=BATCH).embed_documents(sample_texts)
    assert one_stream.shape == (len(sample_texts), 384) and one_stream.dtype == np.float32
    for workers in (2, 4):
        parallel = MiniLMEmbedder(batch_size=BATCH, workers=workers).embed_documents(sample_texts)
        # Bytes, not allclose: an index built with N workers is the one built with one.
        assert parallel.tobytes() == one_stream.tobytes(), f"workers={workers}"


def test_batches_run_at_once_on_their_own_sessions(
    sample_texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches meet at a barrier: run one after the other, the first would wait alone and
    the barrier would break. Each worker holds its own session; none runs on the caller."""
    texts = sample_texts[-64:]  # 4 batches of titles: short, quick
    embedder = MiniLMEmbedder(batch_size=BATCH, workers=2)
    expected = MiniLMEmbedder(batch_size=BATCH).embed_documents(texts)
    barrier = threading.Barrier(2, timeout=60)
    used: list[tuple[int, int]] = []
    real_run = MiniLMEmbedder._run

    def meeting_run(self: MiniLMEmbedder, session: Any, ids: list[list[int]]) -> np.ndarray:
        used.append((id(session), threading.get_ident()))
        if len(used) <= 2:
            barrier.wait()  # BrokenBarrierError if the two first batches do not overlap
        return real_run(self, session, ids)

    monkeypatch.setattr(MiniLMEmbedder, "_run", meeting_run)
    vectors = embedder.embed_documents(texts)
    assert len(used) == 4
    assert len({session for session, _ in used}) == 2
    assert threading.get_ident() not in {thread for _, thread in used}
    assert vectors.tobytes() == expected.tobytes()


def test_sessions_open_once_and_are_reused(
    sample_texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    real_open = embeddings._open_session

    def counting_open(threads: int) -> Any:
        opened.append(threads)
        return real_open(threads)

    monkeypatch.setattr(embeddings, "_SESSIONS", {})
    monkeypatch.setattr(embeddings, "_open_session", counting_open)
    texts = sample_texts[-64:]
    embedder = MiniLMEmbedder(batch_size=BATCH, workers=2, threads=1)
    assert opened == [1]  # one at once: a missing model fails before any ingest starts
    embedder.embed_query("retrieval")
    embedder.embed_documents(texts[:BATCH])  # one batch needs one session
    assert opened == [1]
    embedder.embed_documents(texts)
    assert opened == [1, 1]  # the second worker's, opened lazily
    embedder.embed_documents(texts)
    MiniLMEmbedder(batch_size=BATCH, workers=2, threads=1).embed_documents(texts)
    assert opened == [1, 1]  # reused by later calls and other embedders in the process


def test_a_failing_batch_fails_the_call(
    sample_texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = MiniLMEmbedder._run
    calls: list[int] = []
    lock = threading.Lock()

    def failing_run(self: MiniLMEmbedder, session: Any, ids: list[list[int]]) -> np.ndarray:
        with lock:
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("batch broke")
        return real_run(self, session, ids)

    monkeypatch.setattr(MiniLMEmbedder, "_run", failing_run)
    embedder = MiniLMEmbedder(batch_size=BATCH, workers=2)
    with pytest.raises(RuntimeError, match="batch broke"):
        embedder.embed_documents(sample_texts[-64:])


def test_threads_split_between_workers_and_settings_reach_the_embedder() -> None:
    assert [session_threads(n, cores=2) for n in (1, 2, 4)] == [2, 1, 1]
    assert [session_threads(n, cores=16) for n in (1, 2, 3, 4)] == [16, 8, 5, 4]
    embedder = make_embedder(load_settings(embed_workers=3))
    assert isinstance(embedder, MiniLMEmbedder)
    assert (embedder.workers, embedder.threads) == (3, session_threads(3))
