"""Writing papers into an open PaperIndex, in the crash-safe order index.py describes.

Before anything is embedded: abstracts over ``settings.max_abstract_chars`` are rejected
(reported like a bad record: file, line, field, length), the collection is marked
``rag_papers:ingest_started``, and the catalog is flagged dirty. Papers of a format-1 index
that come back under their own id replace their old copy (store/legacy.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rag_papers.core.papers import Paper
from rag_papers.ingest.chunking import Chunk, chunk_paper
from rag_papers.ingest.loaders.common import Rejected
from rag_papers.store.errors import store_errors
from rag_papers.store.legacy import STARTED_KEY, legacy_ids, old_copies
from rag_papers.store.report import IngestReport

if TYPE_CHECKING:
    import numpy as np

    from rag_papers.store.index import PaperIndex

__all__ = ["write_papers"]

Progress = Callable[[str, int, int], None]


def _too_long(paper: Paper, limit: int) -> Rejected:
    where = paper.source or f"paper {paper.id}"
    return Rejected(
        where,
        paper.line,
        f"{len(paper.abstract):,} characters (paper {paper.id}), over max_abstract_chars="
        f"{limit:,}: skipped",
        "abstract",
    )


def write_papers(
    index: PaperIndex, papers: Iterable[Paper], progress: Progress | None = None
) -> IngestReport:
    """Add new papers, replace changed ones, skip unchanged ones (by content hash)."""
    started = time.perf_counter()
    index.collection  # noqa: B018 - opens the store and syncs the catalog first
    s = index.settings
    report = IngestReport()
    unique: dict[str, Paper] = {}
    for paper in papers:
        report.read += 1
        if len(paper.abstract) > s.max_abstract_chars:
            report.rejected.append(_too_long(paper, s.max_abstract_chars))
            continue
        unique[paper.id] = paper  # across files, the last copy of an id wins
    catalog = index.catalog
    stored = catalog.hashes(unique)
    todo = [p for pid, p in unique.items() if pid not in stored or stored[pid][0] != p.content_hash]
    report.unchanged = len(unique) - len(todo)
    migrate: dict[str, str] = {}
    if index.legacy_ids:
        wanted = {old for p in unique.values() for old in legacy_ids(p)}
        migrate = old_copies(unique, catalog.get_many(wanted))
    if not todo and not migrate:
        report.seconds = time.perf_counter() - started
        return report

    chunked = [
        (
            p,
            chunk_paper(
                p, chunk_tokens=s.chunk_tokens, overlap=s.chunk_overlap, tokenizer=s.tokenizer
            ),
        )
        for p in todo
    ]
    total_chunks = sum(len(c) for _, c in chunked)
    done_chunks = 0
    with store_errors(index.location, writing=True, disk=index.files_root):
        if not (index.collection.metadata or {}).get(STARTED_KEY):
            index.set_meta(ingest_started=1)  # before the first write: see qa auto-ingest
        catalog.set_meta("dirty", "1")
        if progress:
            progress("embed", 0, total_chunks)
        try:
            step = s.ingest_batch_papers  # all chunks of a paper go in one upsert
            for start in range(0, len(chunked), step):
                batch = chunked[start : start + step]
                chunks = [c for _, cs in batch for c in cs]
                for paper, cs in batch:
                    # The full abstract rides on chunk 0 so a shared store can rebuild a catalog.
                    cs[0].metadata["abstract"] = paper.abstract
                vectors = index.embedder.embed_documents([c.text for c in chunks])
                _write_chunks(index, chunks, vectors, batch, stored)
                catalog.upsert((p, len(cs)) for p, cs in batch)
                for paper, _ in batch:
                    if paper.id in stored:
                        report.updated += 1
                    else:
                        report.added += 1
                report.chunks_written += len(chunks)
                done_chunks += len(chunks)
                if progress:
                    progress("embed", done_chunks, total_chunks)
            if migrate:  # only now that the new copies are stored
                _remove(index, list(migrate))
                report.migrated += len(migrate)
            generation = uuid.uuid4().hex[:12]
            index.set_meta(generation=generation)
            catalog.set_meta("generation", generation)
            catalog.set_meta("dirty", "0")
        finally:
            if progress:
                progress("bm25", 0, 1)
        index.rebuild_bm25()
    report.seconds = time.perf_counter() - started
    return report


def _write_chunks(
    index: PaperIndex,
    chunks: list[Chunk],
    vectors: np.ndarray,
    batch: list[tuple[Paper, list[Chunk]]],
    stored: dict[str, tuple[str, int]],
) -> None:
    col = index.collection
    col.upsert(
        ids=[c.id for c in chunks],
        embeddings=vectors,
        documents=[c.text for c in chunks],
        metadatas=[c.metadata for c in chunks],  # type: ignore[misc]
    )
    # A changed paper with fewer chunks than before leaves stale tails: delete them.
    stale = [
        f"{p.id}#{i}"
        for p, cs in batch
        if p.id in stored
        for i in range(len(cs), max(stored[p.id][1], len(cs)))
    ]
    if stale:
        col.delete(ids=stale)


def _remove(index: PaperIndex, ids: list[str]) -> None:
    """Delete papers (their chunks, then their catalog rows)."""
    counts = index.catalog.hashes(ids)
    chunk_ids = [f"{pid}#{i}" for pid, (_, n) in counts.items() for i in range(n)]
    if chunk_ids:
        index.collection.delete(ids=chunk_ids)
    index.catalog.delete(ids)
