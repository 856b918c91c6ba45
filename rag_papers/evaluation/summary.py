"""What a run records about itself (summary.json), and where a run folder keeps its files.

Its own module so that the runner (which writes it) and the reports and comparisons (which
read it) depend on it, not on each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rag_papers.evaluation.metrics import MetricsTable

__all__ = ["RESULTS", "RETRIEVAL_DEPTH", "SUMMARY", "RunSummary", "read_summary"]

# Retrieval metrics look at the top 10 of qa.search (the ranking ask() shows a prefix of).
RETRIEVAL_DEPTH = 10
RESULTS = "results.jsonl"
SUMMARY = "summary.json"


class RunSummary(BaseModel):
    """Everything needed to reproduce and compare a run (summary.json)."""

    dataset: str
    dataset_path: str
    dataset_sha256: str
    date: str
    package_version: str
    settings_fingerprint: str
    engine_settings_fingerprint: str
    prompt_hashes: dict[str, str]
    judge_prompt_hashes: dict[str, str] = Field(default_factory=dict)
    llm: str
    embed_model: str
    judge_model: str | None = None
    retrieval_mode: str
    top_k: int
    retrieval_depth: int = RETRIEVAL_DEPTH
    index: str
    index_papers: int = 0
    n_questions: int
    n_answered: int
    n_errors: int
    n_by_type: dict[str, int]
    n_resumed: int = 0
    wall_s: float = 0.0
    jobs: int = 1
    warnings: list[str] = Field(default_factory=list)
    metrics: MetricsTable = Field(default_factory=MetricsTable)

    @property
    def overall(self) -> dict[str, float | None]:
        return self.metrics.overall


def read_summary(run_dir: Path | str) -> dict[str, Any]:
    """A run's summary.json as plain data (``run_dir`` is the folder or the file itself)."""
    path = Path(run_dir)
    path = path / SUMMARY if path.is_dir() else path
    return dict(json.loads(path.read_text(encoding="utf-8")))
