"""The shared state of a PaperIndex: which generation it reads, and publishing the next.

A mixin of PaperIndex (store/index.py), kept apart because it is one concern: generations
(store/state.py) opened, refreshed, drafted and published (store/publish.py for a server).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.core.papers import Paper
from rag_papers.store.client import reopen_client
from rag_papers.store.errors import store_errors
from rag_papers.store.pointer import POINTER_KEY, get_collection
from rag_papers.store.state import (
    EMPTY,
    Draft,
    IndexState,
    gen_folder,
    new_generation,
    open_state,
    paper_of_record,
    prune_local,
    read_current,
    rows_from_collection,
    write_current,
)

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings
    from rag_papers.store.catalog import Catalog
    from rag_papers.store.lexical import BM25Sidecar
    from rag_papers.store.writelock import WriteLease

__all__ = ["GENERATION_KEY", "SharedState"]

log = logging.getLogger("rag_papers.store")
GENERATION_KEY = "rag_papers:generation"


class SharedState:
    # Set by PaperIndex.__init__ / its collection opener.
    settings: Settings
    files_root: Path
    logical: str
    name: str
    staging: bool
    read_only: bool
    _client: Any
    _collection: Any
    _state: IndexState | None
    _checked: float
    _refreshing: threading.Lock

    if TYPE_CHECKING:

        @property
        def location(self) -> str: ...

        @property
        def client(self) -> Any: ...

        @property
        def collection(self) -> Any: ...

        def _warn_foreign(self, count: int, doing: str) -> None: ...

    # --- the shared state: generations of catalog + BM25 -----------------------------------
    def set_meta(self, **values: str | int) -> None:
        """Set ``rag_papers:<key>`` values in the collection's metadata, keeping the rest as
        stored now (read fresh: another writer may have changed it since we opened)."""
        with store_errors(self.location):
            fresh = self.client.get_collection(self.name, embedding_function=None)
            meta = dict(fresh.metadata or {})
            meta.pop("hnsw:space", None)  # fixed at creation; Chroma refuses changes
            meta.update({f"rag_papers:{k}": v for k, v in values.items()})
            fresh.modify(metadata=meta)
            self._collection = fresh

    @property
    def state(self) -> IndexState:
        """The generation in use (opening the index, or refreshing it when it is due)."""
        if self._state is None:
            self.collection  # noqa: B018 - opens the store and loads the published state
        else:
            self.refresh()
        assert self._state is not None
        return self._state

    @property
    def catalog(self) -> Catalog:
        return self.state.catalog

    @property
    def bm25(self) -> BM25Sidecar:
        return self.state.bm25

    @property
    def generation(self) -> str:
        return self.state.generation

    def refresh(self, *, force: bool = False) -> bool:
        """Switch to the generation another writer published, if any; True when it did.

        Looks at most every ``refresh_seconds`` (one metadata read; a clock read otherwise),
        and never makes a query wait for another thread's look: that query uses the
        generation in hand.
        """
        if self._state is None or self.staging:
            return False
        if not force and time.monotonic() - self._checked < self.settings.refresh_seconds:
            return False
        if not self._refreshing.acquire(blocking=force):
            return False
        try:
            self._checked = time.monotonic()
            with store_errors(self.location):
                holder = get_collection(self.client, self.logical)
                meta = (holder.metadata or {}) if holder is not None else {}
                current = str(meta.get(POINTER_KEY) or self.logical)
                if current != self.name:  # a --rebuild elsewhere switched collections
                    self.name, self._collection = current, None
                    if not self.settings.chroma_url:
                        self._client = reopen_client(self.settings, self.files_root / "chroma")
                    self.collection  # noqa: B018 - opens it and loads its state
                    return True
                fresh = (
                    holder  # never rebuilt: the logical collection holds the papers
                    if holder is not None and current == self.logical
                    else self.client.get_collection(self.name, embedding_function=None)
                )
                published = str((fresh.metadata or {}).get(GENERATION_KEY, EMPTY))
                if published == self._state.generation:
                    return False
                if not self.settings.chroma_url:  # embedded: this process's HNSW is stale
                    self._client = reopen_client(self.settings, self.files_root / "chroma")
                    fresh = self._client.get_collection(self.name, embedding_function=None)
                self._collection = fresh
                self._load_state(published)
            return True
        finally:
            self._refreshing.release()

    def _load_state(self, generation: str) -> None:
        """Open ``generation``: the local copy, else the server's upload, else rebuilt from
        the collection (an index made before generations, or a copy that was lost)."""
        from rag_papers.store.publish import download

        folder = gen_folder(self.files_root, self.name, generation)
        state = self._open_checked(folder, generation)
        remote = generation != EMPTY and self.settings.chroma_url
        if state is None and remote and download(self.client, self.name, generation, folder):
            state = self._open_checked(folder, generation)
        if state is None and generation == EMPTY and not self._collection.count():
            state = self._opened(folder, EMPTY)
            state.catalog.set_meta("generation", EMPTY)
            state.bm25.build([], EMPTY)
        if state is None:
            log.info("building the catalog and BM25 of %r from the collection", self.name)
            draft = self._draft_from_store()
            draft.generation, draft.final = generation, folder
            draft.build_bm25()
            state = self._opened(draft.finish(), generation)
        self._swap(state)

    def _open_checked(self, folder: Path, generation: str) -> IndexState | None:
        """The generation in ``folder`` if it is there and whole; None otherwise (a damaged
        file was already reported by the catalog or the BM25 sidecar)."""
        if not (folder / "catalog.sqlite").is_file():
            return None
        state = self._opened(folder, generation)
        catalog, bm25 = state.catalog, state.bm25
        if (
            catalog.get_meta("generation") == generation
            and bm25.generation == generation
            and len(bm25) == catalog.count()
        ):
            return state
        log.info("the local state %s is incomplete: rebuilding it", folder)
        catalog.close()
        shutil.rmtree(folder, ignore_errors=True)
        return None

    def _draft_from_store(self) -> Draft:
        """A draft whose catalog is read from the collection's chunk-0 records."""
        draft = new_generation(self.files_root, self.name, None)
        rows, foreign = rows_from_collection(self._collection)
        if foreign:
            self._warn_foreign(foreign, "rebuilding the catalog")
        draft.catalog.replace_all(rows)
        return draft

    def _swap(self, state: IndexState) -> None:
        # Queries that hold the old state finish with it: its files stay readable once
        # unlinked, and its SQLite connection closes when the last reference goes.
        self._state = state
        if not self.read_only and read_current(self.files_root, self.name) != state.generation:
            write_current(self.files_root, self.name, state.generation)
            prune_local(self.files_root, self.name, {state.generation})

    def new_draft(self, *, from_store: bool = False) -> Draft:
        """The next generation, to fill under the writer lock: a copy of the current one,
        or (``from_store``) rebuilt from the collection, after a writer died mid-write."""
        from rag_papers.store.publish import FULL, download

        state = self.state
        if not from_store and self.settings.chroma_url and state.catalog.is_slim():
            # A reader's download lacks the paper data BM25 is built from: get the whole one.
            tmp = self.files_root / "sidecar" / f"{self.name}.full-{os.getpid()}"
            try:
                if download(self.client, self.name, state.generation, tmp, role="writer"):
                    return new_generation(self.files_root, self.name, None, catalog_file=tmp / FULL)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            from_store = True
        if from_store:
            return self._draft_from_store()
        return new_generation(self.files_root, self.name, state)

    def publish(self, draft: Draft, lease: WriteLease) -> None:
        """Make ``draft`` the generation every reader opens (store/publish.py)."""
        from rag_papers.store.publish import prune_remote, upload

        draft.build_bm25()
        folder = draft.finish()
        previous = self._state.generation if self._state else EMPTY
        with store_errors(self.location, writing=True, disk=self.files_root):
            state = self._opened(folder, draft.generation)
            if self.settings.chroma_url:
                upload(self.client, self.name, draft.generation, folder, state.catalog)
            lease.check()
            self.set_meta(generation=draft.generation)  # the switch, atomic
            self._swap(state)
            self._checked = time.monotonic()
            if self.settings.chroma_url:
                prune_remote(self.client, self.name, {draft.generation, previous})

    def _opened(self, folder: Path, generation: str) -> IndexState:
        state = open_state(folder, generation)
        if self.settings.chroma_url:  # a downloaded catalog is slim: data on first use
            state.catalog.fetch_missing = self._fetch_papers
        return state

    def _fetch_papers(self, ids: list[str]) -> dict[str, Paper]:
        """Papers from their chunk-0 records (the full abstract rides there: writer.py)."""
        with store_errors(self.location):
            got = self.collection.get(ids=[f"{pid}#0" for pid in ids], include=["metadatas"])
        rows = (paper_of_record(meta) for meta in got["metadatas"] or [])
        return {row[0].id: row[0] for row in rows if row is not None}

    def is_published(self) -> bool:
        """Whether a new client can download the current generation (server only)."""
        from rag_papers.store.publish import has_upload

        state = self.state
        return state.generation == EMPTY or has_upload(self.client, self.name, state.generation)
