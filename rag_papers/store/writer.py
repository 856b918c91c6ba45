"""Writing papers into an open PaperIndex, in the crash-safe order index.py describes.

Abstracts over ``settings.max_abstract_chars`` are rejected (reported like a bad record:
file, line, field, length). Then, under the collection's writer lock (store/writelock.py):
the newest published generation is loaded (another writer may have published while this one
waited), and if the last writer died mid-write the state is first rebuilt from the
collection. A draft generation (a copy of the catalog) takes the new papers' rows after
their chunks are stored; the collection is marked ``rag_papers:ingest_started`` and the lock
``writing`` before the first write; BM25 is built in the draft, which is then published as a
whole. Papers of a format-1 index that come back under their own id replace their old copy
(store/legacy.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rag_papers.core.papers import Paper
from rag_papers.ingest.chunking import Chunk, chunk_paper
from rag_papers.ingest.loaders.common import Rejected
from rag_papers.store.errors import store_errors
from rag_papers.store.legacy import STARTED_KEY, legacy_ids, old_copies
from rag_papers.store.report import IngestReport
from rag_papers.store.writelock import writer_lock

if TYPE_CHECKING:
    import numpy as np

    from rag_papers.store.catalog import Catalog
    from rag_papers.store.index import PaperIndex
    from rag_papers.store.writelock import WriteLease

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
    index.collection  # noqa: B018 - opens the store and loads the published state first
    s = index.settings
    report = IngestReport()
    unique: dict[str, Paper] = {}
    for paper in papers:
        report.read += 1
        if len(paper.abstract) > s.max_abstract_chars:
            report.rejected.append(_too_long(paper, s.max_abstract_chars))
            continue
        unique[paper.id] = paper  # across files, the last copy of an id wins
    with (
        store_errors(index.location, writing=True, disk=index.files_root),
        writer_lock(s, index.client, index.logical, index.files_root) as lease,
    ):
        index.refresh(force=True)
        if lease.recover:  # the last writer died mid-write: trust only the collection
            index.publish(index.new_draft(from_store=True), lease)
        _write_locked(index, unique, report, lease, progress)
    report.seconds = time.perf_counter() - started
    return report


def _write_locked(
    index: PaperIndex,
    unique: dict[str, Paper],
    report: IngestReport,
    lease: WriteLease,
    progress: Progress | None,
) -> None:
    s = index.settings
    stored = index.catalog.hashes(unique)
    todo = [p for pid, p in unique.items() if pid not in stored or stored[pid][0] != p.content_hash]
    report.unchanged = len(unique) - len(todo)
    migrate: dict[str, str] = {}
    if index.legacy_ids:
        wanted = {old for p in unique.values() for old in legacy_ids(p)}
        migrate = old_copies(unique, index.catalog.get_many(wanted))
    if not todo and not migrate:
        if s.chroma_url and not index.is_published():  # made before uploads: upload it now
            index.publish(index.new_draft(), lease)
        return
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
    draft = index.new_draft()
    try:
        if not (index.collection.metadata or {}).get(STARTED_KEY):
            index.set_meta(ingest_started=1)  # before the first write: see qa auto-ingest
        lease.mark_writing()
        if progress:
            progress("embed", 0, total_chunks)
        step = s.ingest_batch_papers  # all chunks of a paper go in one upsert
        for start in range(0, len(chunked), step):
            batch = chunked[start : start + step]
            chunks = [c for _, cs in batch for c in cs]
            for paper, cs in batch:
                # The full abstract rides on chunk 0 so a shared store can rebuild a catalog.
                cs[0].metadata["abstract"] = paper.abstract
            vectors = index.embedder.embed_documents([c.text for c in chunks])
            _write_chunks(index, chunks, vectors, batch, stored)
            draft.catalog.upsert((p, len(cs)) for p, cs in batch)
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
            _remove(index, draft.catalog, list(migrate))
            report.migrated += len(migrate)
        if progress:
            progress("bm25", 0, 1)
        index.publish(draft, lease)
    except BaseException:
        draft.discard()
        raise


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


def _remove(index: PaperIndex, catalog: Catalog, ids: list[str]) -> None:
    """Delete papers (their chunks, then their rows in the draft's catalog)."""
    counts = catalog.hashes(ids)
    chunk_ids = [f"{pid}#{i}" for pid, (_, n) in counts.items() for i in range(n)]
    if chunk_ids:
        index.collection.delete(ids=chunk_ids)
    catalog.delete(ids)
