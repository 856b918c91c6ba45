"""The answer pipeline as named steps: retrieve -> gate -> context -> generate -> check.

``PaperQA.ask`` runs them in order; the calibration script and the tests call the steps
one by one instead of re-implementing them. Each step reads its thresholds from Settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rag_papers.answering.citations import MarkerFilter, is_abstention, parse_citations
from rag_papers.answering.context import build_context, source_of
from rag_papers.answering.contract import ABSTAIN_PHRASE, Answer, Citation, Usage
from rag_papers.answering.evidence import Evidence, asks_for_one_paper, assess
from rag_papers.answering.extractive import ExtractiveOptions, extractive_answer
from rag_papers.answering.grounded import (
    SourceText,
    grounded_schema,
    parse_grounded,
    render_claims,
    settle_claims,
    verify_claims,
)
from rag_papers.answering.prompts import load_prompt
from rag_papers.answering.support import check_support, split_answer
from rag_papers.answering.usage import count_usage
from rag_papers.engine.steps import Context, Generated, Retrieved, abstain, cut_off, rounded
from rag_papers.store.cached_embedder import cached_counter, index_embedder

if TYPE_CHECKING:
    import numpy as np

    from rag_papers.answering.llms import Generation, LLMBackend
    from rag_papers.core.settings import Settings
    from rag_papers.core.specs import Mode
    from rag_papers.retrieval.retriever import Filters
    from rag_papers.store.embeddings import Embedder
    from rag_papers.store.index import PaperIndex

__all__ = ["AnswerPipeline", "Context", "Generated", "Retrieved"]

# Room left in the model's window for the system prompt, the question and message framing.
PROMPT_OVERHEAD_TOKENS = 400
# The context is never cut below this many tokens, however small the window.
MIN_CONTEXT_TOKENS = 200


class AnswerPipeline:
    """The steps of one answer over an open index with one backend (None: extractive)."""

    def __init__(self, settings: Settings, index: PaperIndex, backend: LLMBackend | None) -> None:
        self.settings = settings
        self.index = index
        self.backend = backend
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        """The index's embedder behind the embedding cache (store/cached_embedder.py):
        the model is loaded on the first text the cache does not hold, not before."""
        if self._embedder is None:
            self._embedder = index_embedder(self.index)
        return self._embedder

    @property
    def model(self) -> str:
        return self.backend.model_id if self.backend else "extractive"

    @property
    def grounded(self) -> bool:
        """Whether the LLM answers as claims with verbatim quotes (settings.answer_style)."""
        if self.backend is None:
            return False
        style = self.settings.answer_style
        return style == "grounded" or (
            style == "auto" and getattr(self.backend, "prefers_grounded", False)
        )

    # --- 1. retrieve ------------------------------------------------------------------------
    def retrieve(
        self,
        query: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | None = None,
    ) -> Retrieved:
        from rag_papers.retrieval.retriever import Retriever

        out = Retrieved(query=query, results=[], embed=self.embedder.embed_query)
        dense = (mode or self.settings.retrieval_mode) != "bm25"
        out.results = Retriever(self.index, self.settings).retrieve(
            query, k=k, mode=mode, filters=filters, query_vector=out.vector if dense else None
        )
        return out

    # --- 2. gate ----------------------------------------------------------------------------
    def gate(self, retrieved: Retrieved) -> str | None:
        """Why to abstain before answering, or None: nothing or only weak matches found, or
        the best abstracts do not hold what the question asks for (answering/evidence.py)."""
        s = self.settings
        if not retrieved.results:
            return "nothing retrieved"
        best = retrieved.best_dense
        if best is not None and best < s.abstain_threshold:
            return f"weak retrieval (best similarity {best:.2f} < {s.abstain_threshold})"
        evidence = self.evidence(retrieved)
        best = best if best is not None else 1.0
        if evidence.unseen_technical and best < s.unseen_subject_threshold:
            terms = ", ".join(evidence.unseen_technical)
            return f"the papers never mention {terms} (best similarity {best:.2f})"
        if len(evidence.unseen) >= 2 and best < s.unseen_terms_threshold:
            terms = ", ".join(evidence.unseen)
            return f"the papers never mention {terms} (best similarity {best:.2f})"
        if (
            asks_for_one_paper(retrieved.query)
            and not retrieved.branches_agree
            and best < s.disagreement_threshold
        ):
            return (
                "no paper stands out: the closest by meaning and by words differ "
                f"(best similarity {best:.2f})"
            )
        if evidence.ask is not None and not evidence.ask_answered:
            return f"no retrieved abstract states the {evidence.ask.phrase or 'number'} asked for"
        return None

    def evidence(self, retrieved: Retrieved) -> Evidence:
        """What the best retrieved abstracts hold of the question's ask and subject."""
        s = self.settings
        texts = [
            f"{r.paper.title}. {r.paper.abstract}" for r in retrieved.results[: s.evidence_papers]
        ]
        embedder = self.embedder

        def similarity(sentences: list[str]) -> Any:
            return embedder.embed_documents(sentences) @ retrieved.vector

        return assess(
            retrieved.query,
            texts,
            self.index.bm25.vocabulary,
            similarity=similarity,
            min_similarity=s.ask_similarity,
        )

    # --- 3. context -------------------------------------------------------------------------
    def context(self, retrieved: Retrieved) -> Context:
        s = self.settings
        window = self.backend.context_window if self.backend else None
        budget = s.prompt_budget
        if window is not None:
            room = window - s.max_tokens - PROMPT_OVERHEAD_TOKENS
            budget = min(budget, max(room, MIN_CONTEXT_TOKENS))
        text, shown = build_context(
            retrieved.results, budget=budget, tokenizer=s.tokenizer, count=cached_counter(s)
        )
        return Context(text=text, shown=shown)

    # --- 4. generate ------------------------------------------------------------------------
    def generate(
        self,
        retrieved: Retrieved,
        context: Context,
        *,
        on_delta: Callable[[str], None] | None = None,
        generation: Generation | None = None,
    ) -> Generated:
        if self.backend is None:
            return self._extract(retrieved, context, on_delta)
        if self.grounded:
            return self._ground(retrieved, context, on_delta, generation)
        s = self.settings
        system = load_prompt("system", s.prompts.get("system")).render(
            abstain_phrase=ABSTAIN_PHRASE
        )
        user = load_prompt("answer", s.prompts.get("answer")).render(
            sources=context.text, question=retrieved.query
        )
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        sink = None
        flt = MarkerFilter(len(context.shown))
        if on_delta is not None:

            def sink(delta: str) -> None:
                if text := flt.feed(delta):
                    on_delta(text)

        completion = self.backend.complete(messages, on_delta=sink, generation=generation)
        if on_delta is not None and (rest := flt.flush()):
            on_delta(rest)
        out = Generated(
            raw=completion.text,
            usage=count_usage(s, self.model, messages, completion),
            truncated=cut_off(completion.finish_reason),
        )
        if is_abstention(completion.text):
            out.abstain_reason = "the model said the sources do not answer it"
        return out

    def _ground(
        self,
        retrieved: Retrieved,
        context: Context,
        on_delta: Callable[[str], None] | None,
        generation: Generation | None = None,
    ) -> Generated:
        """Claims with quotes as JSON; only claims with a quote found in its source stay.
        Nothing streams until the quotes are checked: the verified prose goes out at once."""
        assert self.backend is not None
        s = self.settings
        system = load_prompt("grounded_system", s.prompts.get("grounded_system")).render()
        user = load_prompt("grounded", s.prompts.get("grounded")).render(
            sources=context.text, question=retrieved.query
        )
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        schema = grounded_schema(len(context.shown))
        if generation is not None:  # a stop string would cut the JSON: the caller cuts prose
            generation = replace(generation, stop=())
        completion = self.backend.complete(messages, schema=schema, generation=generation)
        reply = parse_grounded(completion.text)
        sources = [
            SourceText(m, item.paper.id, item.paper.title, item.paper.abstract)
            for m, item in enumerate(context.shown, start=1)
        ]
        grounding = verify_claims(reply, sources)
        settle_claims(
            grounding,
            context.source_texts(),
            threshold=s.support_threshold,
            embedder=self.embedder,
            question_vector=retrieved.vector,
            relevance_threshold=s.relevance_threshold,
        )
        out = Generated(
            raw=render_claims(grounding.claims),
            usage=count_usage(s, self.model, messages, completion),
            grounding=grounding,
            truncated=cut_off(completion.finish_reason),
        )
        if not reply.answerable or not reply.claims:
            out.abstain_reason = (
                f"the model's reply could not be read: {reply.problem}"
                if reply.problem and not reply.claims
                else "the model said the sources do not answer it"
            )
        elif not grounding.claims:
            n = len(reply.claims)
            out.abstain_reason = (
                f"none of the model's {n} claim{'s' if n != 1 else ''} had a quote "
                "found in the abstracts"
                if not any(d.reason.startswith("does not bear") for d in grounding.dropped)
                else "no verified claim of the model's bears on the question"
            )
        elif on_delta is not None:
            on_delta(out.raw)
        return out

    def _extract(
        self,
        retrieved: Retrieved,
        context: Context,
        on_delta: Callable[[str], None] | None,
    ) -> Generated:
        s = self.settings
        raw = extractive_answer(
            retrieved.query,
            retrieved.vector,
            context.shown,
            self.embedder,
            ExtractiveOptions.from_settings(s),
        )
        if raw == ABSTAIN_PHRASE:
            why = (
                "no sentence of the retrieved abstracts is close to the question "
                f"(similarity < {s.abstain_sentence_threshold})"
            )
            return Generated(raw=raw, usage=Usage(counted_by="none"), abstain_reason=why)
        if on_delta:
            on_delta(raw)
        return Generated(raw=raw, usage=Usage(counted_by="none"))

    # --- 5. check ---------------------------------------------------------------------------
    def check(
        self,
        answer: Answer,
        generated: Generated,
        context: Context,
        question_vector: np.ndarray | None = None,
    ) -> Answer:
        """Map markers to papers (dropping any outside the shown set) and judge each sentence."""
        shown = context.shown
        text, used, removed = parse_citations(generated.raw, len(shown))
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
        sources_text = context.source_texts()
        grounding = generated.grounding
        if grounding is not None and grounding.verdicts is not None:
            # A grounded answer was judged claim by claim when its claims were settled.
            answer.sentences = grounding.verdicts
        else:
            sentences = (
                [(render_claims([c]), [q.marker for q in c[1]]) for c in grounding.claims]
                if grounding is not None
                else split_answer(text)
            )
            answer.sentences = check_support(
                sentences,
                sources_text,
                threshold=self.settings.support_threshold,
                embedder=self.embedder,
                question_vector=question_vector,
                relevance_threshold=self.settings.relevance_threshold,
            )
        if grounding is not None:
            for verdict, (_, quotes) in zip(answer.sentences, grounding.claims, strict=True):
                verdict.markers = list(dict.fromkeys(verdict.markers))
                verdict.quotes = quotes
        claims = [v for v in answer.sentences if v.claim]
        answer.claims = len(claims)
        answer.supported = sum(v.supported for v in claims)
        return answer

    # --- all of it --------------------------------------------------------------------------
    def run(
        self,
        question: str,
        *,
        standalone_question: str | None = None,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | None = None,
        on_delta: Callable[[str], None] | None = None,
        on_sources: Callable[[dict[int, str]], None] | None = None,
        generation: Generation | None = None,
    ) -> Answer:
        timings: dict[str, float] = {}
        t_all = t = time.perf_counter()
        answer = Answer(
            question=question,
            text="",
            mode="llm" if self.backend else "extractive",
            model=self.model,
            settings_fingerprint=self.settings.fingerprint(),
            standalone_question=standalone_question,
        )

        def lap(name: str) -> None:
            nonlocal t
            now = time.perf_counter()
            timings[name] = now - t
            t = now

        retrieved = self.retrieve(standalone_question or question, k=k, mode=mode, filters=filters)
        answer.sources = [source_of(r) for r in retrieved.results]
        lap("retrieve")
        if why := self.gate(retrieved):
            return abstain(answer, why, on_delta, timings, t_all)

        context = self.context(retrieved)
        for marker, item in enumerate(context.shown, start=1):
            answer.sources[item.rank - 1].marker = marker
        if on_sources is not None:
            on_sources(context.markers())
        lap("context")

        generated = self.generate(retrieved, context, on_delta=on_delta, generation=generation)
        answer.usage = generated.usage
        answer.truncated = generated.truncated
        if generated.grounding is not None:
            answer.grounded = True
            answer.dropped_claims = generated.grounding.dropped
        lap("generate")
        if generated.abstain_reason:
            # The extractive and grounded answerers have not written anything yet; a
            # free-text model's own phrase has.
            streamed = self.backend is not None and generated.grounding is None
            return abstain(
                answer, generated.abstain_reason, None if streamed else on_delta, timings, t_all
            )

        self.check(answer, generated, context, retrieved.vector)
        lap("check")
        timings["total"] = time.perf_counter() - t_all
        answer.timings = rounded(timings)
        return answer
