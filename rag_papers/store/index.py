"""The paper index: a Chroma collection (embedded or server) + manifest + catalog + BM25.

Chroma holds the chunks and vectors, the source of truth. The catalog and the BM25 sidecar
are *generations* (store/state.py): immutable folders that a writer builds beside the one in
use and then publishes by one atomic update of the collection's metadata
(``rag_papers:generation``). With a Chroma server the writer also uploads the generation
(store/publish.py), so a new client downloads it instead of rebuilding it from every record.
A long-running reader checks the published generation at most every ``refresh_seconds``
(a clock read per query otherwise) and switches to a new one as a whole.

Writers take the collection's writer lock (store/writelock.py) and write in a crash-safe
order (store/writer.py): chunk ids are deterministic ("<paper>#<n>") so upserts are
idempotent, and a writer that died mid-write is noticed by the next one, which rebuilds the
state from the collection. Before its first write an ingest marks the collection
(``rag_papers:ingest_started``), so an index an ingest was writing is never taken for new.

Also here: ``--rebuild`` builds beside the current collection and switches atomically
(store/pointer.py, store/rebuild.py); a read-only index dir is read from a snapshot
(store/readonly.py); records that other tools wrote into the collection (no ``paper_id``)
are skipped with one warning; damaged caches are rebuilt (catalog.py, lexical.py).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.core.env import prepare_environment
from rag_papers.core.papers import Paper
from rag_papers.ingest.chunking import chunker_id
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
from rag_papers.store.paths import (
    catalog_path,
    read_pointer,
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
from rag_papers.store.shared import GENERATION_KEY, SharedState
from rag_papers.store.state import (
    EMPTY,
    IndexState,
)

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


class PaperIndex(SharedState):
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
        self._state: IndexState | None = None
        self._checked = 0.0  # monotonic time of the last look at the published generation
        self._refreshing = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def location(self) -> str:
        return store_location(self.settings)

    @property
    def loaded_embedder(self) -> Embedder | None:
        """The embedder if one was handed in or already made (None: not loaded yet)."""
        return self._embedder

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
            self.name = current  # a rebuild elsewhere (or a kill) may have left the file behind
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
        self._load_state(str(stored.get(GENERATION_KEY, EMPTY)))
        self._checked = time.monotonic()

    def _check_manifest(self, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
        where = f"the index at {self.location} (collection {self.logical!r})"
        check_manifest(stored, wanted, where=where, readable=FORMAT_VERSION)

    def close(self) -> None:
        if self._state is not None:
            self._state.catalog.close()
        if self._cleanup is not None:
            self._cleanup()  # the read-only snapshot

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
        self.refresh()
        col = self.collection
        # Not capped at the catalog's chunk count: chunks stored but not yet published (or
        # left by a writer that died) also compete, and are dropped below by the retriever.
        n = max(1, n)
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
        if foreign and not self._foreign_warned:
            self._foreign_warned = True
            log.warning(
                "%d record(s) in collection %r at %s are not in its catalog: rag_papers did "
                "not write them (another tool did), or an ingest stored them and died before "
                "publishing (the next ingest takes them in)",
                foreign,
                self.name,
                self.location,
            )
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
