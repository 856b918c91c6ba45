"""PaperQA: the one door to the engine. The CLI, the chat, the Python API, the HTTP server,
the eval harness, the llama-index adapters and the benchmarks all go through its public
methods; none of them opens the store or builds a retriever itself."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rag_papers.answering.prompts import load_prompt
from rag_papers.core.errors import MissingExtraError
from rag_papers.core.settings import Settings, load_settings
from rag_papers.engine.pipeline import AnswerPipeline
from rag_papers.engine.streaming import CancelToken, aiter_stream, iter_stream

if TYPE_CHECKING:
    from rag_papers.answering.contract import Answer
    from rag_papers.answering.llms import Generation, LLMBackend
    from rag_papers.core.papers import Paper
    from rag_papers.core.specs import Mode
    from rag_papers.engine.conversation import ChatSession
    from rag_papers.engine.llamaindex import PaperQueryEngine, PaperRetriever
    from rag_papers.retrieval.retriever import Filters, ScoredPaper
    from rag_papers.store.index import IngestReport, PaperIndex

__all__ = ["PaperPage", "PaperQA", "sample_corpus_path"]

PROMPT_NAMES = ("system", "answer", "condense", "grounded_system", "grounded")
SAMPLE_PAPERS = 84  # in the bundled sample corpus


def sample_corpus_path() -> Path:
    """The bundled sample corpus (84 papers from a Hugging Face papers page)."""
    return Path(str(resources.files("rag_papers.data").joinpath("hf_papers_sample.txt")))


@dataclass(slots=True)
class PaperPage:
    """One page of the paper list: ``papers`` from ``offset``, of ``total``."""

    total: int
    offset: int
    papers: list[Paper]


class PaperQA:
    """Ingest, search and ask over a paper index. Use as a context manager, or ``close()``.

    >>> with PaperQA(load_settings(index_dir="/tmp/idx")) as qa:   # doctest: +SKIP
    ...     print(qa.ask("What does Self-RAG add?").text)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        index: PaperIndex | None = None,
        llm: LLMBackend | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._index = index
        # One backend per llm spec, so switching per request never reloads a model file;
        # at most settings.llm_cache_size of them (least recently used go first).
        self._backends: OrderedDict[str, LLMBackend | None] = OrderedDict()
        if llm is not None:
            self._backends[self.settings.llm] = llm
        self._lock = threading.Lock()
        self.notify = notify or (lambda message: None)

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> PaperQA:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the index (the engine reopens it on next use)."""
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None

    def open(self) -> PaperQA:
        """Open the store now (and ingest the sample corpus into a new default index), so
        the first question does not pay for it. Returns self."""
        self._open_index()
        return self

    def _open_index(self) -> PaperIndex:
        with self._lock:
            if self._index is None:
                from rag_papers.store.index import PaperIndex

                index = PaperIndex(self.settings)
                index.collection  # noqa: B018 - opens the store and syncs the catalog
                if self._may_ingest_sample(index):
                    self.notify(
                        f"No index at {index.location} yet: ingesting the bundled sample "
                        f"corpus ({sample_corpus_path().name}, {SAMPLE_PAPERS} papers)…"
                    )
                    index.ingest_files([sample_corpus_path()])
                self._index = index
            return self._index

    def _may_ingest_sample(self, index: PaperIndex) -> bool:
        """Only into the default index, only when it never held papers, never into one an
        ingest was writing: a user's own empty index stays empty."""
        from rag_papers.store.paths import is_default_index

        s = self.settings
        fresh = not index.read_only and index.never_ingested()
        return s.auto_ingest_sample and is_default_index(s) and fresh

    @property
    def location(self) -> str:
        """Where the index lives: a Chroma server URL or a local folder."""
        from rag_papers.store.paths import store_location

        return store_location(self.settings)

    def backend(self, spec: str | None = None) -> LLMBackend | None:
        """The answer backend for ``spec`` (default settings.llm); None means extractive."""
        from rag_papers.answering.llms import make_backend

        spec = spec or self.settings.llm
        with self._lock:
            if spec in self._backends:
                self._backends.move_to_end(spec)
                return self._backends[spec]
            backend = make_backend(self.settings, spec)
            self._backends[spec] = backend
            while len(self._backends) > self.settings.llm_cache_size:
                self._backends.popitem(last=False)
            return backend

    def pipeline(self, llm: str | None = None) -> AnswerPipeline:
        """The named answer steps over the open index, with the backend for ``llm``."""
        backend = self.backend(llm)
        return AnswerPipeline(self.settings, self._open_index(), backend)

    # --- the papers -------------------------------------------------------------------------
    def ingest(
        self,
        paths: Sequence[Path | str],
        *,
        format: str | None = None,
        fields: dict[str, str] | None = None,
        rebuild: bool = False,
        on_file: Callable[[Path], None] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> IngestReport:
        """Read every file (a bad file raises LoaderError naming it before anything is
        written), then add the papers; unchanged papers are skipped. ``rebuild`` re-embeds
        everything into a new index beside the current one, after checking that the settings
        work, and switches to it only once it is complete: on any failure the old index
        stays (RebuildError)."""
        from rag_papers.store.index import PaperIndex, load_files

        papers, report = load_files(paths, format=format, fields=fields, on_file=on_file)
        if rebuild:
            from rag_papers.store.rebuild import rebuild_index

            # The current index keeps answering (other threads) until the switch.
            built, written = rebuild_index(self.settings, papers, progress=progress)
            with self._lock:
                old, self._index = self._index, built
            if old is not None:
                old.close()
            report.merge(written)
            return report
        with self._lock:
            if self._index is None:
                self._index = PaperIndex(self.settings)
            index = self._index
        report.merge(index.ingest(papers, progress=progress))
        return report

    def list_papers(self, *, limit: int | None = None, offset: int = 0) -> PaperPage:
        """A page of the papers in the index, in catalog order. BoundsError (a ValueError)
        for a limit outside 1..100,000 or a negative offset."""
        from rag_papers.store.bounds import MAX_LIMIT, MAX_OFFSET, check_int

        if limit is not None:
            check_int("limit", limit, 1, MAX_LIMIT)
        check_int("offset", offset, 0, MAX_OFFSET)
        with self._catalog() as catalog:
            return PaperPage(catalog.count(), offset, catalog.list(limit=limit, offset=offset))

    def paper(self, paper_id: str) -> Paper | None:
        with self._catalog() as catalog:
            return catalog.get(paper_id)

    def papers(self, ids: Sequence[str]) -> dict[str, Paper]:
        """id -> Paper for the ids that are in the index."""
        with self._catalog() as catalog:
            return catalog.get_many(ids)

    def count(self) -> int:
        """Papers in the index."""
        with self._catalog() as catalog:
            return catalog.count()

    def stats(self) -> dict[str, Any]:
        """Papers, chunks, embedding model, chunker, store, collection, size, BM25 documents."""
        return self._open_index().stats()

    def _catalog(self) -> Any:
        """The catalog to read, as a context manager.

        Fast path: an embedded index's local SQLite catalog, read directly (no Chroma
        import), read-only when the folder is. With a Chroma server, before any index
        exists, or when the file cannot be read (the index then repairs it), the index opens.
        """
        from contextlib import contextmanager, nullcontext

        if self._index is not None:
            return nullcontext(self._index.catalog)
        from rag_papers.store.paths import catalog_path

        path = catalog_path(self.settings)
        if not self.settings.chroma_url and path.is_file():
            import os

            from rag_papers.store.catalog import Catalog, CatalogDamagedError

            writable = os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)
            try:
                catalog = Catalog(path, read_only=not writable)
            except CatalogDamagedError:
                catalog = None  # the index rebuilds it (or reads a repaired copy)
            if catalog is not None and catalog.count():

                @contextmanager
                def closing() -> Iterator[Catalog]:
                    try:
                        yield catalog
                    finally:
                        catalog.close()

                return closing()
            if catalog is not None:
                catalog.close()
        return nullcontext(self._open_index().catalog)

    # --- search and answers -----------------------------------------------------------------
    def search(
        self,
        question: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | None = None,
        sentences: bool = False,
    ) -> list[ScoredPaper]:
        """Papers for ``question``, best first. ``sentences``: also each paper's sentence
        most similar to the question (``ScoredPaper.best_sentence``). BoundsError (a
        ValueError) for k outside 1..1000 or a filter year outside 0..9999."""
        from rag_papers.store.bounds import check_search

        check_search(k, *((filters.year_min, filters.year_max) if filters else ()))
        pipeline = self.pipeline("extractive")
        retrieved = pipeline.retrieve(question, k=k, mode=mode, filters=filters)
        if sentences:
            from rag_papers.retrieval.retriever import best_sentences

            embedder = pipeline.embedder  # through the embedding cache
            for item, best in zip(
                retrieved.results,
                best_sentences(retrieved.vector, retrieved.results, embedder),
                strict=True,
            ):
                if best:
                    item.best_sentence, item.best_sentence_score = best[0]
        return retrieved.results

    def ask(
        self,
        question: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | None = None,
        llm: str | None = None,
        on_delta: Callable[[str], None] | None = None,
        on_sources: Callable[[dict[int, str]], None] | None = None,
        standalone_question: str | None = None,
        generation: Generation | None = None,
    ) -> Answer:
        """Retrieve, answer (LLM or extractive), check every citation and sentence.

        ``on_delta`` receives the answer text as it is written (markers already filtered);
        ``on_sources`` receives marker -> paper id once the shown sources are numbered,
        before any text is written. ``generation`` overrides max_tokens, temperature and
        stop for this answer (an HTTP client's request options).
        """
        # Opening the store (or a first-run sample ingest) is not part of answering.
        pipeline = self.pipeline(llm)
        return pipeline.run(
            question,
            standalone_question=standalone_question,
            k=k,
            mode=mode,
            filters=filters,
            on_delta=on_delta,
            on_sources=on_sources,
            generation=generation,
        )

    def stream(
        self, question: str, *, cancel: CancelToken | None = None, **kwargs: Any
    ) -> Iterator[str | Answer]:
        """Yield text pieces as they are written, then the final Answer. Closing the
        iterator early (or ``cancel.cancel()``) stops generation."""
        return iter_stream(
            lambda write: self.ask(question, on_delta=write, **kwargs), cancel=cancel
        )

    async def aask(self, question: str, **kwargs: Any) -> Answer:
        import asyncio

        return await asyncio.to_thread(self.ask, question, **kwargs)

    def astream(
        self, question: str, *, cancel: CancelToken | None = None, **kwargs: Any
    ) -> AsyncIterator[str | Answer]:
        """Async form of stream(); a consumer that stops or is cancelled stops generation."""
        return aiter_stream(
            lambda write: self.ask(question, on_delta=write, **kwargs), cancel=cancel
        )

    def condense(
        self, question: str, history: Sequence[tuple[str, str]], llm: str | None = None
    ) -> str:
        """Rewrite a follow-up into a standalone question (LLM, or a heuristic when extractive)."""
        from rag_papers.engine.condense import condense_heuristic

        if not history:
            return question
        backend = self.backend(llm)
        if backend is None:
            return condense_heuristic(question, history)
        turns = "\n".join(f"User: {q}\nAssistant: {a}" for q, a in history[-3:])
        prompt = load_prompt("condense", self.settings.prompts.get("condense"))
        completion = backend.complete(
            [{"role": "user", "content": prompt.render(history=turns, question=question)}]
        )
        rewritten = completion.text.strip().strip('"').splitlines()
        return rewritten[0].strip() if rewritten and rewritten[0].strip() else question

    # --- other shapes of the same engine ----------------------------------------------------
    def chat(self) -> ChatSession:
        from rag_papers.engine.conversation import ChatSession

        return ChatSession(self)

    def as_retriever(self, **kwargs: Any) -> PaperRetriever:
        """A llama-index BaseRetriever over this engine (nodes are papers)."""
        return _llama_index_adapters().PaperRetriever(self, **kwargs)

    def as_query_engine(self, **kwargs: Any) -> PaperQueryEngine:
        """A llama-index BaseQueryEngine; its Response carries source nodes and citations."""
        return _llama_index_adapters().PaperQueryEngine(self, **kwargs)

    def prompt_hashes(self) -> dict[str, str]:
        s = self.settings
        return {n: load_prompt(n, s.prompts.get(n)).sha for n in PROMPT_NAMES}


def _llama_index_adapters() -> ModuleType:
    """engine/llamaindex.py, or MissingExtraError naming the extra when llama-index is absent."""
    try:
        from rag_papers.engine import llamaindex
    except ImportError as exc:
        if not (exc.name or "").startswith("llama_index"):
            raise
        raise MissingExtraError(
            "the llama-index adapters need llama-index-core: pip install 'rag-papers[llama-index]'"
        ) from None
    return llamaindex
