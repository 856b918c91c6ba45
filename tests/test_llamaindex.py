"""llama-index adapters: PaperRetriever, PaperQueryEngine, QueryEngineTool, a ReAct agent.

Every test runs with outbound connections refused, and checks that llama-index's global
Settings (whose defaults are OpenAI) were never resolved.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Settings as LlamaSettings
from llama_index.core.base.response.schema import Response
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import MetadataMode, QueryBundle
from llama_index.core.tools import QueryEngineTool

from rag_papers.engine.llamaindex import PaperQueryEngine, PaperRetriever
from rag_papers.engine.qa import PaperQA

SELF_RAG_Q = "What does Self-RAG add to retrieval-augmented generation?"
SELF_RAG_TITLE = "Self-RAG: Learning to Retrieve, Generate, and Critique through Self-Reflection"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse every outbound connection, so a hidden OpenAI default would fail loudly."""

    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"network connection attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
    # Reading Settings.llm would build an OpenAI LLM; the private fields say whether it was.
    assert LlamaSettings._llm is None and LlamaSettings._embed_model is None


def test_retriever_returns_the_self_rag_paper_first(sample_qa: PaperQA) -> None:
    retriever = sample_qa.as_retriever()
    assert isinstance(retriever, PaperRetriever)
    nodes = retriever.retrieve(SELF_RAG_Q)
    assert len(nodes) == sample_qa.settings.top_k
    top = nodes[0]
    assert top.node.metadata["title"] == SELF_RAG_TITLE
    assert top.node.node_id == top.node.metadata["paper_id"]
    assert top.node.get_content().startswith(SELF_RAG_TITLE + "\n")
    assert {"paper_id", "title", "year", "url", "authors", "dense", "bm25"} <= set(
        top.node.metadata
    )
    scores = [n.score for n in nodes]
    assert scores == sorted(scores, reverse=True)
    # What a model reads: the text without ids and scores, and the title only once.
    llm_text = top.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "paper_id" not in llm_text and "dense" not in llm_text
    assert llm_text.count(SELF_RAG_TITLE) == 1


def test_retriever_options_and_async(sample_qa: PaperQA) -> None:
    retriever = PaperRetriever(sample_qa, k=2, mode="bm25")
    nodes = asyncio.run(retriever.aretrieve(SELF_RAG_Q))
    assert len(nodes) == 2
    assert all(n.node.metadata["dense"] is None for n in nodes)  # bm25 only
    assert nodes[0].node.metadata["title"] == SELF_RAG_TITLE


def test_query_engine_response_carries_sources_and_citations(sample_qa: PaperQA) -> None:
    engine = sample_qa.as_query_engine(k=4)
    assert isinstance(engine, PaperQueryEngine)
    response = engine.query(SELF_RAG_Q)
    assert isinstance(response, Response)
    answer = response.metadata["answer"]
    assert response.response == answer["text"] and "[1]" in response.response
    citations = response.metadata["citations"]
    assert citations and citations[0]["title"] == SELF_RAG_TITLE
    # Source nodes: the papers shown to the answerer, in marker order, cited ones flagged.
    markers = [n.node.metadata["marker"] for n in response.source_nodes]
    assert markers == list(range(1, len(markers) + 1)) and len(markers) <= 4
    by_id = {n.node.node_id: n for n in response.source_nodes}
    for c in citations:
        node = by_id[c["paper_id"]]
        assert node.node.metadata["cited"] and node.node.metadata["marker"] == c["marker"]
    uncited = [
        n for n in response.source_nodes if n.node.node_id not in {c["paper_id"] for c in citations}
    ]
    assert all(not n.node.metadata["cited"] for n in uncited)
    assert answer["mode"] == "extractive" and answer["claims"] >= 1
    # retrieve() on the engine gives the same papers, best first.
    retrieved = engine.retrieve(QueryBundle(SELF_RAG_Q))
    assert [n.node.node_id for n in retrieved] == [n.node.node_id for n in response.source_nodes]


def test_query_engine_abstains_with_the_closest_papers(sample_qa: PaperQA) -> None:
    response = sample_qa.as_query_engine().query("What is the boiling point of tungsten?")
    assert response.metadata["answer"]["abstained"]
    assert response.metadata["citations"] == []
    assert response.source_nodes  # the closest papers, none of them cited
    assert not any(n.node.metadata["cited"] for n in response.source_nodes)


def test_query_engine_rejects_unknown_options(sample_qa: PaperQA) -> None:
    with pytest.raises(TypeError, match="temperature"):
        PaperQueryEngine(sample_qa, temperature=0.3)


def test_query_engine_tool_call_and_acall(sample_qa: PaperQA) -> None:
    engine = sample_qa.as_query_engine()
    tool = QueryEngineTool.from_defaults(
        query_engine=engine,
        name="papers",
        description="Answers questions about the indexed papers, citing them.",
    )
    assert tool.metadata.name == "papers"
    output = tool.call(SELF_RAG_Q)
    expected = sample_qa.ask(SELF_RAG_Q).text
    assert output.content == expected
    assert output.raw_output.metadata["citations"][0]["title"] == SELF_RAG_TITLE
    async_output = asyncio.run(tool.acall(input=SELF_RAG_Q))
    assert async_output.content == expected


class _ScriptedReActLLM(CustomLLM):
    """A canned model for the agent loop (the agent machinery and our tool are real):
    first it calls the tool, then it answers with the tool's observation."""

    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        if self.calls == 1:
            text = (
                "Thought: I need the papers tool.\nAction: papers\n"
                f'Action Input: {{"input": "{SELF_RAG_Q}"}}'
            )
        else:
            observation = prompt.rsplit("Observation:", 1)[1].strip().split("\n")[0]
            text = f"Thought: I can answer without using any more tools.\nAnswer: {observation}"
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        text = self.complete(prompt, formatted).text
        yield CompletionResponse(text=text, delta=text)


# llama-index's agent workflow trips pydantic deprecation warnings of its own.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_query_engine_tool_in_a_react_agent(sample_qa: PaperQA) -> None:
    from llama_index.core.agent.workflow import ReActAgent, ToolCallResult

    tool = QueryEngineTool.from_defaults(
        query_engine=sample_qa.as_query_engine(),
        name="papers",
        description="Answers questions about the indexed papers, citing them.",
    )
    agent = ReActAgent(tools=[tool], llm=_ScriptedReActLLM())

    async def run() -> tuple[str, list[ToolCallResult]]:
        handler = agent.run(user_msg="What does Self-RAG add?")
        calls = [ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
        return str(await handler), calls

    final, calls = asyncio.run(run())
    assert [c.tool_name for c in calls] == ["papers"]
    engine_text = calls[0].tool_output.raw_output.response
    assert SELF_RAG_TITLE in {
        c["title"] for c in calls[0].tool_output.raw_output.metadata["citations"]
    }
    assert final == engine_text.split("\n")[0]
