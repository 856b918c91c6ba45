"""Cost metrics: latency percentiles, tokens and dollars per run (lower is better)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rag_papers.evaluation.base import Metric
from rag_papers.evaluation.rows import EvalRow

__all__ = ["CostTotal", "LatencyP50", "LatencyP95", "LatencyPercentile", "TokensPerQuestion"]


class LatencyPercentile(Metric):
    """Seconds per answer (Answer.timings['total'], else wall time), one percentile."""

    group = "cost"
    higher_is_better = False
    is_ratio = False
    q: ClassVar[float] = 50.0

    def score(self, row: EvalRow) -> float | None:
        return row.latency

    def aggregate(self, values: Sequence[float]) -> float | None:
        if not values:
            return None
        import numpy as np

        return float(np.percentile(np.asarray(values, dtype=float), self.q))


class LatencyP50(LatencyPercentile):
    name = "latency_p50_s"
    q = 50.0
    description = "Median seconds per answer (Answer.timings['total'], else wall time)."


class LatencyP95(LatencyPercentile):
    name = "latency_p95_s"
    q = 95.0
    description = "95th percentile of seconds per answer."


class TokensPerQuestion(Metric):
    name = "tokens_per_question"
    group = "cost"
    higher_is_better = False
    is_ratio = False
    description = "Mean prompt + completion tokens per answer (0 when extractive)."

    def score(self, row: EvalRow) -> float | None:
        assert row.answer is not None
        return float(row.answer.usage.total_tokens)


class CostTotal(Metric):
    name = "cost_usd_total"
    group = "cost"
    higher_is_better = False
    is_ratio = False
    description = "Sum of Answer.usage.cost_usd over the run."

    def score(self, row: EvalRow) -> float | None:
        assert row.answer is not None
        return float(row.answer.usage.cost_usd)

    def aggregate(self, values: Sequence[float]) -> float | None:
        return float(sum(values)) if values else None
