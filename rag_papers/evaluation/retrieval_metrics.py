"""Retrieval metrics over the ranked papers of each row, computed by ranx."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rag_papers.evaluation.base import Metric
from rag_papers.evaluation.ranx_adapter import ranx_scores
from rag_papers.evaluation.rows import EvalRow

__all__ = ["RANX_METRICS", "MRRAtK", "NDCGAtK", "RankedMetric", "RecallAtK", "first_gold_rank"]


class RankedMetric(Metric):
    """A ranx metric at a cut-off k over ``EvalRow.retrieved`` against ``gold_ids``."""

    group = "retrieval"
    ranx_name: ClassVar[str] = ""

    def __init__(self, k: int = 10) -> None:
        self.k = k

    @property
    def key(self) -> str:
        return f"{self.ranx_name}@{self.k}"

    def score(self, row: EvalRow) -> float | None:
        return self.score_many([row])[0]

    def score_many(self, rows: Sequence[EvalRow]) -> list[float | None]:
        # One ranx call for the whole run: it costs far more per call than per query.
        scored = [r for r in rows if r.ok and r.gold_ids]
        values = ranx_scores(
            {r.id: r.gold_ids for r in scored}, {r.id: r.retrieved for r in scored}, self.key
        )
        return [values.get(r.id) if r.ok and r.gold_ids else None for r in rows]


class RecallAtK(RankedMetric):
    name = "recall"
    ranx_name = "recall"
    description = "Share of the gold papers among the top k retrieved."


class MRRAtK(RankedMetric):
    name = "mrr"
    ranx_name = "mrr"
    description = "Reciprocal rank of the first gold paper within the top k."


class NDCGAtK(RankedMetric):
    name = "ndcg"
    ranx_name = "ndcg"
    description = "nDCG of the top k retrieved (binary gains)."


RANX_METRICS: tuple[type[RankedMetric], ...] = (RecallAtK, MRRAtK, NDCGAtK)


def first_gold_rank(row: EvalRow) -> int | None:
    """1-based rank of the first gold paper among the retrieved ones; None if absent."""
    gold = set(row.gold_ids)
    for rank, pid in enumerate(row.retrieved, start=1):
        if pid in gold:
            return rank
    return None
