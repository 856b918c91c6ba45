"""``--rebuild``: re-embed everything into a new collection beside the current one.

1. Check the new settings before anything is written: the embedder starts and embeds a probe
   text (so its dimension is known), the chunker's tokenizer loads, the store answers. A
   failure is a RebuildError saying the old index is unchanged.
2. Remove what earlier rebuilds that died left behind (store/pointer.py ``retire``).
3. Ingest into a staging collection ``<collection>__<hex>`` with its own catalog and BM25;
   the current index keeps answering meanwhile.
4. Switch the logical collection to it atomically (pointer.publish), then retire the old one.

A failure or a kill before 4 leaves the old index current and intact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rag_papers.core.errors import RagPapersError
from rag_papers.core.papers import Paper
from rag_papers.store.errors import RebuildError, store_errors
from rag_papers.store.pointer import drop_sidecars, publish, retire
from rag_papers.store.publish import drop_remote
from rag_papers.store.report import IngestReport
from rag_papers.store.writelock import writer_lock

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings
    from rag_papers.store.embeddings import Embedder
    from rag_papers.store.index import PaperIndex

__all__ = ["check_settings", "rebuild_index"]

_PROBE = "rag-papers settings check: does this embedder start?"


def check_settings(settings: Settings, embedder: Embedder | None = None) -> Embedder:
    """The embedder of ``settings``, once it has embedded a probe; RebuildError otherwise."""
    from rag_papers.ingest.chunking import chunk_paper
    from rag_papers.store.embeddings import make_embedder
    from rag_papers.store.paths import store_location

    where = f"{store_location(settings)} (collection {settings.collection!r})"
    step = "starting the embedder"
    try:
        embedder = embedder or make_embedder(settings)
        step = "embedding a probe text"
        vectors = embedder.embed_documents([_PROBE])
        if vectors.ndim != 2 or vectors.shape[0] != 1 or vectors.shape[1] < 1:
            raise ValueError(f"the embedder returned an array of shape {vectors.shape}")
        step = f"loading the tokenizer {settings.tokenizer!r}"
        probe = Paper(id="probe", title="Probe", abstract=_PROBE)
        chunk_paper(
            probe,
            chunk_tokens=settings.chunk_tokens,
            overlap=settings.chunk_overlap,
            tokenizer=settings.tokenizer,
        )
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise RebuildError(
            f"--rebuild did not start: the new settings fail at {step} "
            f"({type(exc).__name__}{': ' + detail if detail else ''}). Nothing was written: "
            f"the index at {where} is unchanged. Fix the settings (embed_backend "
            f"{settings.embed_backend!r}, tokenizer {settings.tokenizer!r}) and run it again."
        ) from exc
    return embedder


def rebuild_index(
    settings: Settings,
    papers: Iterable[Paper],
    *,
    embedder: Embedder | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[PaperIndex, IngestReport]:
    """Build a new index of ``papers`` beside the current one and make it current.

    Returns the new index (open) and the ingest report. On any error the current index is
    left as it was, and what was built is removed (best effort; a kill leaves it for the
    next rebuild to remove).
    """
    from rag_papers.store.index import PaperIndex

    embedder = check_settings(settings, embedder)
    staging = PaperIndex(settings, embedder=embedder, staging=True)
    try:
        # The writer lock of the logical collection, for the whole rebuild: an ingest into
        # the old collection meanwhile would be lost at the switch.
        with writer_lock(settings, staging.client, settings.collection, staging.files_root):
            with store_errors(staging.location):
                retire(staging.client, settings.collection, staging.files_root, unfinished=True)
            report = staging.ingest(papers, progress=progress)
            with store_errors(staging.location, writing=True):
                publish(staging.client, settings.collection, staging.name, staging.files_root)
    except BaseException as exc:
        staging.close()
        with contextlib.suppress(Exception):
            staging.client.delete_collection(staging.name)
        with contextlib.suppress(Exception):
            drop_remote(staging.client, staging.name)
        drop_sidecars(staging.files_root, staging.name)
        if isinstance(exc, RebuildError) or not isinstance(exc, Exception):
            raise
        cause = str(exc) if isinstance(exc, RagPapersError) else f"{type(exc).__name__}: {exc}"
        raise RebuildError(
            f"--rebuild stopped before switching: the old index at {staging.location} "
            f"(collection {settings.collection!r}) is unchanged and still current. "
            f"Cause: {cause[:500]}"
        ) from exc
    staging.staging = False  # it is the current index now
    return staging, report
