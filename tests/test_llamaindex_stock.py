"""Stock llama-index components over our adapters (issue 10): RetrieverQueryEngine with a
SimilarityPostprocessor, CitationQueryEngine, SubQuestionQueryEngine, QueryEngineTool, and
llama-index MetadataFilters.

Offline and extractive: the only LLM is llama-index's own MockLLM (it echoes the prompt),
outbound connections are refused, and llama-index's global Settings models (OpenAI by
default) must never be resolved.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Settings as LlamaSettings
from llama_index.core import get_response_synthesizer
from llama_index.core.llms.mock import MockLLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.query_engine import (
    CitationQueryEngine,
    RetrieverQueryEngine,
    SubQuestionQueryEngine,
)
from llama_index.core.question_gen.types import BaseQuestionGenerator, SubQuestion
from llama_index.core.schema import MetadataMode, QueryBundle
from llama_index.core.tools import QueryEngineTool, ToolMetadata
from llama_index.core.vector_stores import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from rag_papers import Filters, RagPapersError
from rag_papers.engine.llamaindex import FilterError
from rag_papers.engine.qa import PaperQA

SELF_RAG_Q = "What does Self-RAG add to retrieval-augmented generation?"
SELF_RAG_TITLE = "Self-RAG: Learning to Retrieve, Generate, and Critique through Self-Reflection"
OFF_TOPIC_Q = "What is the boiling point of tungsten?"

# Papers with every bibliographic field (the sample corpus has titles and abstracts only).
CATALOGUED = [
    {
        "id": "2401.10001",
        "title": "Sparse Retrieval for Protein Folding",
        "abstract": "We apply sparse lexical retrieval to protein structure prediction. "
        "Retrieved homologous fragments improve folding accuracy on hard targets. "
        "Recall rises by 12% over dense retrieval baselines.",
        "authors": ["Ada Lovelace", "Alan Turing"],
        "year": 2024,
        "categories": ["q-bio.BM", "cs.IR"],
        "doi": "10.5555/protein.2024.1",
        "url": "https://arxiv.org/abs/2401.10001",
    },
    {
        "id": "2302.10002",
        "title": "Graph Neural Networks for Weather Forecasting",
        "abstract": "A graph neural network forecasts global weather at 0.25 degree "
        "resolution. It beats numerical weather prediction at ten day lead times.",
        "authors": ["Grace Hopper"],
        "year": 2023,
        "categories": ["cs.LG", "physics.ao-ph"],
    },
    {
        "id": "2103.10003",
        "title": "Adaptive Annealing Schedules for Quantum Optimisers",
        "abstract": "We propose adaptive annealing schedules for quantum optimisers. "
        "Experiments on 50 instances show faster convergence than fixed schedules.",
        "authors": ["Richard Feynman", "Ada Lovelace"],
        "year": 2021,
        "categories": ["quant-ph"],
    },
    {
        "id": "2004.10004",
        "title": "Coral Reef Acoustics with Deep Learning",
        "abstract": "Deep networks classify coral reef soundscapes recorded by hydrophones. "
        "Healthy and degraded reefs are told apart with 91% accuracy.",
        "authors": ["Rachel Carson"],
        "year": 2020,
        "categories": ["cs.SD", "q-bio.PE"],
    },
    {
        "id": "1905.10005",
        "title": "Bayesian Calibration of Crop Yield Models",
        "abstract": "We calibrate crop yield simulators with Bayesian inference over field "
        "trials. Calibrated models halve the error of yield forecasts.",
        "authors": ["Ronald Fisher"],
        "year": 2019,
        "categories": ["stat.AP"],
    },
    {
        "id": "2206.10006",
        "title": "Retrieval-Augmented Protein Design",
        "abstract": "A protein language model retrieves related sequences before designing "
        "new proteins. Designed binders express more often than unretrieved designs.",
        "authors": ["Alan Turing"],
        "year": 2022,
        "categories": ["q-bio.BM"],
    },
]
PROTEIN_Q = "How does retrieval help protein structure prediction?"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"network connection attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
    assert LlamaSettings._llm is None and LlamaSettings._embed_model is None


@pytest.fixture
def catalogued_qa(sample_qa: PaperQA, tmp_path: Path) -> PaperQA:
    """The sample index plus six papers with years, authors, categories, DOIs."""
    path = tmp_path / "catalogued.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CATALOGUED), encoding="utf-8")
    assert sample_qa.ingest([path]).added == len(CATALOGUED)
    return sample_qa


def _ids(nodes: Sequence[Any]) -> set[str]:
    return {n.node.node_id for n in nodes}


# --- RetrieverQueryEngine + SimilarityPostprocessor -------------------------------------------
def test_similarity_cutoff_drops_off_topic_papers(sample_qa: PaperQA) -> None:
    """The node score is the dense cosine: a 0.3 cut-off keeps the Self-RAG paper and drops
    every paper for an off-topic question (fused scores put its best paper near the top)."""
    # (response_mode="no_text" would not do: llama-index's NoText reads the global
    # Settings.llm, an OpenAI model.)
    engine = RetrieverQueryEngine.from_args(
        sample_qa.as_retriever(similarity_top_k=5),
        llm=MockLLM(),
        node_postprocessors=[SimilarityPostprocessor(similarity_cutoff=0.3)],
    )
    on_topic = engine.query(SELF_RAG_Q)
    assert on_topic.source_nodes[0].node.metadata["title"] == SELF_RAG_TITLE
    assert all((n.score or 0) >= 0.3 for n in on_topic.source_nodes)
    off_topic = engine.query(OFF_TOPIC_Q)
    assert off_topic.source_nodes == [] and str(off_topic) == "Empty Response"
    async_nodes = asyncio.run(engine.aquery(SELF_RAG_Q)).source_nodes
    assert _ids(async_nodes) == _ids(on_topic.source_nodes)


# --- CitationQueryEngine ----------------------------------------------------------------------
def test_citation_query_engine_reads_title_and_abstract_only(catalogued_qa: PaperQA) -> None:
    engine = CitationQueryEngine(
        catalogued_qa.as_retriever(similarity_top_k=2, filters=Filters(year_min=2022)),
        llm=MockLLM(),
    )
    response = engine.query(PROTEIN_Q)
    # MockLLM answers with the prompt it was given: the numbered sources a model reads.
    prompt = response.response or ""
    assert "Source 1:\nSparse Retrieval for Protein Folding\nWe apply sparse" in prompt
    for leaked in ("paper_id", "2401.10001", "Lovelace", "q-bio", "doi", "dense:", "arxiv.org"):
        assert leaked not in prompt
    # Citation nodes are new nodes (new ids); the paper id stays in the metadata.
    cited = [n.node.metadata for n in response.source_nodes]
    assert {m["paper_id"] for m in cited} <= {"2401.10001", "2206.10006", "2302.10002"}
    assert all(m["year"] >= 2022 for m in cited)


def test_node_views_are_title_and_abstract(catalogued_qa: PaperQA) -> None:
    only = Filters(paper_ids=["2401.10001"])
    [node] = catalogued_qa.as_retriever(k=1, filters=only).retrieve(PROTEIN_Q)
    paper = CATALOGUED[0]
    text = f"{paper['title']}\n{paper['abstract']}"
    assert node.node.get_content(metadata_mode=MetadataMode.LLM) == text
    assert node.node.get_content(metadata_mode=MetadataMode.EMBED) == text
    internal = {"paper_id", "url", "rank", "score", "dense", "bm25", "doi", "authors", "year"}
    assert internal <= set(node.node.excluded_llm_metadata_keys)
    assert internal <= set(node.node.excluded_embed_metadata_keys)
    assert node.node.metadata["authors"] == ["Ada Lovelace", "Alan Turing"]  # still for code


# --- SubQuestionQueryEngine and QueryEngineTool -----------------------------------------------
class _FixedQuestions(BaseQuestionGenerator):
    """Splits every question into the same two sub-questions (no model, no network)."""

    def __init__(self, questions: list[str]) -> None:
        self.questions = questions

    def generate(self, tools: Sequence[ToolMetadata], query: QueryBundle) -> list[SubQuestion]:
        return [SubQuestion(sub_question=q, tool_name=tools[0].name or "") for q in self.questions]

    async def agenerate(
        self, tools: Sequence[ToolMetadata], query: QueryBundle
    ) -> list[SubQuestion]:
        return self.generate(tools, query)

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: Any) -> None:
        pass


def test_sub_question_query_engine_over_the_query_engine_tool(catalogued_qa: PaperQA) -> None:
    questions = [PROTEIN_Q, "How are coral reef soundscapes classified?"]
    tool = QueryEngineTool.from_defaults(
        query_engine=catalogued_qa.as_query_engine(similarity_top_k=3),
        name="papers",
        description="Answers questions about the indexed papers, citing them.",
    )
    engine = SubQuestionQueryEngine(
        question_gen=_FixedQuestions(questions),
        response_synthesizer=get_response_synthesizer(llm=MockLLM(), response_mode="compact"),
        query_engine_tools=[tool],
        verbose=False,
        use_async=False,
    )
    response = engine.query("What do the papers say about proteins and coral reefs?")
    prompt = response.response or ""  # MockLLM echoes the sub-answers it was given
    for question in questions:
        answer = catalogued_qa.ask(question, k=3)
        assert not answer.abstained and answer.text in prompt
    assert {"2401.10001", "2004.10004"} <= _ids(response.source_nodes)


def test_query_engine_tool_over_a_streaming_engine_with_filters(catalogued_qa: PaperQA) -> None:
    only = MetadataFilters(
        filters=[MetadataFilter(key="paper_id", value="2206.10006", operator=FilterOperator.EQ)]
    )
    engine = catalogued_qa.as_query_engine(similarity_top_k=2, streaming=True, filters=only)
    tool = QueryEngineTool.from_defaults(query_engine=engine, name="papers")
    output = tool.call(PROTEIN_Q)
    expected = catalogued_qa.ask(PROTEIN_Q, k=2, filters=Filters(paper_ids=["2206.10006"]))
    assert output.content == expected.text and "[1]" in output.content
    assert _ids(output.raw_output.source_nodes) == {"2206.10006"}
    assert [c["paper_id"] for c in output.raw_output.metadata["citations"]] == ["2206.10006"]


# --- MetadataFilters --------------------------------------------------------------------------
def _filters(*items: MetadataFilter, condition: str = "and") -> MetadataFilters:
    return MetadataFilters(filters=list(items), condition=FilterCondition(condition))


def _f(key: str, op: FilterOperator, value: Any) -> MetadataFilter:
    return MetadataFilter(key=key, operator=op, value=value)


Op = FilterOperator


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (_filters(_f("year", Op.GTE, 2021), _f("year", Op.LT, 2024)), {"2103", "2206", "2302"}),
        (_filters(_f("year", Op.GT, 2022)), {"2302", "2401"}),
        (_f("year", Op.EQ, 2020), {"2004"}),  # one MetadataFilter, not wrapped
        (_filters(_f("paper_id", Op.IN, ["2401.10001", "2004.10004"])), {"2401", "2004"}),
        (_filters(_f("authors", Op.EQ, "turing")), {"2401", "2206"}),
        # Two authors is OR within the condition: resolved against the paper list.
        (_filters(_f("authors", Op.IN, ["Lovelace", "Hopper"])), {"2401", "2103", "2302"}),
        (_filters(_f("categories", Op.EQ, "q-bio.BM")), {"2401", "2206"}),
        (_filters(_f("categories", Op.IN, ["quant-ph", "stat.AP"])), {"2103", "1905"}),
        (_filters(_f("authors", Op.CONTAINS, "Turing"), _f("year", Op.GT, 2023)), {"2401"}),
        (_filters(_f("year", Op.GT, 2024)), set()),
    ],
)
def test_metadata_filters_select_the_right_papers(
    catalogued_qa: PaperQA, filters: Any, expected: set[str]
) -> None:
    nodes = catalogued_qa.as_retriever(similarity_top_k=20, filters=filters).retrieve(PROTEIN_Q)
    assert {n.node.node_id[:4] for n in nodes} == expected


def test_metadata_filters_match_our_filters_and_reach_the_answer(catalogued_qa: PaperQA) -> None:
    ours = catalogued_qa.as_retriever(similarity_top_k=20, filters=Filters(2021, 2023))
    theirs = catalogued_qa.as_retriever(
        similarity_top_k=20, filters=_filters(_f("year", Op.GTE, 2021), _f("year", Op.LTE, 2023))
    )
    assert [n.node.node_id for n in ours.retrieve(PROTEIN_Q)] == [
        n.node.node_id for n in theirs.retrieve(PROTEIN_Q)
    ]
    engine = catalogued_qa.as_query_engine(
        filters=_filters(_f("authors", Op.IN, ["Turing", "Carson"]))
    )
    response = engine.query(PROTEIN_Q)
    assert response.source_nodes and _ids(response.source_nodes) <= {
        "2401.10001",
        "2206.10006",
        "2004.10004",
    }
    assert {c["paper_id"] for c in response.metadata["citations"]} <= _ids(response.source_nodes)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (_filters(_f("year", Op.NE, 2020)), r"'year' NE \(!=\).*not supported for year"),
        (_filters(_f("year", Op.IN, [2020, 2021])), r"'year' IN \(in\)"),
        (_filters(_f("authors", Op.GT, "A")), r"'authors' GT \(>\).*not supported"),
        (_filters(_f("paper_id", Op.NIN, ["x"])), r"'paper_id' NIN \(nin\)"),
        (_filters(_f("venue", Op.EQ, "ACL")), r"'venue' EQ \(==\).*no such key"),
        (_filters(_f("year", Op.EQ, "last year")), r"'year' EQ.*whole number"),
        (
            _filters(_f("year", Op.EQ, 2020), _f("year", Op.EQ, 2021), condition="or"),
            "combined with OR",
        ),
        (_filters(_f("year", Op.EQ, 2020), condition="not"), "combined with NOT"),
        (_filters(_filters(_f("year", Op.EQ, 2020))), "nested"),
    ],
)
def test_unsupported_metadata_filters_are_refused_when_made(
    sample_qa: PaperQA, filters: Any, message: str
) -> None:
    with pytest.raises(FilterError, match=message) as refused:
        sample_qa.as_retriever(filters=filters)
    assert isinstance(refused.value, ValueError) and isinstance(refused.value, RagPapersError)
    with pytest.raises(FilterError, match=message):
        sample_qa.as_query_engine(filters=filters)
