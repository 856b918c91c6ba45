"""The numbered context shown to the model: best papers first, within a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag_papers.answering.contract import Source
from rag_papers.core.text import encoding, split_sentences

if TYPE_CHECKING:
    from rag_papers.retrieval.retriever import ScoredPaper

__all__ = ["build_context", "source_of"]


def build_context(
    papers: Sequence[ScoredPaper], *, budget: int, tokenizer: str = "cl100k_base"
) -> tuple[str, list[ScoredPaper]]:
    """Number the papers [1..n] with title, year and abstract, within ``budget`` tokens.

    Papers are added best first; an abstract that would overflow is cut at a sentence
    boundary, and the first paper is always shown, cut if need be.
    """
    enc = encoding(tokenizer)
    blocks: list[str] = []
    shown: list[ScoredPaper] = []
    used = 0
    for item in papers:
        p = item.paper
        head = f"[{len(shown) + 1}] {p.title}" + (f" ({p.year})" if p.year else "")
        block = f"{head}\n{p.abstract}"
        cost = len(enc.encode(block, disallowed_special=())) + 2
        if used + cost > budget:
            room = budget - used - len(enc.encode(head, disallowed_special=())) - 4
            if room < 40 and shown:
                break
            kept: list[str] = []
            for sentence in split_sentences(p.abstract):
                n = len(enc.encode(sentence, disallowed_special=())) + 1
                if n > room:
                    break
                kept.append(sentence)
                room -= n
            if not kept and shown:
                break
            block = f"{head}\n{' '.join(kept) or p.abstract[:200]}"
            cost = len(enc.encode(block, disallowed_special=())) + 2
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
