"""llama-index adapters over PaperQA: a retriever and a query engine (usable as a tool).

Both delegate to the engine (retrieval, answering and the citation check stay in one place)
and hand out nodes that are whole papers: ``id_`` is the paper id, the text is the title, a
newline and the abstract. Nothing here reads llama-index's global ``Settings`` models (their
defaults are OpenAI): no llama-index LLM or embedding model is built, nothing goes out.

    >>> qe = qa.as_query_engine(similarity_top_k=5, streaming=True)  # doctest: +SKIP
    >>> r = qe.query("What does Self-RAG add?")                       # doctest: +SKIP
    >>> "".join(r.response_gen), r.source_nodes, r.metadata["citations"]  # doctest: +SKIP

Options: ``similarity_top_k`` (alias ``k``), ``mode``, ``filters``; the query engine also
takes ``llm`` (a spec) and ``streaming``.

Node score: the paper's dense cosine similarity to the query (its best chunk), an absolute
number, so ``SimilarityPostprocessor(similarity_cutoff=0.3)`` means the same for every query.
A paper the dense branch did not return (hybrid mode, found by BM25 alone) scores 0.0; in
``bm25`` mode nothing is embedded and the score is the raw BM25 score (no cosine: a similarity
cut-off means nothing there). Nodes keep the engine's fused order; the fused score, rank,
``dense`` and ``bm25`` are in the metadata. A model (``MetadataMode.LLM``) or an embedder
reads the title and abstract only: every metadata key is excluded from both views.

Filters: ``rag_papers.Filters``, or llama-index ``MetadataFilters`` (AND) or one
``MetadataFilter``: ``year`` with EQ, GT, GTE, LT, LTE; ``authors`` (a case-insensitive part
of a name, like ``--author``) and ``categories`` (exact) with EQ, IN, ANY, CONTAINS;
``paper_id`` (or ``ids``) with EQ, IN. OR, NOT, nested filters, other keys and operators raise
FilterError when the retriever or engine is made. Several authors or categories (IN with
several values, or two conditions) are resolved against the paper list at each query.

Events: ``query`` sends QUERY, RETRIEVE (PaperQA.search) and SYNTHESIZE (PaperQA.ask) to
callback handlers (LlamaDebugHandler), and an LLM event around the answer model's turn when
an LLM writes; instrumentation handlers get query, retrieval and synthesize spans and events.
Streaming: ``response_gen`` yields the text as PaperQA.stream writes it; at its end
``source_nodes`` become the papers shown to the answerer and ``metadata`` holds ``citations``
and the checked ``answer`` (its text lacks any marker outside the shown set).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import llama_index.core.instrumentation as instrument
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response import schema as responses
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation.events import synthesis
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from rag_papers.answering.contract import Answer, Source
from rag_papers.core.errors import FilterError
from rag_papers.engine.streaming import CancelToken

if TYPE_CHECKING:
    from llama_index.core.prompts.mixin import PromptMixinType

    from rag_papers.core.papers import Paper
    from rag_papers.core.specs import Mode
    from rag_papers.engine.qa import PaperQA
    from rag_papers.retrieval.retriever import Filters, ScoredPaper

__all__ = ["FilterError", "PaperQueryEngine", "PaperRetriever", "paper_node", "translate_filters"]

dispatcher = instrument.get_dispatcher(__name__)
Op = FilterOperator
_KEYS = {"year": "year", "author": "authors", "authors": "authors", "category": "categories"}
_KEYS |= {"categories": "categories"} | dict.fromkeys(("paper_id", "paper_ids", "id", "ids"), "ids")
_YEAR_OPS, _LIST_OPS = (Op.EQ, Op.GT, Op.GTE, Op.LT, Op.LTE), (Op.EQ, Op.IN, Op.ANY, Op.CONTAINS)
_OPERATORS = dict(year=_YEAR_OPS, authors=_LIST_OPS, categories=_LIST_OPS, ids=(Op.EQ, Op.IN))


@dataclass(slots=True)
class _FilterPlan:
    """llama-index filters in the engine's terms. Each authors/categories entry is one
    condition (all must hold) whose values are alternatives (any may match)."""

    year_min: int | None = None
    year_max: int | None = None
    authors: list[list[str]] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    ids: set[str] | None = None

    def _matches(self, paper: Paper) -> bool:
        names, cats = [a.lower() for a in paper.authors], {c.lower() for c in paper.categories}
        ok = all(any(v.lower() in n for v in alt for n in names) for alt in self.authors)
        return ok and all(any(v.lower() in cats for v in alt) for alt in self.categories)

    def to_filters(self, qa: PaperQA) -> Filters:
        from rag_papers import Filters  # the public API: this module never imports retrieval

        ids, author, category = self.ids, None, None
        conds = (self.authors, self.categories)
        if any(len(c) > 1 or any(len(alt) != 1 for alt in c) for c in conds):
            # Our Filters hold one author and one category: more is resolved to paper ids.
            found = {p.id for p in qa.list_papers().papers if self._matches(p)}
            ids = found if ids is None else ids & found
        else:
            author = self.authors[0][0] if self.authors else None
            category = self.categories[0][0] if self.categories else None
        paper_ids = None if ids is None else sorted(ids)
        years = {"year_min": self.year_min, "year_max": self.year_max}
        return Filters(**years, author=author, category=category, paper_ids=paper_ids)


def translate_filters(filters: MetadataFilters | MetadataFilter) -> _FilterPlan:
    """llama-index filters in the engine's terms; FilterError names what cannot be applied."""
    items: Sequence[Any] = [filters]
    if isinstance(filters, MetadataFilters):
        items = filters.filters
        condition = FilterCondition(filters.condition or FilterCondition.AND)
        if condition is FilterCondition.NOT or (len(items) > 1 and condition.value != "and"):
            raise FilterError(
                f"llama-index filters combined with {condition.name}: the engine applies "
                "filters combined with AND only"
            )
    plan = _FilterPlan()
    for f in items:
        if isinstance(f, MetadataFilters):
            raise FilterError(
                "nested llama-index MetadataFilters are not supported: give one flat list "
                "of MetadataFilter combined with AND"
            )
        op = FilterOperator(f.operator)
        where = f"llama-index filter {f.key!r} {op.name} ({op.value}) {f.value!r}"
        key = _KEYS.get(f.key)
        if key is None:
            raise FilterError(f"{where}: no such key (year, authors, categories, paper_id)")
        if op not in _OPERATORS[key]:
            known = ", ".join(o.name for o in _OPERATORS[key])
            raise FilterError(f"{where}: operator {op.name} not supported for {key} ({known})")
        if key == "year":
            _add_year(plan, op, f.value, where)
            continue
        values = f.value if isinstance(f.value, list) else [f.value]
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            raise FilterError(f"{where}: expected text, or a list of text for IN")
        if key == "ids":
            given = {str(v) for v in values}
            plan.ids = given if plan.ids is None else plan.ids & given
        else:
            getattr(plan, key).append([str(v) for v in values])
    return plan


def _add_year(plan: _FilterPlan, op: FilterOperator, value: Any, where: str) -> None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int | float) or isinstance(value, bool) or value != int(value):
        raise FilterError(f"{where}: a year is a whole number")
    year = int(value)
    low = {Op.EQ: year, Op.GT: year + 1, Op.GTE: year}.get(op)
    high = {Op.EQ: year, Op.LT: year - 1, Op.LTE: year}.get(op)
    if low is not None:
        plan.year_min = low if plan.year_min is None else max(plan.year_min, low)
    if high is not None:
        plan.year_max = high if plan.year_max is None else min(plan.year_max, high)


def _prepare(filters: Any) -> Filters | _FilterPlan | None:
    if isinstance(filters, MetadataFilters | MetadataFilter):
        return translate_filters(filters)
    if filters is not None and not hasattr(filters, "empty"):
        kind = type(filters).__name__
        raise TypeError(f"filters: expected rag_papers.Filters or MetadataFilters, got {kind}")
    return filters  # type: ignore[no-any-return]


def _top_k(similarity_top_k: int | None, k: int | None) -> int | None:
    if similarity_top_k is not None and k is not None and similarity_top_k != k:
        raise TypeError(f"similarity_top_k={similarity_top_k} and k={k}: give one of them")
    top = similarity_top_k if similarity_top_k is not None else k
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"similarity_top_k must be a whole number >= 1, got {top!r}")
    return top


def paper_node(paper: Paper, node_score: float | None, /, **extra: Any) -> NodeWithScore:
    """A paper as a llama-index node: id = paper id, text = title + newline + abstract.
    The metadata is for code: models and embedders read the text alone."""
    metadata: dict[str, Any] = {"paper_id": paper.id, "title": paper.title, "url": paper.url}
    metadata |= {"year": paper.year, "authors": paper.authors, "categories": paper.categories}
    metadata |= {"doi": paper.doi, **extra}
    text = f"{paper.title}\n{paper.abstract}"
    hidden = sorted(metadata)
    node = TextNode(id_=paper.id, text=text, metadata=metadata, excluded_llm_metadata_keys=hidden)
    node.excluded_embed_metadata_keys = list(hidden)
    return NodeWithScore(node=node, score=node_score)


class PaperRetriever(BaseRetriever):
    """A llama-index retriever over PaperQA.search: one node per paper, best first."""

    def __init__(
        self,
        qa: PaperQA,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | MetadataFilters | MetadataFilter | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        super().__init__(callback_manager=callback_manager or CallbackManager([]))
        self.qa, self.mode, self.filters = qa, mode, filters
        self.similarity_top_k = _top_k(similarity_top_k, k)
        self._filters = _prepare(filters)  # a filter we cannot apply fails here, not at query

    def engine_filters(self) -> Filters | None:
        """The filters in the engine's terms, for one query."""
        if isinstance(self._filters, _FilterPlan):
            return self._filters.to_filters(self.qa)
        return self._filters

    def node(self, item: ScoredPaper | Source, paper: Paper, **extra: Any) -> NodeWithScore:
        """A result as a node; its score is described in the module docstring."""
        score = item.dense
        if score is None:
            bm25_only = (self.mode or self.qa.settings.retrieval_mode) == "bm25"
            score = (item.bm25 or 0.0) if bm25_only else 0.0
        kw = {"rank": item.rank, "score": item.score, "dense": item.dense, "bm25": item.bm25}
        return paper_node(paper, score, **kw, **extra)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query, k, filters = query_bundle.query_str, self.similarity_top_k, self.engine_filters()
        results = self.qa.search(query, k=k, mode=self.mode, filters=filters)
        return [self.node(r, r.paper) for r in results]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


class _LLMTurn:
    """The answer model's turn as a callback LLM event: it starts when the sources are
    numbered (the model is called next) and ends with the answer. The engine may start it
    from its worker thread, hence the explicit parent."""

    def __init__(self, manager: CallbackManager, parent_id: str, model: str | None) -> None:
        self.manager, self.parent_id, self.model = manager, parent_id, model
        self.event_id: str | None = None

    def start(self, _markers: dict[int, str]) -> None:
        if self.model is not None:
            payload: dict[str, Any] = {EventPayload.SERIALIZED: {"model": self.model}}
            start = self.manager.on_event_start
            self.event_id = start(CBEventType.LLM, payload, parent_id=self.parent_id)

    def end(self, answer: Answer) -> None:
        if self.event_id is not None:
            payload: dict[str, Any] = {EventPayload.COMPLETION: answer.text}
            self.manager.on_event_end(CBEventType.LLM, payload=payload, event_id=self.event_id)
            self.event_id = None


class PaperQueryEngine(BaseQueryEngine):
    """A llama-index query engine over PaperQA.ask (PaperQA.stream with ``streaming``).

    The Response's ``response`` is the checked answer text; ``source_nodes`` are the papers
    shown to the answerer in marker order (metadata ``marker`` and ``cited``), or the
    closest papers when the engine abstained; ``metadata`` holds ``citations`` (marker,
    paper id, title...) and the whole ``answer`` (Answer.model_dump(mode="json")).
    """

    def __init__(
        self,
        qa: PaperQA,
        *,
        similarity_top_k: int | None = None,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | MetadataFilters | MetadataFilter | None = None,
        llm: str | None = None,
        streaming: bool = False,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        manager = callback_manager or CallbackManager([])
        super().__init__(callback_manager=manager)
        self.qa, self.llm, self.streaming = qa, llm, streaming
        self.retriever = PaperRetriever(
            qa, similarity_top_k=similarity_top_k, k=k, mode=mode, filters=filters
        )
        self.retriever.callback_manager = manager

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}  # prompts are the engine's files (rag_papers/prompts), not llama-index's

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The papers a query would be answered from (no answer is written)."""
        return self.retriever.retrieve(query_bundle)

    async def aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await self.retriever.aretrieve(query_bundle)

    # --- the answer -------------------------------------------------------------------------
    def _ask_kwargs(self, turn: _LLMTurn) -> dict[str, Any]:
        r = self.retriever
        kw = {"k": r.similarity_top_k, "mode": r.mode, "filters": r.engine_filters()}
        return {**kw, "llm": self.llm, "on_sources": turn.start}

    def _finish(self, answer: Answer, response: Any) -> Any:
        """Fill a Response (a stream's, at its end) from the checked answer, in place."""
        shown = sorted((s for s in answer.sources if s.marker is not None), key=_marker)
        listed: Sequence[Source] = shown or answer.sources
        papers, cited = self.qa.papers([s.paper_id for s in listed]), set(answer.cited_ids())
        response.source_nodes[:] = [
            self.retriever.node(s, papers[s.paper_id], marker=s.marker, cited=s.paper_id in cited)
            for s in listed
            if s.paper_id in papers
        ]
        citations = [c.model_dump(mode="json") for c in answer.citations]
        response.metadata.update(citations=citations, answer=answer.model_dump(mode="json"))
        return response

    def _answer(self, question: str, nodes: list[NodeWithScore], turn: _LLMTurn) -> Any:
        if not self.streaming:
            answer = self.qa.ask(question, **self._ask_kwargs(turn))
            turn.end(answer)
            return self._finish(answer, responses.Response(answer.text, [], {}))
        cancel = CancelToken()
        stream = self.qa.stream(question, cancel=cancel, **self._ask_kwargs(turn))
        response = responses.StreamingResponse(_empty(), source_nodes=list(nodes), metadata={})

        def texts() -> Generator[str, None, None]:
            try:
                for item in stream:
                    if isinstance(item, str):
                        yield item
                    else:
                        turn.end(item)
                        self._finish(item, response)
            finally:
                cancel.cancel()  # a consumer that stops stops the answer (no-op once done)

        response.response_gen = texts()
        response.cancel = cancel  # type: ignore[attr-defined]
        return response

    # --- events: QUERY > RETRIEVE, SYNTHESIZE > LLM -----------------------------------------
    def _query(self, query_bundle: QueryBundle) -> Any:
        payload: dict[str, Any] = {EventPayload.QUERY_STR: query_bundle.query_str}
        with self.callback_manager.event(CBEventType.QUERY, payload=payload) as event:
            response = self._synthesize(query_bundle, self.retrieve(query_bundle))
            event.on_end(payload={EventPayload.RESPONSE: response})
        return response

    @dispatcher.span
    def _synthesize(self, query_bundle: QueryBundle, nodes: list[NodeWithScore]) -> Any:
        dispatcher.event(synthesis.SynthesizeStartEvent(query=query_bundle))
        event_id = str(uuid.uuid4())
        payload: dict[str, Any] = {EventPayload.QUERY_STR: query_bundle.query_str}
        payload[EventPayload.NODES] = nodes
        with self.callback_manager.event(CBEventType.SYNTHESIZE, payload, event_id) as event:
            backend = self.qa.backend(self.llm)
            model = backend.model_id if backend else None
            turn = _LLMTurn(self.callback_manager, event_id, model)
            response = self._answer(query_bundle.query_str, nodes, turn)
            event.on_end(payload={EventPayload.RESPONSE: response})
        dispatcher.event(synthesis.SynthesizeEndEvent(query=query_bundle, response=response))
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> Any:
        # The engine blocks: the query runs in a worker thread (to_thread copies the context,
        # so the events nest as in query()); a stream's pieces are pulled the same way.
        response = await asyncio.to_thread(self._query, query_bundle)
        if not isinstance(response, responses.StreamingResponse):
            return response
        pulled, nodes, metadata = _pull(response), response.source_nodes, response.metadata
        return responses.AsyncStreamingResponse(pulled, nodes, metadata)  # filled at the end


def _empty() -> Generator[str, None, None]:
    yield from ()


async def _pull(response: responses.StreamingResponse) -> AsyncGenerator[str, None]:
    texts, cancel = response.response_gen, response.cancel  # type: ignore[attr-defined]
    try:
        while (text := await asyncio.to_thread(next, texts, None)) is not None:
            yield text
    finally:
        cancel.cancel()


def _marker(source: Source) -> int:
    return source.marker or 0
