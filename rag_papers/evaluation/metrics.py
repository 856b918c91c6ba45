"""The metric set of a run, what a summary key means, and scoring rows into a table.

Each metric is a small class with one scoring method (base.py); they live by kind in
retrieval_metrics.py (ranx), answer_metrics.py and cost_metrics.py. This module picks the
default set, looks a summary key up (``metric_info('ndcg@10')``), formats values and turns
rows into a MetricsTable: overall, per question type and per question.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

from rag_papers import QUESTION_TYPES
from rag_papers.evaluation.answer_metrics import (
    AbstentionPrecision,
    AbstentionRecall,
    AnswerCorrectness,
    CitationPrecision,
    CitationRecall,
    CitationValidity,
    FactRecall,
    Faithfulness,
    FalseAbstention,
    SupportRate,
    TopSourceCited,
)
from rag_papers.evaluation.base import Metric
from rag_papers.evaluation.cost_metrics import (
    CostTotal,
    LatencyP50,
    LatencyP95,
    TokensPerQuestion,
)
from rag_papers.evaluation.retrieval_metrics import RANX_METRICS, MRRAtK, NDCGAtK, RecallAtK
from rag_papers.evaluation.rows import EvalRow

__all__ = [
    "METRICS",
    "MetricsTable",
    "default_metrics",
    "evaluate_rows",
    "format_metric",
    "metric_direction",
    "metric_info",
]


def default_metrics(*, judge: bool = False) -> list[Metric]:
    """Every metric a run reports; the two judged ones only with a judge."""
    metrics: list[Metric] = [
        RecallAtK(5),
        RecallAtK(10),
        MRRAtK(10),
        NDCGAtK(10),
        CitationValidity(),
        CitationPrecision(),
        CitationRecall(),
        TopSourceCited(),
        FactRecall(),
        SupportRate(),
        AbstentionPrecision(),
        AbstentionRecall(),
        FalseAbstention(),
        LatencyP50(),
        LatencyP95(),
        TokensPerQuestion(),
        CostTotal(),
    ]
    if judge:
        metrics += [Faithfulness(), AnswerCorrectness()]
    return metrics


METRICS: list[Metric] = default_metrics(judge=True)


def metric_info(key: str) -> Metric | None:
    """The metric behind a summary key (e.g. 'ndcg@10', 'latency_p95_s'), if known."""
    for m in METRICS:
        if m.key == key:
            return m
    if "@" in key:
        base, _, k = key.partition("@")
        for cls in RANX_METRICS:
            if cls.ranx_name == base and k.isdigit():
                return cls(int(k))
    return None


def metric_direction(key: str) -> str:
    """'↑' (higher is better), '↓' (lower is better) or '' for an unknown key."""
    info = metric_info(key)
    return "" if info is None else ("↑" if info.higher_is_better else "↓")


def format_metric(value: float | None, key: str = "") -> str:
    """A value for a table: 'n/a' when missing, dollars to 4 places, the rest to 3."""
    if value is None:
        return "n/a"
    info = metric_info(key)
    if info is not None and not info.is_ratio and key.startswith("cost"):
        return f"{value:.4f}"
    return f"{value:.3f}"


# --- aggregation ------------------------------------------------------------------------------
class MetricsTable(BaseModel):
    """Overall and per-type values, the number of questions each rests on, per-question values."""

    overall: dict[str, float | None] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    per_type: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    per_type_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    per_question: dict[str, dict[str, float | None]] = Field(default_factory=dict)


def _clean(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), 6)


# Known question types first, in their declared order; any other type after, by name.
_TYPE_ORDER: dict[str, int] = {t: i for i, t in enumerate(QUESTION_TYPES)}


def evaluate_rows(rows: Sequence[EvalRow], metrics: Iterable[Metric] | None = None) -> MetricsTable:
    """Score every row with every metric (default: default_metrics, judged ones when any
    row was judged) and aggregate overall and per question type."""
    metrics = (
        list(metrics)
        if metrics is not None
        else default_metrics(judge=any(r.judge is not None for r in rows))
    )
    table = MetricsTable()
    per_row: dict[str, list[float | None]] = {m.key: m.score_many(rows) for m in metrics}
    for i, row in enumerate(rows):
        table.per_question[row.id] = {k: _clean(v[i]) for k, v in per_row.items()}
    types = sorted(
        {r.type for r in rows}, key=lambda t: (t not in _TYPE_ORDER, _TYPE_ORDER.get(t, 0), t)
    )
    for m in metrics:
        values = per_row[m.key]
        applicable = [v for v in values if v is not None]
        table.overall[m.key] = _clean(m.aggregate(applicable))
        table.counts[m.key] = len(applicable)
        for t in types:
            vals = [v for v, r in zip(values, rows, strict=True) if r.type == t and v is not None]
            table.per_type.setdefault(t, {})[m.key] = _clean(m.aggregate(vals))
            table.per_type_counts.setdefault(t, {})[m.key] = len(vals)
    return table
