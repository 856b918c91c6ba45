"""Warm retrieval latency (p50/p95 per mode) and process RSS, at 5k and at ~100k abstracts.

The 5k index is SciFact (5,183 abstracts) ingested with the real pipeline. The ~100k index
is built from it by replication with perturbation, because embedding 100k abstracts takes
hours on 2 cores: every base paper is copied R times under a new id; each copy's text drops
~10% of its words at random (so BM25 statistics differ per copy) and each chunk vector is the
base chunk's vector plus Gaussian noise (sigma 0.02 per dimension, re-normalised), so the
copies spread around their base as near-duplicates do. Copies are written through the same
Chroma upsert, catalog and BM25 sidecar as a real ingest.

Latency is measured through PaperQA.search, what every front end calls. Only building the
~100k index reaches into the store (PaperIndex): copying stored vectors has no public door.

Usage: python benchmarks/query.py --base-index DIR [--collection C] [--replicas 19]
       [--queries N] [--skip-100k] [--work DIR] [--out results.json]
(--base-index: an index of SciFact made by `rag-papers --index-dir DIR --collection C ingest
 .../scifact/beir/corpus.jsonl`.)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag_papers import MODES, Mode, PaperQA, load_settings
from rag_papers.core.env import prepare_environment

__all__ = ["latency", "main", "replicate", "rss_mb"]

QUERIES = Path(__file__).resolve().parents[2] / "shared/datasets/scifact/beir/queries.jsonl"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latency(qa: PaperQA, queries: list[str], mode: Mode) -> dict[str, float]:
    """Warm p50/p95 milliseconds of qa.search(q, k=10, mode=mode) over the queries."""
    for q in queries[:5]:  # warm-up: caches, HNSW pages, BM25 arrays
        qa.search(q, k=10, mode=mode)
    times = []
    for q in queries:
        t = time.perf_counter()
        qa.search(q, k=10, mode=mode)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "n": len(times),
    }


def replicate(base: Any, target: Any, replicas: int, seed: int = 0) -> int:
    """Copy every base paper `replicas` times with perturbed text and vectors."""
    from rag_papers import Paper

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    col = base.collection
    got = col.get(include=["embeddings", "documents", "metadatas"])
    by_paper: dict[str, list[tuple[int, str, np.ndarray, dict[str, Any]]]] = {}
    for _cid, doc, meta, vec in zip(
        got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
    ):
        by_paper.setdefault(str(meta["paper_id"]), []).append(
            (int(meta["chunk_index"]), doc, np.asarray(vec, dtype=np.float32), dict(meta))
        )
    papers = base.catalog.get_many(by_paper)
    target.collection  # noqa: B018 - create the target collection
    draft = target.new_draft()  # the next generation of the target's catalog (store/state.py)

    def drop(text: str) -> str:
        words = text.split()
        return " ".join(w for w in words if rng.random() > 0.1) or text

    total = 0
    batch_ids: list[str] = []
    batch_docs: list[str] = []
    batch_meta: list[dict[str, Any]] = []
    batch_vecs: list[np.ndarray] = []
    rows: list[tuple[Paper, int]] = []

    def flush() -> None:
        if not batch_ids:
            return
        target._collection.upsert(
            ids=list(batch_ids),
            embeddings=np.stack(batch_vecs),
            documents=list(batch_docs),
            metadatas=list(batch_meta),
        )
        draft.catalog.upsert(rows)
        for lst in (batch_ids, batch_docs, batch_meta, batch_vecs, rows):
            lst.clear()

    for r in range(replicas + 1):
        for pid, chunks in by_paper.items():
            base_paper = papers[pid]
            new_id = pid if r == 0 else f"{pid}-r{r}"
            abstract = base_paper.abstract if r == 0 else drop(base_paper.abstract)
            rows.append(
                (
                    Paper(
                        id=new_id,
                        title=base_paper.title,
                        abstract=abstract,
                        year=base_paper.year,
                        authors=base_paper.authors,
                    ),
                    len(chunks),
                )
            )
            for idx, doc, vec, meta in sorted(chunks, key=lambda c: c[0]):
                if r:
                    vec = vec + nrng.normal(0, 0.02, vec.shape).astype(np.float32)
                    vec /= np.linalg.norm(vec)
                    doc = drop(doc)
                meta = dict(meta, paper_id=new_id)
                if idx == 0:
                    meta["abstract"] = abstract
                batch_ids.append(f"{new_id}#{idx}")
                batch_docs.append(doc)
                batch_meta.append(meta)
                batch_vecs.append(vec)
            total += 1
            if len(batch_ids) >= 4000:
                flush()
    flush()
    from rag_papers.store.writelock import writer_lock

    with writer_lock(target.settings, target.client, target.logical, target.files_root) as lease:
        target.publish(draft, lease)  # builds BM25, uploads it to a server, switches
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-index", type=Path, required=True)
    parser.add_argument("--collection", default="papers")
    parser.add_argument("--replicas", type=int, default=19)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--skip-100k", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="where to build the big index")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    prepare_environment()

    # The replica builder reads and writes stored vectors: a lower layer than PaperQA on purpose.
    from rag_papers.store.index import PaperIndex

    queries = [json.loads(line)["text"] for line in QUERIES.open()][: args.queries]
    settings = load_settings(
        index_dir=args.base_index, collection=args.collection, auto_ingest_sample=False
    )
    base = PaperIndex(settings)
    qa = PaperQA(settings, index=base)
    results: dict[str, Any] = {"queries": len(queries), "rss_start_mb": round(rss_mb(), 1)}
    size = qa.count()
    results[f"{size}"] = {
        "papers": size,
        "chunks": qa.stats()["chunks"],
        **{mode: latency(qa, queries, mode) for mode in MODES},
        "rss_mb": round(rss_mb(), 1),
    }
    print(json.dumps(results, indent=2), flush=True)
    if not args.skip_100k:
        work = args.work or Path(tempfile.mkdtemp(prefix="rag-bench-100k-"))
        big_settings = settings.model_copy(update={"index_dir": work})
        big = PaperIndex(big_settings, embedder=base.embedder)
        expected = size * (args.replicas + 1)
        build_s = None
        if big.catalog.count() != expected:  # reuse a --work index built by an earlier run
            if big.catalog.count():
                raise SystemExit(f"{work} holds a partial or different index: pass an empty --work")
            t = time.perf_counter()
            replicate(base, big, args.replicas)
            build_s = round(time.perf_counter() - t, 1)
        big.close()
        # Reopened as a user would find it; the base index's loaded model is shared.
        big_qa = PaperQA(big_settings, index=PaperIndex(big_settings, embedder=base.embedder))
        n = big_qa.count()
        results[f"{n}"] = {
            "papers": n,
            "chunks": big_qa.stats()["chunks"],
            "build_s": build_s,
            **{m: latency(big_qa, queries, m) for m in MODES},
            "rss_mb": round(rss_mb(), 1),
        }
        big_qa.close()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    qa.close()
    results["rss_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
