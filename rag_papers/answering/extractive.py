"""Extractive answers (no LLM configured): the most relevant sentences, each cited."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_papers.answering.contract import ABSTAIN_PHRASE
from rag_papers.core.text import split_sentences

if TYPE_CHECKING:
    from rag_papers.retrieval.retriever import ScoredPaper

__all__ = ["extractive_answer"]


def extractive_answer(
    question_vector: np.ndarray,
    shown: Sequence[ScoredPaper],
    embedder: Any,
    *,
    n_sentences: int,
    min_similarity: float | None = None,
) -> str:
    """The sentences of the shown papers most similar to the question, each cited.

    Returns ABSTAIN_PHRASE when no sentence reaches ``min_similarity`` (cosine): the papers
    are on topic but none of them says anything close to what was asked.

    Candidates are every sentence of the top papers, scored by cosine similarity to the
    question plus a small bonus for the paper's retrieval rank (so the best paper leads).
    """
    candidates: list[tuple[float, int, int, str]] = []
    all_sentences = [
        (i, j, s)
        for i, p in enumerate(shown)
        for j, s in enumerate(split_sentences(p.paper.abstract))
    ]
    if not all_sentences:
        return ABSTAIN_PHRASE
    vectors = embedder.embed_documents([s for _, _, s in all_sentences])
    sims = vectors @ question_vector
    if min_similarity is not None and float(np.max(sims)) < min_similarity:
        return ABSTAIN_PHRASE
    for (i, j, s), sim in zip(all_sentences, sims, strict=True):
        candidates.append((float(sim) + 0.05 / (1 + i), i, j, s))
    candidates.sort(key=lambda c: -c[0])
    picked = candidates[:n_sentences]
    # Keep each paper's sentences together, papers in rank order, sentences in text order.
    picked.sort(key=lambda c: (c[1], c[2]))
    parts = []
    for _, i, _, s in picked:
        s = s.rstrip()
        end = s[-1] if s[-1] in ".!?" else "."
        body = s[:-1] if s[-1] in ".!?" else s
        parts.append(f"{body} [{i + 1}]{end}")
    return " ".join(parts)
