"""PaperQA: the one engine behind the CLI, chat, Python API, HTTP server and eval harness."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag_papers.answer import (
    ABSTAIN_PHRASE,
    Answer,
    Citation,
    Source,
    Usage,
    build_context,
    check_support,
    extractive_answer,
    is_abstention,
    parse_citations,
    split_answer,
)
from rag_papers.prompts import load_prompt
from rag_papers.retrieval import Filters, Mode, Retriever, ScoredPaper
from rag_papers.settings import Settings, load_settings
from rag_papers.text import count_tokens

if TYPE_CHECKING:
    from rag_papers.chat import ChatSession
    from rag_papers.index import IngestReport, PaperIndex
    from rag_papers.llms import LLMBackend

__all__ = ["MarkerFilter", "PaperQA", "sample_corpus_path"]


def sample_corpus_path() -> Path:
    """The bundled sample corpus (84 papers from a Hugging Face papers page)."""
    return Path(str(resources.files("rag_papers.data").joinpath("hf_papers_sample.txt")))


class MarkerFilter:
    """Filters streamed text so a citation marker outside 1..n is never shown, even briefly.

    Text is passed through at once except from an opening '[' until the marker closes (or
    proves not to be a marker), which is then emitted only if every number in it is valid.
    """

    def __init__(self, n_shown: int) -> None:
        self.n_shown = n_shown
        self._buf = ""

    def feed(self, delta: str) -> str:
        out = []
        for ch in delta:
            if self._buf:
                if ch == "[":  # a new bracket: what was held was not a marker
                    out.append(self._buf)
                    self._buf = ch
                    continue
                self._buf += ch
                if ch == "]":
                    out.append(self._resolve())
                elif not (ch.isdigit() or ch in " ,;-–"):
                    out.append(self._buf)  # not a marker after all
                    self._buf = ""
            elif ch == "[":
                self._buf = ch
            else:
                out.append(ch)
        return "".join(out)

    def _resolve(self) -> str:
        text, self._buf = self._buf, ""
        clean, _, _ = parse_citations(text, self.n_shown)
        return clean

    def flush(self) -> str:
        text, self._buf = self._buf, ""
        return text


class PaperQA:
    """Ingest, search and ask over a paper index.

    >>> qa = PaperQA(load_settings(index_dir="/tmp/idx"))   # doctest: +SKIP
    >>> qa.ask("What does Self-RAG add?").text               # doctest: +SKIP
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
        # One backend per llm spec, so switching per request never reloads a model file.
        self._backends: dict[str, LLMBackend | None] = {}
        if llm is not None:
            self._backends[self.settings.llm] = llm
        self._lock = threading.Lock()
        self.notify = notify or (lambda message: None)

    # --- parts ------------------------------------------------------------------------
    @property
    def index(self) -> PaperIndex:
        with self._lock:
            if self._index is None:
                from rag_papers.index import PaperIndex

                index = PaperIndex(self.settings)
                index.collection  # noqa: B018 - opens the store and syncs the catalog
                if index.is_empty() and self.settings.auto_ingest_sample:
                    self.notify(
                        f"No index at {index.location} yet: ingesting the bundled sample "
                        f"corpus ({sample_corpus_path().name}, 84 papers)…"
                    )
                    index.ingest_files([sample_corpus_path()])
                self._index = index
            return self._index

    @property
    def retriever(self) -> Retriever:
        return Retriever(self.index, self.settings)

    def backend(self, spec: str | None = None) -> LLMBackend | None:
        """The answer backend for ``spec`` (default settings.llm); None means extractive."""
        from rag_papers.llms import make_backend

        spec = spec or self.settings.llm
        with self._lock:
            if spec not in self._backends:
                self._backends[spec] = make_backend(self.settings, spec)
            return self._backends[spec]

    # --- operations --------------------------------------------------------------------
    def ingest(
        self,
        paths: Sequence[Path | str],
        *,
        format: str | None = None,
        fields: dict[str, str] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> IngestReport:
        if self._index is None:
            from rag_papers.index import PaperIndex

            self._index = PaperIndex(self.settings)
        return self._index.ingest_files(paths, format=format, fields=fields, progress=progress)

    def search(
        self,
        question: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | None = None,
    ) -> list[ScoredPaper]:
        return self.retriever.retrieve(question, k=k, mode=mode, filters=filters)

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
    ) -> Answer:
        """Retrieve, answer (LLM or extractive), check every citation and sentence.

        ``on_delta`` receives the answer text as it is written (markers already filtered);
        ``on_sources`` receives marker -> paper id once the shown sources are numbered,
        before any text is written.
        """
        s = self.settings
        timings: dict[str, float] = {}
        query = standalone_question or question
        # Opening the store (or a first-run sample ingest) is not part of answering.
        backend = self.backend(llm)
        index = self.index
        t_all = t = time.perf_counter()
        qvec = index.embedder.embed_query(query)
        retriever = self.retriever
        results = retriever.retrieve(query, k=k, mode=mode, filters=filters, query_vector=qvec)
        timings["retrieve"] = time.perf_counter() - t
        model = backend.model_id if backend else "extractive"
        answer = Answer(
            question=question,
            text="",
            mode="llm" if backend else "extractive",
            model=model,
            settings_fingerprint=s.fingerprint(),
            standalone_question=standalone_question,
        )
        answer.sources = [_source(r) for r in results]

        best_dense = max((r.dense for r in results if r.dense is not None), default=None)
        if not results or (best_dense is not None and best_dense < s.abstain_threshold):
            why = (
                "nothing retrieved"
                if not results
                else (f"weak retrieval (best similarity {best_dense:.2f} < {s.abstain_threshold})")
            )
            return self._abstain(answer, why, on_delta, timings, t_all)

        window = backend.context_window if backend else 1_000_000
        budget = min(s.prompt_budget, max(window - s.max_tokens - 400, 200))
        t = time.perf_counter()
        context, shown = build_context(results, budget=budget, tokenizer=s.tokenizer)
        for marker, item in enumerate(shown, start=1):
            answer.sources[item.rank - 1].marker = marker
        if on_sources is not None:
            on_sources({m: item.paper.id for m, item in enumerate(shown, start=1)})
        timings["context"] = time.perf_counter() - t

        t = time.perf_counter()
        if backend is None:
            raw = extractive_answer(
                qvec,
                shown,
                index.embedder,
                n_sentences=s.extractive_sentences,
                min_similarity=s.abstain_sentence_threshold,
            )
            if raw == ABSTAIN_PHRASE:
                why = (
                    "no sentence of the retrieved abstracts is close to the question "
                    f"(similarity < {s.abstain_sentence_threshold})"
                )
                timings["generate"] = time.perf_counter() - t
                return self._abstain(answer, why, on_delta, timings, t_all)
            if on_delta:
                on_delta(raw)
            answer.usage = Usage(counted_by="none")
        else:
            system = load_prompt("system", s.prompts.get("system")).render(
                abstain_phrase=ABSTAIN_PHRASE
            )
            user = load_prompt("answer", s.prompts.get("answer")).render(
                sources=context, question=query
            )
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            flt = MarkerFilter(len(shown))
            sink = None
            if on_delta is not None:

                def sink(delta: str) -> None:
                    if text := flt.feed(delta):
                        on_delta(text)

            completion = backend.complete(messages, on_delta=sink)
            if on_delta is not None and (rest := flt.flush()):
                on_delta(rest)
            raw = completion.text
            answer.usage = self._usage(model, messages, completion)
        timings["generate"] = time.perf_counter() - t

        if backend is not None and is_abstention(raw):
            answer.text = ABSTAIN_PHRASE
            answer.abstained = True
            answer.abstain_reason = "the model said the sources do not answer it"
            timings["total"] = time.perf_counter() - t_all
            answer.timings = _round(timings)
            return answer

        t = time.perf_counter()
        text, used, removed = parse_citations(raw, len(shown))
        answer.text = text
        answer.removed_markers = removed
        answer.citations = [
            Citation(
                marker=m,
                paper_id=shown[m - 1].paper.id,
                title=shown[m - 1].paper.title,
                year=shown[m - 1].paper.year,
                url=shown[m - 1].paper.url,
            )
            for m in sorted(used)
        ]
        sources_text = {
            i: f"{item.paper.title}. {item.paper.abstract}" for i, item in enumerate(shown, 1)
        }
        answer.sentences = check_support(
            split_answer(text),
            sources_text,
            threshold=s.support_threshold,
            embedder=index.embedder,
        )
        claims = [v for v in answer.sentences if v.claim]
        answer.claims = len(claims)
        answer.supported = sum(v.supported for v in claims)
        timings["check"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_all
        answer.timings = _round(timings)
        return answer

    def _abstain(
        self,
        answer: Answer,
        why: str,
        on_delta: Callable[[str], None] | None,
        timings: dict[str, float],
        t_all: float,
    ) -> Answer:
        answer.text = ABSTAIN_PHRASE
        answer.abstained = True
        answer.abstain_reason = why
        if on_delta:
            on_delta(ABSTAIN_PHRASE)
        timings["total"] = time.perf_counter() - t_all
        answer.timings = _round(timings)
        return answer

    def _usage(self, model: str, messages: list[dict[str, str]], completion: Any) -> Usage:
        s = self.settings
        if completion.prompt_tokens is not None and completion.completion_tokens is not None:
            prompt, out, by = completion.prompt_tokens, completion.completion_tokens, "api"
        else:
            prompt = sum(count_tokens(m["content"], s.tokenizer) + 4 for m in messages)
            out, by = count_tokens(completion.text, s.tokenizer), "tiktoken"
        price_in, price_out = s.prices.get(model, (0.0, 0.0))
        cost = (prompt * price_in + out * price_out) / 1_000_000
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=out,
            total_tokens=prompt + out,
            cost_usd=round(cost, 6),
            counted_by=by,  # type: ignore[arg-type]
        )

    def stream(self, question: str, **kwargs: Any) -> Iterator[str | Answer]:
        """Yield text pieces as they are written, then the final Answer."""
        q: queue.Queue[tuple[str, Any]] = queue.Queue()

        def run() -> None:
            try:
                answer = self.ask(question, on_delta=lambda d: q.put(("delta", d)), **kwargs)
                q.put(("answer", answer))
            except BaseException as exc:  # re-raised in the caller's thread
                q.put(("error", exc))

        threading.Thread(target=run, daemon=True).start()
        while True:
            kind, value = q.get()
            if kind == "delta":
                yield value
            elif kind == "answer":
                yield value
                return
            else:
                raise value

    async def aask(self, question: str, **kwargs: Any) -> Answer:
        return await asyncio.to_thread(self.ask, question, **kwargs)

    async def astream(self, question: str, **kwargs: Any) -> AsyncIterator[str | Answer]:
        """Async form of stream(): text pieces, then the final Answer."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(q.put_nowait, (kind, value))

        def run() -> None:
            try:
                put("answer", self.ask(question, on_delta=lambda d: put("delta", d), **kwargs))
            except BaseException as exc:
                put("error", exc)

        task = loop.run_in_executor(None, run)
        while True:
            kind, value = await q.get()
            if kind == "error":
                await task
                raise value
            yield value
            if kind == "answer":
                await task
                return

    def condense(
        self, question: str, history: Sequence[tuple[str, str]], llm: str | None = None
    ) -> str:
        """Rewrite a follow-up into a standalone question (LLM, or a heuristic when extractive)."""
        from rag_papers.chat import condense_heuristic

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

    def chat(self) -> ChatSession:
        from rag_papers.chat import ChatSession

        return ChatSession(self)

    def as_retriever(self) -> Any:
        """A llama-index BaseRetriever over this engine (nodes are papers)."""
        from rag_papers.llamaindex import PaperRetriever

        return PaperRetriever(self)

    def as_query_engine(self, **kwargs: Any) -> Any:
        """A llama-index BaseQueryEngine; its Response carries source nodes and citations."""
        from rag_papers.llamaindex import PaperQueryEngine

        return PaperQueryEngine(self, **kwargs)

    def prompt_hashes(self) -> dict[str, str]:
        s = self.settings
        return {n: load_prompt(n, s.prompts.get(n)).sha for n in ("system", "answer", "condense")}


def _source(r: ScoredPaper) -> Source:
    return Source(
        paper_id=r.paper.id,
        title=r.paper.title,
        year=r.paper.year,
        url=r.paper.url,
        authors=r.paper.authors,
        rank=r.rank,
        score=round(r.score, 6),
        dense=None if r.dense is None else round(r.dense, 6),
        bm25=None if r.bm25 is None else round(r.bm25, 6),
    )


def _round(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in timings.items()}
