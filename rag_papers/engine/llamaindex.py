"""llama-index adapters over PaperQA: a retriever and a query engine (usable as an agent tool).

Both delegate to the engine (retrieval, answering and the citation check stay in one
place) and hand llama-index nodes that are whole papers: ``id_`` is the paper id, the text is
the title and abstract, the metadata carries the bibliographic fields and the scores.
Nothing here reads llama-index's global ``Settings`` (whose defaults are OpenAI models): no
LLM or embedding model of llama-index's is ever built, so nothing goes to the network.

    >>> qe = qa.as_query_engine(k=5)                               # doctest: +SKIP
    >>> r = qe.query("What does Self-RAG add?")                    # doctest: +SKIP
    >>> r.response, r.source_nodes, r.metadata["citations"]        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag_papers.answering.contract import Answer, Source

if TYPE_CHECKING:
    from llama_index.core.prompts.mixin import PromptMixinType

    from rag_papers.core.papers import Paper
    from rag_papers.core.specs import Mode
    from rag_papers.engine.qa import PaperQA
    from rag_papers.retrieval.retriever import Filters

__all__ = ["PaperQueryEngine", "PaperRetriever", "paper_node"]

# Scores and ids say nothing to a model reading the node, and the title opens the text:
# keep them (and empty fields) out of what a model or an embedder reads.
_HIDDEN_FROM_MODELS = {
    "paper_id",
    "title",
    "url",
    "rank",
    "score",
    "dense",
    "bm25",
    "marker",
    "cited",
}


def paper_node(paper: Paper, node_score: float | None, /, **extra: Any) -> NodeWithScore:
    """A paper as a llama-index node: id = paper id, text = title + newline + abstract."""
    metadata: dict[str, Any] = {
        "paper_id": paper.id,
        "title": paper.title,
        "year": paper.year,
        "url": paper.url,
        "authors": list(paper.authors),
        "categories": list(paper.categories),
        "doi": paper.doi,
        **extra,
    }
    hidden = sorted(k for k, v in metadata.items() if k in _HIDDEN_FROM_MODELS or v in (None, []))
    node = TextNode(
        id_=paper.id,
        text=f"{paper.title}\n{paper.abstract}",
        metadata=metadata,
        excluded_llm_metadata_keys=hidden,
        excluded_embed_metadata_keys=list(hidden),
    )
    return NodeWithScore(node=node, score=node_score)


class PaperRetriever(BaseRetriever):
    """A llama-index retriever over PaperQA.search: one node per paper, best first.

    The node score is the engine's fused score (the branch score in dense or bm25 mode);
    the dense cosine and BM25 score are in the metadata.
    """

    def __init__(
        self,
        qa: PaperQA,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        super().__init__(callback_manager=callback_manager or CallbackManager([]))
        self.qa = qa
        self.k = k
        self.mode = mode
        self.filters = filters

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        results = self.qa.search(
            query_bundle.query_str, k=self.k, mode=self.mode, filters=self.filters
        )
        return [
            paper_node(r.paper, r.score, rank=r.rank, score=r.score, dense=r.dense, bm25=r.bm25)
            for r in results
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


class PaperQueryEngine(BaseQueryEngine):
    """A llama-index query engine over PaperQA.ask.

    The Response's ``response`` is the checked answer text; ``source_nodes`` are the papers
    shown to the answerer in marker order (metadata ``marker`` and ``cited``), or the
    closest papers when the engine abstained; ``metadata`` holds ``citations`` (marker,
    paper id, title...) and the whole ``answer`` (Answer.model_dump(mode="json")).
    ``ask_kwargs`` (k, mode, filters, llm) are passed to every ask.
    """

    def __init__(
        self,
        qa: PaperQA,
        *,
        callback_manager: CallbackManager | None = None,
        **ask_kwargs: Any,
    ) -> None:
        super().__init__(callback_manager=callback_manager or CallbackManager([]))
        allowed = {"k", "mode", "filters", "llm"}
        if unknown := set(ask_kwargs) - allowed:
            raise TypeError(f"unknown query engine options: {', '.join(sorted(unknown))}")
        self.qa = qa
        self.ask_kwargs = ask_kwargs

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}  # prompts are the engine's files (rag_papers/prompts), not llama-index's

    def _response(self, answer: Answer) -> Response:
        shown = sorted((s for s in answer.sources if s.marker is not None), key=_marker)
        listed: Sequence[Source] = shown or answer.sources
        papers = self.qa.papers([s.paper_id for s in listed])
        cited = set(answer.cited_ids())
        nodes = [
            paper_node(
                papers[s.paper_id],
                s.score,
                rank=s.rank,
                score=s.score,
                dense=s.dense,
                bm25=s.bm25,
                marker=s.marker,
                cited=s.paper_id in cited,
            )
            for s in listed
            if s.paper_id in papers
        ]
        return Response(
            response=answer.text,
            source_nodes=nodes,
            metadata={
                "citations": [c.model_dump(mode="json") for c in answer.citations],
                "answer": answer.model_dump(mode="json"),
            },
        )

    def _query(self, query_bundle: QueryBundle) -> Response:
        return self._response(self.qa.ask(query_bundle.query_str, **self.ask_kwargs))

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        answer = await self.qa.aask(query_bundle.query_str, **self.ask_kwargs)
        return self._response(answer)

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The papers a query would be answered from (no answer is written)."""
        kw = {k: v for k, v in self.ask_kwargs.items() if k != "llm"}
        return PaperRetriever(self.qa, **kw).retrieve(query_bundle)


def _marker(source: Source) -> int:
    return source.marker or 0
