"""Hybrid retrieval: dense (Chroma) + BM25, fused, collapsed to papers, filtered identically.

Fusion is computed here rather than with llama-index's QueryFusionRetriever or ranx:
both branches must first be collapsed to papers and share one filter, and ranx's fusion
works on whole runs (and costs seconds to import). ranx is used offline, to tune weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rag_papers.core.papers import Paper
from rag_papers.core.specs import Mode
from rag_papers.core.text import split_sentences

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings
    from rag_papers.store.index import PaperIndex

__all__ = [
    "Filters",
    "Mode",
    "Retriever",
    "ScoredPaper",
    "best_sentences",
    "fuse",
]


@dataclass(slots=True)
class Filters:
    """Metadata filters; every given condition must hold. Applied to both branches."""

    year_min: int | None = None
    year_max: int | None = None
    author: str | None = None  # case-insensitive substring of any author
    category: str | None = None  # exact category, e.g. cs.CL
    paper_ids: list[str] | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.year_min is not None
            or self.year_max is not None
            or self.author
            or self.category
            or self.paper_ids is not None
        )

    @classmethod
    def parse_years(cls, spec: str | None) -> tuple[int | None, int | None]:
        """'2023:2025', '2023:', ':2024' or '2024' -> (min, max)."""
        if not spec:
            return None, None
        lo, sep, hi = spec.partition(":")
        try:
            low = int(lo) if lo.strip() else None
            high = (int(hi) if hi.strip() else None) if sep else low
        except ValueError:
            raise ValueError(f"year range {spec!r}: expected YEAR, FROM:TO, FROM: or :TO") from None
        return low, high

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


@dataclass(slots=True)
class ScoredPaper:
    paper: Paper
    score: float  # fused score (or the branch score in single-branch modes)
    rank: int = 0
    dense: float | None = None  # best chunk cosine similarity
    bm25: float | None = None
    best_sentence: str | None = None  # filled by PaperQA.search(sentences=True)
    best_sentence_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.paper.id,
            "title": self.paper.title,
            "year": self.paper.year,
            "url": self.paper.url,
            "rank": self.rank,
            "score": round(self.score, 6),
            "dense": None if self.dense is None else round(self.dense, 6),
            "bm25": None if self.bm25 is None else round(self.bm25, 6),
        }


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo < 1e-12:
        return {k: 1.0 for k in scores}
    return {k: (v - lo) / (hi - lo) for k, v in scores.items()}


def fuse(
    dense: dict[str, float],
    lexical: dict[str, float],
    *,
    method: Literal["rrf", "weighted"],
    dense_weight: float = 0.5,
    rrf_k: int = 60,
) -> dict[str, float]:
    """Fuse two paper->score maps: RRF over ranks, or min-max normalised weighted sum."""
    if method == "rrf":
        out: dict[str, float] = {}
        for run in (dense, lexical):
            ranked = sorted(run, key=run.__getitem__, reverse=True)
            for rank, pid in enumerate(ranked, start=1):
                out[pid] = out.get(pid, 0.0) + 1.0 / (rrf_k + rank)
        return out
    nd, nl = _minmax(dense), _minmax(lexical)
    return {
        pid: dense_weight * nd.get(pid, 0.0) + (1.0 - dense_weight) * nl.get(pid, 0.0)
        for pid in set(nd) | set(nl)
    }


class Retriever:
    """Retrieves papers for a question from a PaperIndex, per the settings."""

    def __init__(self, index: PaperIndex, settings: Settings) -> None:
        self.index = index
        self.settings = settings

    def _allowed(self, filters: Filters | None) -> set[str] | None:
        if filters is None or filters.empty:
            return None
        return self.index.catalog.filter_ids(
            year_min=filters.year_min,
            year_max=filters.year_max,
            author=filters.author,
            category=filters.category,
            ids=filters.paper_ids,
        )

    @staticmethod
    def _where(filters: Filters | None, allowed: set[str] | None) -> dict[str, Any] | None:
        if filters is None or filters.empty:
            return None
        conds: list[dict[str, Any]] = []
        if filters.year_min is not None:
            conds.append({"year": {"$gte": filters.year_min}})
        if filters.year_max is not None:
            conds.append({"year": {"$lte": filters.year_max}})
        if filters.author or filters.category or filters.paper_ids is not None:
            # Substring and list conditions are resolved in the catalog, then pushed as ids.
            conds.append({"paper_id": {"$in": sorted(allowed or {"\x00none"})}})
        return conds[0] if len(conds) == 1 else {"$and": conds}

    def retrieve(
        self,
        query: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        filters: Filters | None = None,
        query_vector: np.ndarray | None = None,
    ) -> list[ScoredPaper]:
        s = self.settings
        k = k or s.top_k
        mode = mode or s.retrieval_mode
        allowed = self._allowed(filters)
        if allowed is not None and not allowed:
            return []

        dense_scores: dict[str, float] = {}
        if mode in ("dense", "hybrid"):
            vec = (
                query_vector if query_vector is not None else self.index.embedder.embed_query(query)
            )
            for hit in self.index.dense_search(vec, s.candidates, self._where(filters, allowed)):
                if hit.paper_id not in dense_scores:
                    dense_scores[hit.paper_id] = hit.score  # hits come best first

        lexical: dict[str, float] = {}
        if mode in ("bm25", "hybrid"):
            lexical = dict(self.index.bm25.search(query, s.candidates, allowed))

        if mode == "dense":
            fused = dense_scores
        elif mode == "bm25":
            fused = lexical
        else:
            fused = fuse(
                dense_scores, lexical, method=s.fusion, dense_weight=s.dense_weight, rrf_k=s.rrf_k
            )
        ranked = sorted(fused, key=lambda pid: (-fused[pid], pid))
        results: list[ScoredPaper] = []
        start = 0
        while len(results) < k and start < len(ranked):
            # Papers in Chroma but not (yet) in the catalog (an ingest that has not published)
            # are skipped, never guessed; the next ones in line take their places.
            part = ranked[start : start + k - len(results)]
            start += len(part)
            papers = self.index.papers(part)
            results += [
                ScoredPaper(
                    paper=papers[pid],
                    score=fused[pid],
                    rank=0,
                    dense=dense_scores.get(pid),
                    bm25=lexical.get(pid),
                )
                for pid in part
                if pid in papers
            ]
        for rank, item in enumerate(results, start=1):
            item.rank = rank
        return results


def best_sentences(
    query_vector: np.ndarray,
    papers: Sequence[ScoredPaper],
    embedder: Any,
    *,
    per_paper: int = 1,
) -> list[list[tuple[str, float]]]:
    """For each paper, its sentences most similar to the query (one embedding batch in all)."""
    sentence_lists = [split_sentences(p.paper.abstract) or [p.paper.abstract] for p in papers]
    flat = [s for sl in sentence_lists for s in sl]
    if not flat:
        return [[] for _ in papers]
    sims = embedder.embed_documents(flat) @ query_vector
    out: list[list[tuple[str, float]]] = []
    pos = 0
    for sl in sentence_lists:
        scored = [(s, float(sims[pos + i])) for i, s in enumerate(sl)]
        pos += len(sl)
        out.append(sorted(scored, key=lambda x: -x[1])[:per_paper])
    return out
