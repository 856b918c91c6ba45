"""Ingest throughput on a BEIR corpus, three figures in one run (abstracts per second):

1. embed-only: our chunk texts through the embedding model alone (same model, same batch
   size) — the floor an ingest cannot beat;
2. rag_papers end-to-end: parse, chunk, embed, store in Chroma, catalog and BM25 sidecar;
3. plain llama-index: VectorStoreIndex.from_documents over a fresh collection of the same
   Chroma, with the same embedding model (through our BaseEmbedding adapter) and a
   SentenceSplitter set to the same chunk size and overlap (tiktoken counts). It needs
   llama-index-vector-stores-chroma (the dev extra); without it this figure is skipped.

All three share one loaded embedding model, so model loading is in none of the timings.

Two scaling sections replace those three figures when asked for (each over the same corpus
slice, all in one run, ratios against the first entry):

- ``--workers 1,2,4``: embed_workers for the offline model; for each count, embed-only and
  rag_papers end to end (a fresh index each, the model sessions opened before the clock).
- ``--embed-server URL --concurrency 1,4,16``: an OpenAI-compatible /v1/embeddings server
  (``--embed-model`` names its model); for each embed_concurrency, embed-only and end to end.

Usage: python benchmarks/ingest.py [--corpus PATH] [--limit N] [--out BENCH.json]
       [--workers 1,2,4]
       [--embed-server URL [--embed-model M] [--concurrency 1,4,16] [--server-batch N]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rag_papers import PaperQA, load_papers, load_settings
from rag_papers.core.env import prepare_environment

__all__ = ["embed_server_scaling", "llamaindex_ingest", "main", "workers_scaling"]

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared/datasets/scifact/beir/corpus.jsonl"


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="first N papers only")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON")
    parser.add_argument(
        "--workers", type=_counts, default=None, help="embed_workers to compare, e.g. 1,2,4"
    )
    parser.add_argument(
        "--embed-only", action="store_true", help="scaling sections: skip the ingest figure"
    )
    parser.add_argument("--embed-server", default=None, help="OpenAI-compatible base URL (/v1)")
    parser.add_argument("--embed-model", default="embed", help="model name sent to the server")
    parser.add_argument(
        "--concurrency", type=_counts, default=[1, 4, 16], help="embed_concurrency to compare"
    )
    parser.add_argument(
        "--server-batch", type=int, default=None, help="texts per request (default: ours)"
    )
    args = parser.parse_args()
    prepare_environment()

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
    settings = load_settings(index_dir=work / "ours", data_dir=work, auto_ingest_sample=False)
    results: dict[str, object] = {
        "corpus": str(args.corpus),
        "papers": len(papers),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "batch_size": settings.embed_batch_size,
    }
    try:
        if args.workers:
            results["workers"] = workers_scaling(
                corpus, papers, work, args.workers, ingest=not args.embed_only
            )
        if args.embed_server:
            results["embed_server"] = embed_server_scaling(
                corpus,
                papers,
                work,
                args.embed_server,
                args.embed_model,
                args.concurrency,
                args.server_batch,
                ingest=not args.embed_only,
            )
        if not args.workers and not args.embed_server:
            results.update(three_figures(corpus, papers, work, settings))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def _chunk_texts(papers: list[Any], settings: Any) -> list[str]:
    """Exactly the texts our ingest embeds."""
    from rag_papers.ingest.chunking import chunk_paper

    return [
        c.text
        for p in papers
        for c in chunk_paper(p, chunk_tokens=settings.chunk_tokens, overlap=settings.chunk_overlap)
    ]


def _timed_ingest(corpus: Path, settings: Any, embedder: Any, n: int) -> float:
    """Seconds for rag_papers end to end, from the file, through the engine's own door."""
    from rag_papers.store.index import PaperIndex

    with PaperQA(settings, index=PaperIndex(settings, embedder=embedder)) as qa:
        t = time.perf_counter()
        report = qa.ingest([corpus])
        seconds = time.perf_counter() - t
    assert report.added == n, report.to_dict()
    return seconds


def _scaling(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Abstracts/s per row, and each row's speed as a ratio of the first row's."""
    first = dict(rows[0])
    for row in rows:
        for figure in ("embed_only", "ingest"):
            seconds = row.pop(f"{figure}_s")
            if not seconds:  # skipped (--embed-only)
                continue
            row[f"{figure}_s"] = round(seconds, 2)
            row[f"{figure}_papers_per_s"] = round(n / seconds, 2)
            row[f"{figure}_vs_first"] = round(first[f"{figure}_s"] / seconds, 3)
    return rows


def workers_scaling(
    corpus: Path, papers: list[Any], work: Path, counts: list[int], *, ingest: bool = True
) -> list[dict[str, Any]]:
    """embed_workers: embed-only and end to end for each count, a fresh index each."""
    from rag_papers.store.embeddings import MiniLMEmbedder

    rows: list[dict[str, Any]] = []
    for run, workers in enumerate(counts):  # a count may repeat: 1,2,4,1 shows drift
        where = work / f"workers-{run}"
        settings = load_settings(
            index_dir=where / "index",
            data_dir=where,
            auto_ingest_sample=False,
            embed_workers=workers,
        )
        embedder = MiniLMEmbedder(batch_size=settings.embed_batch_size, workers=workers)
        texts = _chunk_texts(papers, settings)
        # Open every session before the clock: embed one batch per worker.
        embedder.embed_documents(texts[: settings.embed_batch_size * workers])
        t, cpu = time.perf_counter(), time.process_time()
        embedder.embed_documents(texts)
        embed_s, embed_cpu = time.perf_counter() - t, time.process_time() - cpu
        ingest_s = _timed_ingest(corpus, settings, embedder, len(papers)) if ingest else 0.0
        rows.append(
            {
                "workers": workers,
                "threads_per_session": embedder.threads,
                "chunks": len(texts),
                # CPU seconds of all threads: on a shared machine, wall time also measures
                # the neighbours; CPU per chunk shows what the split itself costs or saves.
                "embed_only_cpu_s_per_chunk": round(embed_cpu / len(texts), 4),
                "embed_only_s": embed_s,
                "ingest_s": ingest_s,
            }
        )
        print(f"workers={workers}: embed {embed_s:.1f} s, ingest {ingest_s:.1f} s", flush=True)
    return _scaling(rows, len(papers))


def embed_server_scaling(
    corpus: Path,
    papers: list[Any],
    work: Path,
    url: str,
    model: str,
    counts: list[int],
    batch: int | None = None,
    *,
    ingest: bool = True,
) -> list[dict[str, Any]]:
    """embed_concurrency against an OpenAI-compatible embeddings server; ``batch``: texts
    per request (default: the embedder's own)."""
    from rag_papers.store.embeddings import OpenAIEmbedder, make_embedder

    rows: list[dict[str, Any]] = []
    for run, concurrency in enumerate(counts):
        where = work / f"server-{run}"
        settings = load_settings(
            index_dir=where / "index",
            data_dir=where,
            auto_ingest_sample=False,
            embed_backend="openai",
            openai_base_url=url,
            openai_embed_model=model,
            embed_concurrency=concurrency,
            llm_timeout=600.0,  # a small CPU server with every request in flight is slow
            llm_max_retries=0,  # a failure is a result here, not something to hide
        )
        embedder = make_embedder(settings)  # what an ingest with these settings uses
        assert isinstance(embedder, OpenAIEmbedder)
        if batch:
            embedder.batch_size = batch
        texts = _chunk_texts(papers, settings)
        embedder.embed_documents(texts[:2])  # connection up, dimension known
        t = time.perf_counter()
        embedder.embed_documents(texts)
        embed_s = time.perf_counter() - t
        ingest_s = _timed_ingest(corpus, settings, embedder, len(papers)) if ingest else 0.0
        rows.append(
            {
                "concurrency": concurrency,
                "texts_per_request": embedder.batch_size,
                "chunks": len(texts),
                "dimension": embedder.dimension,
                "embed_only_s": embed_s,
                "ingest_s": ingest_s,
            }
        )
        print(f"concurrency={concurrency}: embed {embed_s:.1f} s, ingest {ingest_s:.1f} s")
    return _scaling(rows, len(papers))


def three_figures(corpus: Path, papers: list[Any], work: Path, settings: Any) -> dict[str, object]:
    """embed-only floor, rag_papers end to end, plain llama-index: one loaded model."""
    # Lower layers on purpose: the floor is the chunker and the model alone, and all three
    # figures share one loaded model (handed to the engine's index).
    from rag_papers.store.embeddings import MiniLMEmbedder

    n = len(papers)
    embedder = MiniLMEmbedder(batch_size=settings.embed_batch_size)
    results: dict[str, object] = {}

    # 1. embed-only floor over exactly the texts our ingest embeds.
    texts = _chunk_texts(papers, settings)
    t = time.perf_counter()
    embedder.embed_documents(texts)
    embed_s = time.perf_counter() - t
    results["chunks"] = len(texts)
    results["embed_only_s"] = round(embed_s, 2)

    # 2. rag_papers end to end, from the file, through the engine's own door.
    ours_s = _timed_ingest(corpus, settings, embedder, n)
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
    return results


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
