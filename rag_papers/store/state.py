"""Generations: the immutable local copies of an index's shared state.

What a reader needs besides Chroma's vectors (the catalog and the BM25 sidecar) is kept as
*generations*: ``sidecar/<collection>/gen-<id>/{catalog.sqlite, bm25/}``. A writer never
changes a published generation: it copies the current catalog into a draft folder, writes
there, builds BM25 there, renames the draft to its final name, and only then publishes its
id (store/publish.py). A reader opens the folder of the published id, so it sees the old
state or the new one, never a mix, and a kill at any point leaves the last published state
readable. ``sidecar/<collection>/current`` names the generation this machine last opened
(a hint for readers that skip Chroma: ``papers list``); the collection's metadata is the truth.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_papers.core.papers import Paper
from rag_papers.ingest.chunking import metadata_to_paper
from rag_papers.store.catalog import Catalog
from rag_papers.store.lexical import BM25Sidecar
from rag_papers.store.paths import sidecar_dir, write_line

__all__ = [
    "EMPTY",
    "Draft",
    "IndexState",
    "gen_folder",
    "new_generation",
    "open_state",
    "paper_of_record",
    "prune_local",
    "read_current",
    "rows_from_collection",
    "write_current",
]

log = logging.getLogger("rag_papers.store")
EMPTY = "0"  # the generation of a collection nobody has published to
_PREFIX = "gen-"


@dataclass
class IndexState:
    """One generation, open: what every query reads."""

    generation: str
    catalog: Catalog
    bm25: BM25Sidecar


@dataclass
class Draft:
    """The next generation while a writer fills it (a folder nobody else opens)."""

    generation: str
    folder: Path
    final: Path
    catalog: Catalog

    def build_bm25(self) -> BM25Sidecar:
        bm25 = BM25Sidecar(self.folder / "bm25")
        docs = ((p.id, f"{p.title}\n{p.abstract}") for p in self.catalog.iter_all())
        bm25.build(docs, self.generation)
        return bm25

    def finish(self) -> Path:
        """Close the draft and give it its final name (atomic: a rename)."""
        self.catalog.set_meta("generation", self.generation)
        self.catalog.close()
        shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.folder, self.final)
        return self.final

    def discard(self) -> None:
        self.catalog.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def gen_folder(root: Path, physical: str, generation: str) -> Path:
    return sidecar_dir(root, physical) / f"{_PREFIX}{generation}"


def _current_file(root: Path, physical: str) -> Path:
    return sidecar_dir(root, physical) / "current"


def read_current(root: Path, physical: str) -> str | None:
    """The generation this machine last opened, if its folder is still there."""
    try:
        gen = _current_file(root, physical).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return gen if gen and (gen_folder(root, physical, gen) / "catalog.sqlite").is_file() else None


def write_current(root: Path, physical: str, generation: str) -> None:
    write_line(_current_file(root, physical), generation)


def open_state(folder: Path, generation: str) -> IndexState:
    """Open a complete generation folder (or, for EMPTY, an empty state in ``folder``)."""
    if generation == EMPTY:
        folder.mkdir(parents=True, exist_ok=True)
    return IndexState(generation, Catalog(folder / "catalog.sqlite"), BM25Sidecar(folder / "bm25"))


def new_generation(
    root: Path, physical: str, base: IndexState | None, *, catalog_file: Path | None = None
) -> Draft:
    """A draft holding a consistent copy of ``base``'s catalog (SQLite's backup API), or
    the whole catalog a writer downloaded (``catalog_file``, moved in)."""
    generation = uuid.uuid4().hex[:12]
    final = gen_folder(root, physical, generation)
    folder = final.with_name(f"draft-{generation}")
    folder.mkdir(parents=True)
    path = folder / "catalog.sqlite"
    if catalog_file is not None:
        os.replace(catalog_file, path)
    elif base is not None:
        dest = sqlite3.connect(path)
        try:
            base.catalog.backup_to(dest)
        finally:
            dest.close()
    return Draft(generation, folder, final, Catalog(path))


def prune_local(root: Path, physical: str, keep: set[str]) -> None:
    """Delete this collection's other generations, dead drafts and the pre-generation layout.

    Readers that still hold an old generation open keep reading it: on POSIX an open file
    outlives its name. Drafts of other live writers cannot exist (the writer lock).
    """
    base = sidecar_dir(root, physical)
    if not base.is_dir():
        return
    for entry in base.iterdir():
        name = entry.name
        old_layout = name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm")
        stale = (name.startswith(_PREFIX) and name[len(_PREFIX) :] not in keep) or (
            name.startswith("draft-")
        )
        if old_layout:
            entry.unlink(missing_ok=True)
        elif stale:
            shutil.rmtree(entry, ignore_errors=True)
    for suffix in (".bm25", ".bm25.tmp", ".bm25.old"):  # the pre-generation BM25 folders
        shutil.rmtree(base.with_name(physical + suffix), ignore_errors=True)


def rows_from_collection(collection: Any) -> tuple[list[tuple[Paper, int]], int]:
    """Every paper of the collection, read from its chunk-0 records (the slow path: it reads
    every abstract); also how many records other tools wrote (no ``paper_id``)."""
    rows: list[tuple[Paper, int]] = []
    foreign = 0
    page = 2000
    offset = 0
    while True:
        got = collection.get(
            where={"chunk_index": 0}, include=["metadatas"], limit=page, offset=offset
        )
        for meta in got["metadatas"] or []:
            if (row := paper_of_record(meta)) is None:
                foreign += 1  # written by another tool: not one of our chunks
            else:
                rows.append(row)
        if len(got["ids"]) < page:
            break
        offset += page
    return rows, foreign


def paper_of_record(meta: Any) -> tuple[Paper, int] | None:
    """The paper and its chunk count from a chunk-0 record's metadata (the whole abstract
    rides there: store/writer.py); None for a record rag_papers did not write."""
    meta = dict(meta or {})
    try:
        return metadata_to_paper(meta, str(meta["abstract"])), int(meta.get("n_chunks", 1))
    except (KeyError, TypeError, ValueError):
        return None
