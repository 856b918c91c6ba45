"""The paper index: a Chroma collection (embedded or server) + manifest + catalog + BM25 sidecar.

Write order makes an interrupted ingest safe to re-run: chunk ids are deterministic
("<paper>#<n>") so Chroma upserts are idempotent; the catalog row of a paper is written
only after its chunks are stored; a 'dirty' flag set for the duration of an ingest makes
the next open rebuild the catalog and BM25 from Chroma, the source of truth.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from rag_papers.core.env import prepare_environment
from rag_papers.core.errors import RagPapersError
from rag_papers.core.papers import Paper
from rag_papers.ingest.chunking import Chunk, chunk_paper, chunker_id, metadata_to_paper
from rag_papers.store.catalog import Catalog
from rag_papers.store.lexical import BM25Sidecar
from rag_papers.store.paths import catalog_path, store_location
from rag_papers.store.report import IngestReport, load_files

if TYPE_CHECKING:
    import numpy as np

    from rag_papers.core.settings import Settings
    from rag_papers.store.embeddings import Embedder

__all__ = [
    "DenseHit",
    "IndexMismatchError",
    "IngestReport",
    "PaperIndex",
    "StoreUnavailableError",
    "catalog_path",
    "load_files",
    "store_location",
]

FORMAT_VERSION = 1


class IndexMismatchError(RagPapersError, RuntimeError):
    """The stored index was built with other embedding/chunking settings."""


class StoreUnavailableError(RagPapersError, RuntimeError):
    """The Chroma server cannot be reached."""


@dataclass(slots=True)
class DenseHit:
    chunk_id: str
    paper_id: str
    score: float  # cosine similarity
    text: str


class PaperIndex:
    """Open (or create) the index that ``settings`` describe."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        rebuild: bool = False,
    ) -> None:
        prepare_environment()
        self.settings = settings
        self._embedder = embedder
        self.root = settings.resolved_index_dir
        self.sidecar_dir = self.root / "sidecar" / settings.collection
        if rebuild:
            self._drop()
        self.root.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(catalog_path(settings))
        self._client: Any = None
        self._collection: Any = None
        self._bm25: BM25Sidecar | None = None
        self._n_chunks: int | None = None  # cached per generation: a SUM over the catalog

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def location(self) -> str:
        return store_location(self.settings)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from rag_papers.store.embeddings import make_embedder

            self._embedder = make_embedder(self.settings)
        return self._embedder

    def _manifest(self) -> dict[str, str | int]:
        s = self.settings
        model = (
            "all-MiniLM-L6-v2-onnx-int8"
            if s.embed_backend == "minilm"
            else f"openai:{s.openai_embed_model}"
        )
        return {
            "rag_papers:embed_model": model,
            "rag_papers:chunker": chunker_id(s.tokenizer, s.chunk_tokens, s.chunk_overlap),
            "rag_papers:format": FORMAT_VERSION,
        }

    def _make_client(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        url = self.settings.chroma_url
        if not url:
            return chromadb.PersistentClient(
                path=str(self.root / "chroma"), settings=chroma_settings
            )
        parsed = urlparse(url if "//" in url else f"http://{url}")
        try:
            client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
            client.heartbeat()
        except Exception as exc:  # chromadb raises several types for a refused connection
            raise StoreUnavailableError(
                f"cannot reach the Chroma server at {url}: {exc}. Start one with "
                f"`chroma run --path DIR --host 127.0.0.1 --port 8000`, or unset chroma_url."
            ) from None
        return client

    @property
    def collection(self) -> Any:
        if self._collection is None:
            self._client = self._make_client()
            manifest = self._manifest()
            col = self._client.get_or_create_collection(
                self.settings.collection,
                metadata={"hnsw:space": "cosine", **manifest},
                embedding_function=None,  # never Chroma's default: it downloads a model
            )
            self._check_manifest(col.metadata or {}, manifest)
            self._collection = col
            self._sync()
        return self._collection

    def _check_manifest(self, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
        diffs = [
            f"{key.split(':', 1)[1]}: index has {stored.get(key)!r}, settings ask for {value!r}"
            for key, value in wanted.items()
            if key in stored and stored.get(key) != value
        ]
        if diffs:
            raise IndexMismatchError(
                f"the index at {self.location} (collection {self.settings.collection!r}) was "
                f"built with other settings — " + "; ".join(diffs) + ". Vectors of two models "
                "are never mixed: re-run with --rebuild to re-embed everything, or change the "
                "settings back."
            )

    def _drop(self) -> None:
        # Through the client, not rmtree: Chroma caches open stores per path in-process.
        client = self._make_client()
        with contextlib.suppress(Exception):  # absent already: nothing to drop
            client.delete_collection(self.settings.collection)
        shutil.rmtree(self.sidecar_dir, ignore_errors=True)
        shutil.rmtree(
            self.sidecar_dir.with_name(self.sidecar_dir.name + ".bm25"), ignore_errors=True
        )

    def close(self) -> None:
        self.catalog.close()

    # --- keeping catalog and BM25 in step with Chroma -----------------------------------
    def _generation(self) -> str:
        return str((self._collection.metadata or {}).get("rag_papers:generation", "0"))

    def _sync(self) -> None:
        """Rebuild the local catalog/BM25 when Chroma moved on or an ingest was interrupted."""
        remote = self._generation()
        dirty = self.catalog.get_meta("dirty") == "1"
        if dirty or self.catalog.get_meta("generation", "0") != remote:
            self._rebuild_catalog_from_store()
            self.catalog.set_meta("generation", remote)
            self.catalog.set_meta("dirty", "0")
        if self.bm25.generation != remote or len(self.bm25) != self.catalog.count():
            self._rebuild_bm25(remote)

    def _rebuild_catalog_from_store(self) -> None:
        rows: list[tuple[Paper, int]] = []
        page = 2000
        offset = 0
        while True:
            got = self._collection.get(
                where={"chunk_index": 0},
                include=["metadatas"],
                limit=page,
                offset=offset,
            )
            for meta in got["metadatas"] or []:
                paper = metadata_to_paper(meta, str(meta.get("abstract", "")))
                rows.append((paper, int(meta.get("n_chunks", 1))))
            if len(got["ids"]) < page:
                break
            offset += page
        self.catalog.replace_all(rows)

    @property
    def bm25(self) -> BM25Sidecar:
        if self._bm25 is None:
            self._bm25 = BM25Sidecar(self.sidecar_dir.with_name(self.sidecar_dir.name + ".bm25"))
        return self._bm25

    def _rebuild_bm25(self, generation: str) -> None:
        docs = ((p.id, f"{p.title}\n{p.abstract}") for p in self.catalog.iter_all())
        self.bm25.build(docs, generation)

    # --- ingest -------------------------------------------------------------------------
    def ingest_files(
        self,
        paths: Sequence[Path | str],
        *,
        format: str | None = None,
        fields: dict[str, str] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> IngestReport:
        """Load each file and ingest it; LoaderError (bad file) propagates before any write."""
        papers, report = load_files(paths, format=format, fields=fields)
        report.merge(self.ingest(papers, progress=progress))
        return report

    def ingest(
        self,
        papers: Iterable[Paper],
        *,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> IngestReport:
        """Add new papers, replace changed ones, skip unchanged ones (by content hash)."""
        started = time.perf_counter()
        self.collection  # noqa: B018 - opens the store and syncs the catalog first
        report = IngestReport()
        unique: dict[str, Paper] = {}
        for paper in papers:
            report.read += 1
            unique[paper.id] = paper  # across files, the last copy of an id wins
        stored = self.catalog.hashes(unique)
        todo: list[Paper] = []
        for pid, paper in unique.items():
            if pid in stored and stored[pid][0] == paper.content_hash:
                report.unchanged += 1
            else:
                todo.append(paper)
        if not todo:
            report.seconds = time.perf_counter() - started
            return report

        s = self.settings
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
        if progress:
            progress("embed", 0, total_chunks)
        self.catalog.set_meta("dirty", "1")
        try:
            step = s.ingest_batch_papers  # all chunks of a paper go in one upsert
            for start in range(0, len(chunked), step):
                batch = chunked[start : start + step]
                chunks = [c for _, cs in batch for c in cs]
                for paper, cs in batch:
                    # The full abstract rides on chunk 0 so a shared store can rebuild a catalog.
                    cs[0].metadata["abstract"] = paper.abstract
                vectors = self.embedder.embed_documents([c.text for c in chunks])
                self._write_chunks(chunks, vectors, batch, stored)
                self.catalog.upsert((p, len(cs)) for p, cs in batch)
                for paper, _ in batch:
                    if paper.id in stored:
                        report.updated += 1
                    else:
                        report.added += 1
                report.chunks_written += len(chunks)
                done_chunks += len(chunks)
                if progress:
                    progress("embed", done_chunks, total_chunks)
            generation = self._bump_generation()
            self.catalog.set_meta("generation", generation)
            self.catalog.set_meta("dirty", "0")
        finally:
            if progress:
                progress("bm25", 0, 1)
        self._rebuild_bm25(self.catalog.get_meta("generation", "0") or "0")
        self._n_chunks = None
        report.seconds = time.perf_counter() - started
        return report

    def _write_chunks(
        self,
        chunks: list[Chunk],
        vectors: np.ndarray,
        batch: list[tuple[Paper, list[Chunk]]],
        stored: dict[str, tuple[str, int]],
    ) -> None:
        col = self._collection
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

    def _bump_generation(self) -> str:
        generation = uuid.uuid4().hex[:12]
        meta = dict(self._collection.metadata or {})
        meta.pop("hnsw:space", None)  # the space is fixed at creation; Chroma refuses changes
        meta["rag_papers:generation"] = generation
        self._collection.modify(metadata=meta)
        return generation

    # --- reading ------------------------------------------------------------------------
    def dense_search(
        self, vector: np.ndarray, n: int, where: dict[str, Any] | None = None
    ) -> list[DenseHit]:
        col = self.collection
        if self._n_chunks is None:
            self._n_chunks = self.catalog.count_chunks()
        n = max(1, min(n, self._n_chunks or 1))
        res = col.query(
            query_embeddings=[vector.tolist()],
            n_results=n,
            where=where,
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for cid, doc, meta, dist in zip(
            res["ids"][0],
            res["documents"][0],
            res["metadatas"][0],
            res["distances"][0],
            strict=True,
        ):
            hits.append(DenseHit(cid, str(meta["paper_id"]), 1.0 - float(dist), doc or ""))
        return hits

    def paper(self, paper_id: str) -> Paper | None:
        return self.catalog.get(paper_id)

    def papers(self, ids: Iterable[str]) -> dict[str, Paper]:
        return self.catalog.get_many(ids)

    def is_empty(self) -> bool:
        return self.catalog.count() == 0

    def stats(self) -> dict[str, Any]:
        col = self.collection
        size = sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())
        manifest = self._manifest()
        return {
            "papers": self.catalog.count(),
            "chunks": col.count(),
            "embed_model": manifest["rag_papers:embed_model"],
            "chunker": manifest["rag_papers:chunker"],
            "store": self.location,
            "collection": self.settings.collection,
            "size_on_disk_bytes": size,
            "bm25_documents": len(self.bm25),
        }
