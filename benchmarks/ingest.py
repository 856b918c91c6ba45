"""Ingest throughput on a BEIR corpus, three figures in one run (abstracts per second):

1. embed-only: our chunk texts through the embedding model alone (same model, same batch
   size) — the floor an ingest cannot beat;
2. rag_papers end-to-end: parse, chunk, embed, store in Chroma, catalog and BM25 sidecar;
3. plain llama-index: VectorStoreIndex.from_documents over a fresh collection of the same
   Chroma, with the same embedding model (through our BaseEmbedding adapter) and a
   SentenceSplitter set to the same chunk size and overlap (tiktoken counts). It needs
   llama-index-vector-stores-chroma (the dev extra); without it this figure is skipped.

All three share one loaded embedding model, so model loading is in none of the timings.

Usage: python benchmarks/ingest.py [--corpus PATH] [--limit N] [--out BENCH.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rag_papers import PaperQA, load_papers, load_settings
from rag_papers.core.env import prepare_environment

__all__ = ["llamaindex_ingest", "main"]

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared/datasets/scifact/beir/corpus.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="first N papers only")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON")
    args = parser.parse_args()
    prepare_environment()

    # Lower layers on purpose: the floor is the chunker and the model alone, and all three
    # figures share one loaded model (handed to the engine's index).
    from rag_papers.ingest.chunking import chunk_paper
    from rag_papers.store.embeddings import MiniLMEmbedder
    from rag_papers.store.index import PaperIndex

    work = Path(tempfile.mkdtemp(prefix="rag-bench-ingest-"))
    corpus = args.corpus
    papers = load_papers(corpus).papers
    if args.limit:
        papers = papers[: args.limit]
        corpus = work / "corpus.jsonl"
        corpus.write_text(
            "".join(
                json.dumps({"_id": p.id, "title": p.title, "text": p.abstract}) + "\n"
                for p in papers
            )
        )
    n = len(papers)
    settings = load_settings(index_dir=work / "ours", data_dir=work, auto_ingest_sample=False)
    embedder = MiniLMEmbedder(batch_size=settings.embed_batch_size)
    results: dict[str, object] = {
        "corpus": str(args.corpus),
        "papers": n,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}",
        "batch_size": settings.embed_batch_size,
    }

    # 1. embed-only floor over exactly the texts our ingest embeds.
    texts = [
        c.text
        for p in papers
        for c in chunk_paper(p, chunk_tokens=settings.chunk_tokens, overlap=settings.chunk_overlap)
    ]
    t = time.perf_counter()
    embedder.embed_documents(texts)
    embed_s = time.perf_counter() - t
    results["chunks"] = len(texts)
    results["embed_only_s"] = round(embed_s, 2)

    # 2. rag_papers end to end, from the file, through the engine's own door.
    with PaperQA(settings, index=PaperIndex(settings, embedder=embedder)) as qa:
        t = time.perf_counter()
        report = qa.ingest([corpus])
        ours_s = time.perf_counter() - t
    assert report.added == n, report.to_dict()
    results["ours_s"] = round(ours_s, 2)
    results["embed_only_papers_per_s"] = round(n / embed_s, 2)
    results["ours_papers_per_s"] = round(n / ours_s, 2)
    results["ours_vs_floor"] = round(embed_s / ours_s, 3)

    # 3. plain llama-index over the same Chroma and model (optional: a dev-only dependency).
    try:
        import llama_index.vector_stores.chroma  # noqa: F401
    except ImportError as exc:
        print(f"skipping the llama-index figure: {exc} (install the dev extra)")
    else:
        llama_s, llama_chunks = llamaindex_ingest(corpus, work / "llama", settings, embedder)
        results["llamaindex_s"] = round(llama_s, 2)
        results["llamaindex_chunks"] = llama_chunks
        results["llamaindex_papers_per_s"] = round(n / llama_s, 2)
        results["ours_vs_llamaindex"] = round(llama_s / ours_s, 3)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


def llamaindex_ingest(corpus: Path, path: Path, settings: Any, embedder: Any) -> tuple[float, int]:
    """Seconds for VectorStoreIndex.from_documents over a fresh Chroma collection at
    ``path`` (same model, same chunk size and overlap), and the chunks it stored."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from rag_papers.core.text import encoding
    from rag_papers.store.embeddings import as_llama_index_embedding

    client = chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False)
    )
    collection = client.get_or_create_collection(
        "llamaindex", metadata={"hnsw:space": "cosine"}, embedding_function=None
    )
    store = StorageContext.from_defaults(
        vector_store=ChromaVectorStore(chroma_collection=collection)
    )
    enc = encoding(settings.tokenizer)
    splitter = SentenceSplitter(
        chunk_size=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
        tokenizer=lambda s: enc.encode(s, disallowed_special=()),
    )
    t = time.perf_counter()
    docs = [
        Document(
            text=f"{p.title}\n{p.abstract}",
            doc_id=p.id,
            metadata={"paper_id": p.id},
            excluded_embed_metadata_keys=["paper_id"],
            excluded_llm_metadata_keys=["paper_id"],
        )
        for p in load_papers(corpus).papers
    ]
    VectorStoreIndex.from_documents(
        docs,
        storage_context=store,
        embed_model=as_llama_index_embedding(embedder),
        transformations=[splitter],
    )
    return time.perf_counter() - t, collection.count()


if __name__ == "__main__":
    main()
