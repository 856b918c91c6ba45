"""The numbered context shown to the model: best papers first, within a token budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rag_papers.answering.contract import Source
from rag_papers.core.text import encoding, split_sentences

if TYPE_CHECKING:
    from rag_papers.retrieval.retriever import ScoredPaper

__all__ = ["Counter", "build_context", "source_of", "tiktoken_counter"]


Counter = Callable[[Sequence[str]], list[int]]


def tiktoken_counter(tokenizer: str = "cl100k_base") -> Counter:
    """Token counts of texts with a tiktoken encoding (loaded on first use)."""

    def count(texts: Sequence[str]) -> list[int]:
        enc = encoding(tokenizer)
        return [len(enc.encode(t, disallowed_special=())) for t in texts]

    return count


def build_context(
    papers: Sequence[ScoredPaper],
    *,
    budget: int,
    tokenizer: str = "cl100k_base",
    count: Counter | None = None,
) -> tuple[str, list[ScoredPaper]]:
    """Number the papers [1..n] with title, year and abstract, within ``budget`` tokens.

    Papers are added best first; an abstract that would overflow is cut at a sentence
    boundary, and the first paper is always shown, cut if need be. ``count``: token counts
    of texts (default: tiktoken; the engine passes a cached one, store/cached_embedder.py).
    """
    count = count or tiktoken_counter(tokenizer)
    heads = [
        f"[{n}] {item.paper.title}" + (f" ({item.paper.year})" if item.paper.year else "")
        for n, item in enumerate(papers, start=1)
    ]
    # Every block as numbered when all before it fit: counted in one batch.
    costs = [
        c + 2
        for c in count(
            [f"{h}\n{item.paper.abstract}" for h, item in zip(heads, papers, strict=True)]
        )
    ]
    blocks: list[str] = []
    shown: list[ScoredPaper] = []
    used = 0
    for item, head, cost in zip(papers, heads, costs, strict=True):
        p = item.paper
        block = f"{head}\n{p.abstract}"
        if used + cost > budget:
            room = budget - used - count([head])[0] - 4
            if room < 40 and shown:
                break
            kept: list[str] = []
            sentences = split_sentences(p.abstract)
            for sentence, n in zip(sentences, count(sentences), strict=True):
                if n + 1 > room:
                    break
                kept.append(sentence)
                room -= n + 1
            if not kept and shown:
                break
            block = f"{head}\n{' '.join(kept) or p.abstract[:200]}"
            cost = count([block])[0] + 2
            blocks.append(block)
            shown.append(item)
            used += cost
            break
        blocks.append(block)
        shown.append(item)
        used += cost
    return "\n\n".join(blocks), shown


def source_of(r: ScoredPaper) -> Source:
    return Source(
        paper_id=r.paper.id,
        title=r.paper.title,
        year=r.paper.year,
        url=r.paper.url,
        authors=r.paper.authors,
        rank=r.rank,
        score=round(r.score, 6),
        dense=None if r.dense is None else round(r.dense, 6),
        bm25=None if r.bm25 is None else round(r.bm25, 6),
    )
