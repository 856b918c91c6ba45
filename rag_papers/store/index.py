"""The paper index: a Chroma collection (embedded or server) + manifest + catalog + BM25 sidecar.

Write order makes an interrupted ingest safe to re-run: chunk ids are deterministic
("<paper>#<n>") so Chroma upserts are idempotent; the catalog row of a paper is written
only after its chunks are stored; a 'dirty' flag set for the duration of an ingest makes
the next open rebuild the catalog and BM25 from Chroma, the source of truth. Before its first
write an ingest marks the collection (``rag_papers:ingest_started``), so an index that an
ingest was writing is never taken for a new one.

Also here: ``--rebuild`` builds beside the current collection and switches atomically
(store/pointer.py, store/rebuild.py); a read-only index dir is read from a snapshot
(store/readonly.py); records that other tools wrote into the collection (no ``paper_id``)
are skipped with one warning; damaged caches are rebuilt (catalog.py, lexical.py).
"""

from __future__ import annotations

import logging
import shutil
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.core.env import prepare_environment
from rag_papers.core.papers import Paper
from rag_papers.ingest.chunking import chunker_id, metadata_to_paper
from rag_papers.store.catalog import Catalog
from rag_papers.store.client import make_client
from rag_papers.store.errors import (
    IndexMismatchError,  # re-exported
    ReadOnlyIndexError,
    StoreDamagedError,
    StoreUnavailableError,
    store_errors,
)
from rag_papers.store.legacy import (
    FORMAT_KEY,
    FORMAT_VERSION,
    OWN_IDS_SINCE,
    STARTED_KEY,
    check_manifest,
)
from rag_papers.store.lexical import BM25Sidecar
from rag_papers.store.paths import (
    bm25_dir,
    catalog_path,
    read_pointer,
    sidecar_dir,
    store_location,
    write_pointer,
)
from rag_papers.store.pointer import (
    STAGING_KEY,
    get_collection,
    new_staging_name,
    resolve_current,
    retire,
)
from rag_papers.store.readonly import ensure_index_dir, snapshot
from rag_papers.store.report import IngestReport, load_files

if TYPE_CHECKING:
    import numpy as np

    from rag_papers.core.settings import Settings
    from rag_papers.store.embeddings import Embedder

__all__ = [
    "FORMAT_VERSION",
    "DenseHit",
    "IndexMismatchError",
    "IngestReport",
    "PaperIndex",
    "ReadOnlyIndexError",
    "StoreUnavailableError",
    "catalog_path",
    "load_files",
    "store_location",
]

log = logging.getLogger("rag_papers.store")


@dataclass(slots=True)
class DenseHit:
    chunk_id: str
    paper_id: str
    score: float  # cosine similarity
    text: str


class PaperIndex:
    """Open (or create) the index that ``settings`` describe.

    ``staging``: a new, empty collection beside the current one, for a rebuild
    (store/rebuild.py publishes it when it is complete).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        staging: bool = False,
    ) -> None:
        prepare_environment()
        self.settings = settings
        self._embedder = embedder
        self.root = settings.resolved_index_dir
        self.logical = settings.collection
        self.staging = staging
        self.read_only = not ensure_index_dir(self.root)
        self.files_root = self.root  # where the files are read and written
        self._cleanup: weakref.finalize | None = None
        if self.read_only:
            if staging:
                raise self._read_only_error("rebuild")
            self.files_root = snapshot(self.root)
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.files_root, True)
        self.name = (
            new_staging_name(self.logical)
            if staging
            else read_pointer(self.files_root, self.logical)
        )
        self._client: Any = None
        self._collection: Any = None
        self._foreign_warned = False
        self.legacy_ids = False  # format 1: own ids were not kept (see legacy.py)
        self._open_caches()

    def _open_caches(self) -> None:
        self.sidecar_dir = sidecar_dir(self.files_root, self.name)
        self.catalog = Catalog(self.sidecar_dir / "catalog.sqlite")
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

    @property
    def client(self) -> Any:
        if self._client is None:
            with store_errors(self.location):
                self._client = make_client(self.settings, self.files_root / "chroma")
        return self._client

    def _read_only_error(self, what: str) -> ReadOnlyIndexError:
        return ReadOnlyIndexError(
            f"cannot {what}: the index dir {self.root} is read-only for this user (reading "
            "works). Give this user write access to it, or set index_dir to a writable copy."
        )

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
            FORMAT_KEY: FORMAT_VERSION,
        }

    @property
    def collection(self) -> Any:
        if self._collection is None:
            with store_errors(self.location):
                self._open_collection()
        return self._collection

    def _open_collection(self) -> None:
        client = self.client
        if not self.staging:
            current = resolve_current(client, self.logical) or self.logical
            if current != self.logical and get_collection(client, current) is None:
                raise StoreDamagedError(
                    f"collection {self.logical!r} at {self.location} points to {current!r}, "
                    "which is missing (deleted by hand?). Re-create the index with "
                    "`rag-papers ingest --rebuild FILES`."
                )
            if current != self.name:  # a rebuild elsewhere (or a kill) left the file behind
                self.catalog.close()
                self.name = current
                self._open_caches()
            if not self.read_only and current != read_pointer(self.files_root, self.logical):
                write_pointer(self.files_root, self.logical, current)
        manifest = self._manifest()
        extra = {STAGING_KEY: self.logical} if self.staging else {}
        col = client.get_or_create_collection(
            self.name,
            metadata={"hnsw:space": "cosine", **manifest, **extra},
            embedding_function=None,  # never Chroma's default: it downloads a model
        )
        stored = col.metadata or {}
        self._check_manifest(stored, manifest)
        self.legacy_ids = int(stored.get(FORMAT_KEY, 1)) < OWN_IDS_SINCE
        self._collection = col
        if not self.read_only and not self.staging:
            retire(client, self.logical, self.files_root, unfinished=False)
        self._sync()

    def _check_manifest(self, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
        where = f"the index at {self.location} (collection {self.logical!r})"
        check_manifest(stored, wanted, where=where, readable=FORMAT_VERSION)

    def close(self) -> None:
        self.catalog.close()
        if self._cleanup is not None:
            self._cleanup()  # the read-only snapshot

    # --- keeping catalog and BM25 in step with Chroma -----------------------------------
    def _meta(self) -> dict[str, Any]:
        return dict(self.collection.metadata or {})

    def set_meta(self, **values: str | int) -> None:
        """Set ``rag_papers:<key>`` values in the collection's metadata (keeping the rest)."""
        meta = self._meta()
        meta.pop("hnsw:space", None)  # the space is fixed at creation; Chroma refuses changes
        meta.update({f"rag_papers:{k}": v for k, v in values.items()})
        self._collection.modify(metadata=meta)

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
        foreign = 0
        page = 2000
        offset = 0
        while True:
            got = self._collection.get(
                where={"chunk_index": 0}, include=["metadatas"], limit=page, offset=offset
            )
            for meta in got["metadatas"] or []:
                try:
                    paper = metadata_to_paper(dict(meta or {}), str((meta or {})["abstract"]))
                    rows.append((paper, int((meta or {}).get("n_chunks", 1))))
                except (KeyError, TypeError, ValueError):
                    foreign += 1  # written by another tool: not one of our chunks
            if len(got["ids"]) < page:
                break
            offset += page
        if foreign:
            self._warn_foreign(foreign, "rebuilding the catalog")
        self.catalog.replace_all(rows)

    def _warn_foreign(self, count: int, doing: str) -> None:
        if self._foreign_warned:
            return
        self._foreign_warned = True
        log.warning(
            "skipped %d record(s) in collection %r at %s that rag_papers did not write (no "
            "paper_id: another tool added them) while %s",
            count,
            self.name,
            self.location,
            doing,
        )

    @property
    def bm25(self) -> BM25Sidecar:
        if self._bm25 is None:
            self._bm25 = BM25Sidecar(bm25_dir(self.files_root, self.name))
        return self._bm25

    def _rebuild_bm25(self, generation: str) -> None:
        docs = ((p.id, f"{p.title}\n{p.abstract}") for p in self.catalog.iter_all())
        self.bm25.build(docs, generation)

    def rebuild_bm25(self) -> None:
        """Rebuild the BM25 sidecar from the catalog (after an ingest wrote something)."""
        self._rebuild_bm25(self.catalog.get_meta("generation", "0") or "0")
        self._n_chunks = None

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
        """Add new papers, replace changed ones, skip unchanged ones (by content hash);
        abstracts over ``settings.max_abstract_chars`` are reported and skipped."""
        from rag_papers.store.writer import write_papers

        if self.read_only:
            raise self._read_only_error("ingest")
        return write_papers(self, papers, progress)

    # --- reading ------------------------------------------------------------------------
    def dense_search(
        self, vector: np.ndarray, n: int, where: dict[str, Any] | None = None
    ) -> list[DenseHit]:
        col = self.collection
        if self._n_chunks is None:
            self._n_chunks = self.catalog.count_chunks()
        n = max(1, min(n, self._n_chunks or 1))
        with store_errors(self.location):
            res = col.query(
                query_embeddings=[vector.tolist()],
                n_results=n,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        hits = []
        foreign = 0
        for cid, doc, meta, dist in zip(
            res["ids"][0],
            res["documents"][0],
            res["metadatas"][0],
            res["distances"][0],
            strict=True,
        ):
            paper_id = (meta or {}).get("paper_id")
            if not isinstance(paper_id, str) or not paper_id:
                foreign += 1
                continue
            hits.append(DenseHit(cid, paper_id, 1.0 - float(dist), doc or ""))
        if foreign:
            self._warn_foreign(foreign, "searching")
        return hits

    def paper(self, paper_id: str) -> Paper | None:
        return self.catalog.get(paper_id)

    def papers(self, ids: Iterable[str]) -> dict[str, Paper]:
        return self.catalog.get_many(ids)

    def is_empty(self) -> bool:
        return self.catalog.count() == 0

    def never_ingested(self) -> bool:
        """No ingest ever started writing this collection, and it holds no papers."""
        started = (self.collection.metadata or {}).get(STARTED_KEY)
        return not started and self.is_empty()

    def stats(self) -> dict[str, Any]:
        col = self.collection
        size = sum(f.stat().st_size for f in self.files_root.rglob("*") if f.is_file())
        manifest = self._manifest()
        chunks = self.catalog.count_chunks()
        with store_errors(self.location):
            foreign = max(0, col.count() - chunks)
        if foreign:
            self._warn_foreign(foreign, "counting")
        return {
            "papers": self.catalog.count(),
            "chunks": chunks,
            "foreign_records": foreign,
            "embed_model": manifest["rag_papers:embed_model"],
            "chunker": manifest["rag_papers:chunker"],
            "store": self.location,
            "collection": self.settings.collection,
            "size_on_disk_bytes": size,
            "bm25_documents": len(self.bm25),
        }
