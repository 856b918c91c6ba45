"""The Chroma client of an index: embedded (a folder) or a server (``chroma_url``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from rag_papers.store.errors import StoreUnavailableError

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings

__all__ = ["make_client", "reopen_client"]


def make_client(settings: Settings, path: Path) -> Any:
    """A client of the Chroma server ``settings.chroma_url``, else of the store in ``path``."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    url = settings.chroma_url
    if not url:
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        # Two processes opening a new store at once race in Chroma's schema set-up ("table
        # collections already exists"): they open it one at a time.
        with FileLock(path.parent / ".chroma-open.lock"):
            return chromadb.PersistentClient(path=str(path), settings=chroma_settings)
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


def reopen_client(settings: Settings, path: Path) -> Any:
    """A new embedded client of ``path``: one that sees other processes' writes.

    An embedded Chroma client keeps its HNSW index in memory and never sees vectors that
    another process added; chromadb also caches one client per path, so the cache entry is
    dropped first (clients still holding the old one keep working, with the old view).
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    cache = SharedSystemClient._identifier_to_system
    for key in [k for k in cache if k and Path(k).resolve() == path.resolve()]:
        cache.pop(key, None)
    return make_client(settings, path)
