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


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse every connection off this machine, so a hidden OpenAI default would fail
    loudly (loopback stays open for the canned OpenAI-compatible server)."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(real: Any) -> Any:
        def guarded(self: socket.socket, address: Any) -> Any:
            host = address[0] if isinstance(address, tuple) else address
            if host not in LOOPBACK:
                raise AssertionError(f"network connection attempted: {address!r}")
            return real(self, address)

        return guarded

    monkeypatch.setattr(socket.socket, "connect", refuse(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse(connect_ex))
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
    # The node score is the absolute dense cosine (the fused score stays in the metadata).
    dense = [n.node.metadata["dense"] for n in nodes]
    assert [n.score for n in nodes] == [0.0 if d is None else d for d in dense]
    assert top.score is not None and top.score > 0.4 and top.node.metadata["score"] != top.score
    # What a model reads: the text without ids and scores, and the title only once.
    llm_text = top.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "paper_id" not in llm_text and "dense" not in llm_text
    assert llm_text.count(SELF_RAG_TITLE) == 1


def test_retriever_options_and_async(sample_qa: PaperQA) -> None:
    retriever = PaperRetriever(sample_qa, k=2, mode="bm25")
    nodes = asyncio.run(retriever.aretrieve(SELF_RAG_Q))
    assert len(nodes) == 2
    assert all(n.node.metadata["dense"] is None for n in nodes)  # bm25 only
    assert [n.score for n in nodes] == [n.node.metadata["bm25"] for n in nodes]  # said so
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


# --- options, scores, streaming, async, events (issue 10) ------------------------------------
OFF_TOPIC_Q = "What is the boiling point of tungsten?"


def test_similarity_top_k_and_its_k_alias(sample_qa: PaperQA) -> None:
    assert len(sample_qa.as_retriever(similarity_top_k=3).retrieve(SELF_RAG_Q)) == 3
    assert len(sample_qa.as_retriever(k=2).retrieve(SELF_RAG_Q)) == 2
    with pytest.raises(TypeError, match="similarity_top_k=3 and k=2"):
        sample_qa.as_retriever(similarity_top_k=3, k=2)
    with pytest.raises(ValueError, match="similarity_top_k"):
        sample_qa.as_retriever(similarity_top_k=0)
    response = sample_qa.as_query_engine(similarity_top_k=2).query(SELF_RAG_Q)
    assert response.response == sample_qa.ask(SELF_RAG_Q, k=2).text
    assert 1 <= len(response.source_nodes) <= 2


def test_node_score_is_the_absolute_dense_cosine(sample_qa: PaperQA) -> None:
    """The fused score is relative to the query (an off-topic query's best paper scored 1.0
    in weighted fusion); the node score is the cosine, so cut-offs mean the same everywhere."""
    on = sample_qa.as_retriever(similarity_top_k=3).retrieve(SELF_RAG_Q)
    off = sample_qa.as_retriever(similarity_top_k=3).retrieve(OFF_TOPIC_Q)
    assert on[0].score is not None and on[0].score > 0.4
    assert max(n.get_score() for n in off) < 0.2
    for node in on + off:
        assert node.score == (node.node.metadata["dense"] or 0.0)
    engine_nodes = sample_qa.as_query_engine(similarity_top_k=3).query(SELF_RAG_Q).source_nodes
    assert all(n.score == (n.node.metadata["dense"] or 0.0) for n in engine_nodes)


def test_streaming_query_engine_yields_the_answer_then_fills_sources(sample_qa: PaperQA) -> None:
    from llama_index.core.base.response.schema import StreamingResponse

    engine = sample_qa.as_query_engine(similarity_top_k=4, streaming=True)
    response = engine.query(SELF_RAG_Q)
    assert isinstance(response, StreamingResponse)
    assert response.source_nodes  # the retrieved papers, before any text
    pieces = list(response.response_gen)
    expected = sample_qa.ask(SELF_RAG_Q, k=4)
    assert pieces and "".join(pieces) == expected.text
    # At the end: the papers shown to the answerer, in marker order, and the checked answer.
    assert [n.node.metadata["marker"] for n in response.source_nodes] == [
        s.marker for s in sorted(expected.sources, key=lambda s: s.marker or 0) if s.marker
    ]
    assert response.metadata is not None and response.metadata["answer"]["text"] == expected.text
    assert response.metadata["citations"][0]["title"] == SELF_RAG_TITLE
    # An abstention streams the fixed phrase.
    from rag_papers import ABSTAIN_PHRASE

    assert str(engine.query(OFF_TOPIC_Q)) == ABSTAIN_PHRASE


def test_async_query_retrieve_and_stream(sample_qa: PaperQA) -> None:
    from llama_index.core.base.response.schema import AsyncStreamingResponse

    engine = sample_qa.as_query_engine(similarity_top_k=3)
    expected = sample_qa.ask(SELF_RAG_Q, k=3).text

    async def run() -> tuple[Any, Any, str, Any]:
        response = await engine.aquery(SELF_RAG_Q)
        nodes = await engine.aretrieve(QueryBundle(SELF_RAG_Q))
        streaming = sample_qa.as_query_engine(similarity_top_k=3, streaming=True)
        stream = await streaming.aquery(SELF_RAG_Q)
        assert isinstance(stream, AsyncStreamingResponse)
        text = "".join([piece async for piece in stream.async_response_gen()])
        return response, nodes, text, stream

    response, nodes, text, stream = asyncio.run(run())
    assert response.response == expected and text == expected
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in response.source_nodes]
    assert stream.metadata["answer"]["text"] == expected and stream.source_nodes


def _instrumentation_events() -> tuple[Any, Any]:
    """An instrumentation event handler on the root dispatcher (and how to remove it)."""
    import llama_index.core.instrumentation as instrument
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from pydantic import Field

    class Collect(BaseEventHandler):
        names: list[str] = Field(default_factory=list)

        def handle(self, event: Any, **kwargs: Any) -> None:
            self.names.append(event.class_name())

    root = instrument.get_dispatcher()
    handler = Collect()
    root.add_event_handler(handler)
    return handler, lambda: root.event_handlers.remove(handler)


def test_query_events_reach_debug_and_instrumentation_handlers(sample_qa: PaperQA) -> None:
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

    debug = LlamaDebugHandler(print_trace_on_end=False)
    engine = sample_qa.as_query_engine(k=3, callback_manager=CallbackManager([debug]))
    collected, remove = _instrumentation_events()
    try:
        response = engine.query(SELF_RAG_Q)
    finally:
        remove()
    kinds = [e.event_type for e in debug.get_events()]
    for kind in (CBEventType.QUERY, CBEventType.RETRIEVE, CBEventType.SYNTHESIZE):
        assert kinds.count(kind) == 2, kinds  # a start and an end each
    assert CBEventType.LLM not in kinds  # extractive: no model wrote the answer
    retrieved = debug.get_event_pairs(CBEventType.RETRIEVE)[0][1].payload
    assert retrieved is not None
    assert [n.node.node_id for n in retrieved["nodes"]][:1] == [response.source_nodes[0].node_id]
    for name in ("QueryStartEvent", "RetrievalStartEvent", "RetrievalEndEvent"):
        assert name in collected.names
    for name in ("SynthesizeStartEvent", "SynthesizeEndEvent", "QueryEndEvent"):
        assert name in collected.names
    # The trace nests: synthesize (and retrieve) under the query.
    query_id = debug.get_event_pairs(CBEventType.QUERY)[0][0].id_
    children = set(engine.callback_manager.trace_map.get(query_id, []))
    assert {p[0].id_ for p in debug.get_event_pairs(CBEventType.SYNTHESIZE)} <= children


def test_llm_event_brackets_the_answer_models_turn(sample_settings: Any) -> None:
    """With an LLM (a canned OpenAI-compatible server on loopback), the callback handler
    also sees one LLM event, under SYNTHESIZE, ending with the model's answer."""
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
    from servers import CannedServer, Reply

    from rag_papers.core.settings import load_settings

    text = (
        "Self-RAG trains a single language model that retrieves passages on demand and "
        "reflects on them with reflection tokens [1]."
    )
    with CannedServer() as canned:
        canned.default = Reply(text=text)
        settings = load_settings(
            index_dir=sample_settings.index_dir,
            data_dir=sample_settings.data_dir,
            llm="openai:canned-model",
            answer_style="free",
            openai_base_url=canned.url,
            llm_max_retries=0,
        )
        with PaperQA(settings) as qa:
            debug = LlamaDebugHandler(print_trace_on_end=False)
            manager = CallbackManager([debug])
            response = qa.as_query_engine(similarity_top_k=3, callback_manager=manager).query(
                SELF_RAG_Q
            )
            streamed = qa.as_query_engine(similarity_top_k=3, streaming=True).query(SELF_RAG_Q)
            streamed_text = "".join(streamed.response_gen)
    assert response.metadata["answer"]["mode"] == "llm"
    [(start, end)] = debug.get_llm_inputs_outputs()
    assert start.payload["serialized"] == {"model": "canned-model"}
    assert end.payload["completion"] == response.response == text
    synthesize_id = debug.get_event_pairs(CBEventType.SYNTHESIZE)[0][0].id_
    assert start.id_ in manager.trace_map[synthesize_id]
    assert streamed_text == text and streamed.metadata["answer"]["text"] == text
