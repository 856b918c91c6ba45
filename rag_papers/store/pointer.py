"""Logical collections and the atomic switch that makes a rebuild safe.

``settings.collection`` ("papers") names a *logical* collection. Until the first
``--rebuild`` it is also the Chroma collection that holds the papers. A rebuild writes a new
Chroma collection ``<logical>__<hex>`` (marked ``rag_papers:staging_for``) beside the old
one, with its own catalog and BM25 generations (sidecar/<name>/, store/state.py), while the
old one keeps answering. Only when it is complete does it become current, by one metadata
update of the logical collection: ``rag_papers:current = <logical>__<hex>`` (one SQLite
transaction in an embedded store, one request to a Chroma server; either way atomic, so
every reader, on this machine or another, sees the old index or the new one, never a mix).
Then the local pointer file (paths.py) is rewritten and the old collection and its sidecar
are deleted ("retired").

Why not a directory rename for an embedded store: one Chroma folder holds every collection
of an index dir, so swapping folders would drop or freeze the others; the metadata switch
works the same for an embedded store and a server.

A kill at any point leaves the old index current (before the switch) or the new one
complete and current (after it). Leftovers are cleaned: a collection replaced by a switch is
marked ``rag_papers:retired`` and deleted at once (or on the next writable open, when a kill
came first); unmarked ones that are not current (a rebuild that died, or a kill between the
switch and the mark) only at the start of the next rebuild, never on an ordinary open, so a
rebuild running in another process is never hit.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from rag_papers.store.paths import bm25_dir, sidecar_dir, write_pointer
from rag_papers.store.publish import drop_remote

__all__ = [
    "POINTER_KEY",
    "RETIRED_KEY",
    "STAGING_KEY",
    "drop_sidecars",
    "get_collection",
    "new_staging_name",
    "publish",
    "resolve_current",
    "retire",
]

POINTER_KEY = "rag_papers:current"
STAGING_KEY = "rag_papers:staging_for"
RETIRED_KEY = "rag_papers:retired"

log = logging.getLogger("rag_papers.store")


def new_staging_name(logical: str) -> str:
    return f"{logical}__{uuid.uuid4().hex[:12]}"


def get_collection(client: Any, name: str) -> Any | None:
    """The collection ``name``, or None when there is none (without creating it)."""
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):  # ValueError: older chromadb's "does not exist"
        return None


def resolve_current(client: Any, logical: str) -> str | None:
    """The Chroma collection now holding ``logical``'s papers; None when neither exists."""
    col = get_collection(client, logical)
    if col is None:
        return None
    return str((col.metadata or {}).get(POINTER_KEY) or logical)


def _writable_meta(col: Any) -> dict[str, Any]:
    meta = dict(col.metadata or {})
    meta.pop("hnsw:space", None)  # fixed at creation; Chroma refuses to modify it
    return meta


def publish(client: Any, logical: str, staging: str, root: Path) -> None:
    """Make the complete collection ``staging`` the current one of ``logical``."""
    old = resolve_current(client, logical)
    holder = get_collection(client, logical)
    if holder is None:
        client.create_collection(
            logical,
            metadata={"hnsw:space": "cosine", POINTER_KEY: staging},
            embedding_function=None,
        )
    else:
        holder.modify(metadata={**_writable_meta(holder), POINTER_KEY: staging})  # the switch
    write_pointer(root, logical, staging)
    if old is not None and old != logical and (prev := get_collection(client, old)):
        prev.modify(metadata={**_writable_meta(prev), RETIRED_KEY: 1})
    retire(client, logical, root, unfinished=False)


def drop_sidecars(root: Path, name: str) -> None:
    for folder in (
        sidecar_dir(root, name),
        bm25_dir(root, name),
        *(bm25_dir(root, name).with_name(f"{name}.bm25{s}") for s in (".tmp", ".old")),
    ):
        shutil.rmtree(folder, ignore_errors=True)


def retire(client: Any, logical: str, root: Path, *, unfinished: bool) -> int:
    """Delete ``logical``'s collections that are not current: those marked retired, and with
    ``unfinished`` every other one too (the remains of rebuilds that died). Returns how many."""
    current = resolve_current(client, logical) or logical
    if current == logical and not unfinished:
        return 0  # never rebuilt: nothing was retired
    retired = 0
    for col in client.list_collections():
        name, meta = col.name, col.metadata or {}
        if name == current:
            continue
        if name == logical:
            # The pointer holder keeps only its metadata: its papers predate the first rebuild.
            if col.count():
                _delete_all(col)
                drop_sidecars(root, name)
                retired += 1
            continue
        if meta.get(STAGING_KEY) != logical:
            continue  # another logical collection's, or not ours at all
        if meta.get(RETIRED_KEY) or unfinished:
            client.delete_collection(name)
            drop_remote(client, name)
            drop_sidecars(root, name)
            retired += 1
    if retired:
        log.info("removed %d old collection(s) of %r after a rebuild", retired, logical)
    return retired


def _delete_all(col: Any) -> None:
    while True:
        ids = col.get(limit=2000, include=[])["ids"]
        if not ids:
            return
        col.delete(ids=ids)
