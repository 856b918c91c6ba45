"""Where an index keeps its parts, from the settings alone: readers that only need the
catalog (``papers list``) find it without loading Chroma or the index module.

A collection name (``settings.collection``) is logical: after a ``--rebuild`` its papers live
in another Chroma collection (see store/pointer.py). ``sidecar/<logical>.current`` records
which one, so the catalog of the current one is found without asking Chroma; the index
checks it against Chroma on open and corrects it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings

__all__ = [
    "bm25_dir",
    "catalog_path",
    "is_default_index",
    "read_pointer",
    "sidecar_dir",
    "store_location",
    "write_line",
    "write_pointer",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]")  # Chroma's own rule


def store_location(settings: Settings) -> str:
    """Where the Chroma store of ``settings`` is: its server URL, or its local folder."""
    return settings.chroma_url or str(settings.resolved_index_dir / "chroma")


def is_default_index(settings: Settings) -> bool:
    """The index a user gets without naming one: default dir and collection, embedded.
    Only this one is given the sample corpus on first use."""
    default_dir = settings.data_dir / "index"
    in_default_dir = settings.index_dir is None or (
        settings.index_dir.resolve() == default_dir.resolve()
    )
    default_collection = type(settings).model_fields["collection"].default
    return in_default_dir and settings.collection == default_collection and not settings.chroma_url


def _pointer_file(root: Path, logical: str) -> Path:
    return root / "sidecar" / f"{logical}.current"


def read_pointer(root: Path, logical: str) -> str:
    """The Chroma collection that holds ``logical``'s papers, as last recorded here."""
    try:
        name = _pointer_file(root, logical).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return logical
    return name if _NAME.fullmatch(name) else logical


def write_pointer(root: Path, logical: str, physical: str) -> None:
    """Record ``physical`` as ``logical``'s collection."""
    write_line(_pointer_file(root, logical), physical)


def write_line(target: Path, value: str) -> None:
    """Write a one-line file atomically (write beside it, then rename over it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_text(value + "\n", encoding="utf-8")
    os.replace(tmp, target)


def sidecar_dir(root: Path, physical: str) -> Path:
    """The folder of one collection's catalog."""
    return root / "sidecar" / physical


def bm25_dir(root: Path, physical: str) -> Path:
    """The folder of one collection's BM25 sidecar."""
    return root / "sidecar" / f"{physical}.bm25"


def catalog_path(settings: Settings) -> Path:
    """Where the local catalog of an embedded index lives (read without opening Chroma):
    in the generation this machine last opened (store/state.py)."""
    root = settings.resolved_index_dir
    folder = sidecar_dir(root, read_pointer(root, settings.collection))
    try:
        generation = (folder / "current").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        generation = ""
    return folder / f"gen-{generation or 'none'}" / "catalog.sqlite"
