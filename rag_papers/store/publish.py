"""A generation's files on the Chroma server, so a new client opens it instead of rebuilding.

With a Chroma server the writer uploads the finished generation folder (catalog.sqlite and
the BM25 arrays, store/state.py) into a companion collection ``<collection>.state``, then
points the collection's metadata at it (``rag_papers:generation``, one atomic update: the
publish). A client that lacks that generation downloads it: time grows with the size of the
state (about 3 MB compressed at 5k papers, 45 MB at 100k), not with reading every record.

The bytes ride in record *metadata*, zlib-compressed and base64-encoded in parts of at most
8 MB, each record with a 1-d placeholder vector. Not in documents: Chroma full-text-indexes
documents, and a 10 MB document took 13 s to store where the same bytes as metadata took
0.3 s. A manifest record (paths, roles, sizes, part counts) is written after the parts, so a
generation without one is incomplete; zlib's checksum and the size catch a damaged part.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_papers.store.catalog import Catalog

__all__ = [
    "FULL",
    "STATE_SUFFIX",
    "download",
    "drop_remote",
    "has_upload",
    "prune_remote",
    "upload",
]

log = logging.getLogger("rag_papers.store")
STATE_SUFFIX = ".state"
PART_CHARS = 8_000_000
_REQUEST_CHARS = 24_000_000  # per upsert or get: well under what a Chroma server accepts
_PLACEHOLDER = [1.0]
_PARTS_PER_GET = 2
FULL = "full/catalog.sqlite"  # the whole catalog, for writers


def _name(physical: str) -> str:
    return f"{physical}{STATE_SUFFIX}"


def _create(client: Any, physical: str) -> Any:
    return client.get_or_create_collection(
        _name(physical), metadata={"rag_papers:state_for": physical}, embedding_function=None
    )


def _collection(client: Any, physical: str) -> Any | None:
    from rag_papers.store.pointer import get_collection

    return get_collection(client, _name(physical))


def upload(client: Any, physical: str, generation: str, folder: Path, catalog: Catalog) -> int:
    """Upload the generation in ``folder``; returns the characters sent.

    Readers get the BM25 files and a slim catalog (no paper data: store/catalog.py fetches
    that from Chroma when a paper is first shown); writers also get the whole catalog.
    """
    col = _create(client, physical)
    files = [(p, p.relative_to(folder).as_posix(), "reader") for p in sorted(folder.rglob("*"))]
    files = [f for f in files if f[0].is_file() and not f[1].startswith("catalog.sqlite")]
    slim = folder.with_name(f"{folder.name}.slim-{os.getpid()}.sqlite")
    catalog.write_slim(slim)
    files += [(slim, "catalog.sqlite", "reader"), (folder / "catalog.sqlite", FULL, "writer")]
    manifest: dict[str, Any] = {"generation": generation, "files": []}
    ids: list[str] = []
    metas: list[dict[str, Any]] = []
    pending = total = 0

    def flush() -> None:
        nonlocal pending
        if ids:
            col.upsert(ids=ids, metadatas=metas, embeddings=[_PLACEHOLDER] * len(ids))
        ids.clear()
        metas.clear()
        pending = 0

    try:
        for number, (path, name, role) in enumerate(files):
            raw = path.read_bytes()
            text = base64.b64encode(zlib.compress(raw, 1)).decode("ascii")
            parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]
            manifest["files"].append(
                {"path": name, "role": role, "bytes": len(raw), "parts": len(parts)}
            )
            for i, part in enumerate(parts):
                ids.append(f"{generation}/{number}/{i}")
                metas.append({"generation": generation, "data": part})
                pending += len(part)
                total += len(part)
                if pending >= _REQUEST_CHARS:
                    flush()
        flush()
    finally:
        slim.unlink(missing_ok=True)
    col.upsert(  # last: a generation with a manifest is complete
        ids=[f"{generation}/manifest"],
        metadatas=[{"generation": generation, "data": json.dumps(manifest)}],
        embeddings=[_PLACEHOLDER],
    )
    return total


def download(
    client: Any, physical: str, generation: str, dest: Path, *, role: str = "reader"
) -> bool:
    """Fetch the files of ``role`` of ``generation`` into the folder ``dest`` (replaced
    whole); False when the server has no complete copy (never uploaded, or pruned)."""
    col = _collection(client, physical)
    if col is None:
        return False
    got = col.get(ids=[f"{generation}/manifest"], include=["metadatas"])
    if not got["ids"]:
        return False
    manifest = json.loads(str(got["metadatas"][0]["data"]))
    wanted = [(n, e) for n, e in enumerate(manifest["files"]) if e.get("role") == role]
    keys = {n: [f"{generation}/{n}/{i}" for i in range(int(e["parts"]))] for n, e in wanted}
    ids = [k for n, _ in wanted for k in keys[n]]
    groups = [ids[i : i + _PARTS_PER_GET] for i in range(0, len(ids), _PARTS_PER_GET)]

    def fetch(group: list[str]) -> dict[str, str]:
        res = col.get(ids=group, include=["metadatas"])
        found = zip(res["ids"], res["metadatas"], strict=True)
        return {i: str((m or {}).get("data", "")) for i, m in found}

    parts: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(groups)))) as pool:
        for found in pool.map(fetch, groups):
            parts.update(found)
    if any(k not in parts for k in ids):
        return False  # pruned while we read: the caller looks again or rebuilds
    tmp = dest.with_name(f"{dest.name}.download-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for n, entry in wanted:
            try:  # zlib's own checksum catches a damaged or truncated upload
                raw = zlib.decompress(base64.b64decode("".join(parts.pop(k) for k in keys[n])))
            except (zlib.error, ValueError) as exc:
                raw, error = b"", str(exc)
            else:
                error = "" if len(raw) == int(entry["bytes"]) else "wrong length"
            if error:
                log.warning(
                    "the uploaded state %s of collection %r is damaged (%s: %s): rebuilding "
                    "it from the collection instead",
                    generation,
                    physical,
                    entry["path"],
                    error,
                )
                return False
            target = tmp / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(raw)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def prune_remote(client: Any, physical: str, keep: set[str]) -> None:
    """Delete the uploaded generations not in ``keep`` (the current and the previous one, so
    a client that read the old pointer a moment ago can still download it)."""
    col = _collection(client, physical)
    if col is None:
        return
    ids = col.get(include=[])["ids"]
    stale = [i for i in ids if i.split("/", 1)[0] not in keep]
    for start in range(0, len(stale), 1000):
        col.delete(ids=stale[start : start + 1000])


def drop_remote(client: Any, physical: str) -> None:
    """Delete the state collection of a collection that is being deleted."""
    if _collection(client, physical) is not None:
        client.delete_collection(_name(physical))


def has_upload(client: Any, physical: str, generation: str) -> bool:
    """Whether ``generation`` was uploaded completely (its manifest is there)."""
    col = _collection(client, physical)
    return bool(col is not None and col.get(ids=[f"{generation}/manifest"], include=[])["ids"])
