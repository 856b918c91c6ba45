"""Use rag_papers inside llama-index: a query engine, a retriever and a QueryEngineTool.

Run: python examples/llamaindex_query_engine.py [INDEX_DIR]
"""

import sys

from llama_index.core.tools import QueryEngineTool

from rag_papers import PaperQA, load_settings

index_dir = sys.argv[1] if len(sys.argv) > 1 else None
with PaperQA(load_settings(index_dir=index_dir)) as qa:
    engine = qa.as_query_engine()
    response = engine.query("What is HippoRAG 2 built on?")
    print(response.response)
    for node in response.source_nodes:
        print(f"{node.score:.3f}  {node.node.metadata['title']}")
    print("citations:", response.metadata["citations"])

    nodes = qa.as_retriever().retrieve("sparse attention for long contexts")
    print([n.node.metadata["title"] for n in nodes[:3]])

    tool = QueryEngineTool.from_defaults(
        query_engine=engine, name="papers", description="Answers questions from paper abstracts."
    )
    print(tool.call("What does Self-RAG add?").content[:200])
