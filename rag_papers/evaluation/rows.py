"""Typed rows of a run: one evaluated question (EvalRow) and a judge's scores for it.

A row is what results.jsonl stores, one JSON object a line; every metric and report is
derived from rows, so a report can be rebuilt without asking anything again.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from rag_papers import Answer

__all__ = ["EvalRow", "JudgeScores"]


class JudgeScores(BaseModel):
    """What an LLM judge said about one answer (raw outputs kept for inspection)."""

    model: str
    faithfulness: float | None = None
    correctness: float | None = None
    faithfulness_raw: str = ""
    correctness_raw: str = ""
    error: str | None = None


class EvalRow(BaseModel):
    """One evaluated question, as stored in results.jsonl."""

    id: str
    type: str
    question: str
    named: bool = False
    gold_ids: list[str] = Field(default_factory=list)
    gold_titles: dict[str, str] = Field(default_factory=dict)  # gold id -> title, for reports
    gold_unresolved: list[str] = Field(default_factory=list)
    facts: list[str] = Field(default_factory=list)
    reference: str = ""
    fingerprint: str = ""
    retrieved: list[str] = Field(default_factory=list)  # ranked paper ids (qa.search, depth 10+)
    answer: Answer | None = None
    error: str | None = None
    wall_s: float = 0.0
    judge: JudgeScores | None = None
    finished_at: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.answer is not None

    @property
    def answerable(self) -> bool:
        return self.type != "unanswerable"

    @property
    def abstained(self) -> bool:
        return bool(self.answer and self.answer.abstained)

    @property
    def cited_ids(self) -> list[str]:
        return list(dict.fromkeys(self.answer.cited_ids())) if self.answer else []

    @property
    def source_ids(self) -> list[str]:
        return [s.paper_id for s in self.answer.sources] if self.answer else []

    @property
    def latency(self) -> float:
        if self.answer and "total" in self.answer.timings:
            return float(self.answer.timings["total"])
        return self.wall_s
