"""Evaluation harness: datasets, metrics, runner, reports, run comparison and BEIR benchmarks.

Front ends import from here only. Names are imported on first use (PEP 562), so
`rag-papers eval --help` loads none of the engine, numpy, ranx or matplotlib.

Modules: rows (typed results rows), facts (fact matching), base / retrieval_metrics /
answer_metrics / cost_metrics (one small class per metric), metrics (the default set,
key lookup, aggregation), ranx_adapter, judge (LLM judge), datasets, paths, summary
(RunSummary), runner, reports, compare, beir.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag_papers.evaluation.base import Metric
    from rag_papers.evaluation.beir import (
        BEIR_METRICS,
        BeirData,
        BeirError,
        BeirResult,
        TuneResult,
        beir_runs,
        beir_settings,
        evaluate_runs,
        fuse_runs,
        ingest_beir,
        load_beir,
        run_beir,
        tune_fusion,
        write_beir_report,
    )
    from rag_papers.evaluation.compare import (
        Comparison,
        MetricDelta,
        Threshold,
        check_thresholds,
        compare_runs,
        parse_thresholds,
    )
    from rag_papers.evaluation.datasets import (
        Dataset,
        DatasetError,
        EvalQuestion,
        load_dataset,
        resolve_gold,
        scifact_to_dataset,
        write_dataset,
    )
    from rag_papers.evaluation.extra import (
        EVAL_EXTRA_INSTALL,
        EVAL_MODULES,
        missing_eval_modules,
        prepare_eval_environment,
    )
    from rag_papers.evaluation.judge import LLMJudge, make_judge
    from rag_papers.evaluation.metrics import (
        MetricsTable,
        default_metrics,
        evaluate_rows,
        format_metric,
        metric_direction,
        metric_info,
    )
    from rag_papers.evaluation.paths import dedicated_index_dir, default_out_dir
    from rag_papers.evaluation.reports import write_reports
    from rag_papers.evaluation.rows import EvalRow, JudgeScores
    from rag_papers.evaluation.runner import load_results, run_eval
    from rag_papers.evaluation.summary import RunSummary, read_summary

__all__ = [
    "BEIR_METRICS",
    "EVAL_EXTRA_INSTALL",
    "EVAL_MODULES",
    "BeirData",
    "BeirError",
    "BeirResult",
    "Comparison",
    "Dataset",
    "DatasetError",
    "EvalQuestion",
    "EvalRow",
    "JudgeScores",
    "LLMJudge",
    "Metric",
    "MetricDelta",
    "MetricsTable",
    "RunSummary",
    "Threshold",
    "TuneResult",
    "beir_runs",
    "beir_settings",
    "check_thresholds",
    "compare_runs",
    "dedicated_index_dir",
    "default_metrics",
    "default_out_dir",
    "evaluate_rows",
    "evaluate_runs",
    "format_metric",
    "fuse_runs",
    "ingest_beir",
    "load_beir",
    "load_dataset",
    "load_results",
    "make_judge",
    "metric_direction",
    "metric_info",
    "missing_eval_modules",
    "parse_thresholds",
    "prepare_eval_environment",
    "read_summary",
    "resolve_gold",
    "run_beir",
    "run_eval",
    "scifact_to_dataset",
    "tune_fusion",
    "write_beir_report",
    "write_dataset",
    "write_reports",
]

_WHERE = {
    "Metric": "base",
    **dict.fromkeys(
        (
            "BEIR_METRICS",
            "BeirData",
            "BeirError",
            "BeirResult",
            "TuneResult",
            "beir_runs",
            "beir_settings",
            "evaluate_runs",
            "fuse_runs",
            "ingest_beir",
            "load_beir",
            "run_beir",
            "tune_fusion",
            "write_beir_report",
        ),
        "beir",
    ),
    **dict.fromkeys(
        (
            "Comparison",
            "MetricDelta",
            "Threshold",
            "check_thresholds",
            "compare_runs",
            "parse_thresholds",
        ),
        "compare",
    ),
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
        ("EVAL_EXTRA_INSTALL", "EVAL_MODULES", "missing_eval_modules", "prepare_eval_environment"),
        "extra",
    ),
    **dict.fromkeys(("LLMJudge", "make_judge"), "judge"),
    **dict.fromkeys(
        (
            "MetricsTable",
            "default_metrics",
            "evaluate_rows",
            "format_metric",
            "metric_direction",
            "metric_info",
        ),
        "metrics",
    ),
    **dict.fromkeys(("dedicated_index_dir", "default_out_dir"), "paths"),
    "write_reports": "reports",
    **dict.fromkeys(("EvalRow", "JudgeScores"), "rows"),
    **dict.fromkeys(("load_results", "run_eval"), "runner"),
    **dict.fromkeys(("RunSummary", "read_summary"), "summary"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
