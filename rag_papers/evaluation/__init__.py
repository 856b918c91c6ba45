"""Evaluation harness: datasets, metrics, runner, reports, run comparison and BEIR benchmarks.

Names are imported on first use (PEP 562), so `rag-papers eval --help`, which imports the
``cli`` submodule, loads none of the engine, numpy, ranx or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_papers.evaluation.datasets import (
        Dataset,
        DatasetError,
        EvalQuestion,
        load_dataset,
        resolve_gold,
        scifact_to_dataset,
        write_dataset,
    )
    from rag_papers.evaluation.metrics import (
        EvalRow,
        Metric,
        MetricsTable,
        default_metrics,
        evaluate_rows,
    )
    from rag_papers.evaluation.runner import RunSummary, run_eval

__all__ = [
    "Dataset",
    "DatasetError",
    "EvalQuestion",
    "EvalRow",
    "Metric",
    "MetricsTable",
    "RunSummary",
    "default_metrics",
    "evaluate_rows",
    "load_dataset",
    "resolve_gold",
    "run_eval",
    "scifact_to_dataset",
    "write_dataset",
]

_WHERE = {
    **dict.fromkeys(
        (
            "Dataset",
            "DatasetError",
            "EvalQuestion",
            "load_dataset",
            "resolve_gold",
            "scifact_to_dataset",
            "write_dataset",
        ),
        "datasets",
    ),
    **dict.fromkeys(
        ("EvalRow", "Metric", "MetricsTable", "default_metrics", "evaluate_rows"), "metrics"
    ),
    **dict.fromkeys(("RunSummary", "run_eval"), "runner"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
