"""Where an index keeps its parts, from the settings alone: readers that only need the
catalog (``papers list``) find it without loading Chroma or the index module."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings

__all__ = ["catalog_path", "store_location"]


def store_location(settings: Settings) -> str:
    """Where the Chroma store of ``settings`` is: its server URL, or its local folder."""
    return settings.chroma_url or str(settings.resolved_index_dir / "chroma")


def catalog_path(settings: Settings) -> Path:
    """Where the local catalog of an embedded index lives (read without opening Chroma)."""
    return settings.resolved_index_dir / "sidecar" / settings.collection / "catalog.sqlite"
