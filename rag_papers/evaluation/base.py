"""The metric contract (ragas style): ``score(row)`` per question, then ``aggregate``.

``Metric.score(row)`` returns a value, or None where the metric does not apply (e.g. fact
recall of an unanswerable question); ``Metric.aggregate`` turns the applicable values into
one number (a mean, a percentile, a sum).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rag_papers.evaluation.rows import EvalRow

__all__ = ["Metric", "ratio"]


class Metric:
    """One metric: ``score(row)`` per question (None: does not apply), then ``aggregate``."""

    name: ClassVar[str] = ""
    group: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    # Ratios live in [0, 1]; others (seconds, tokens, dollars) are compared relatively.
    is_ratio: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def score(self, row: EvalRow) -> float | None:
        raise NotImplementedError

    def score_many(self, rows: Sequence[EvalRow]) -> list[float | None]:
        """One value per row; a failed row (no answer) scores None."""
        return [self.score(r) if r.ok else None for r in rows]

    def aggregate(self, values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    @property
    def key(self) -> str:
        """The name in summaries and --fail-under (e.g. 'ndcg@10')."""
        return self.name


def ratio(num: int, den: int) -> float | None:
    """num / den, or None when there is nothing to divide by."""
    return num / den if den else None
