"""Answer metrics: citations, gold facts, sentence support, abstention, and the two
LLM-judged scores (read from ``EvalRow.judge``; judge.py asks for them)."""

from __future__ import annotations

from rag_papers.evaluation.base import Metric, ratio
from rag_papers.evaluation.facts import missing_facts
from rag_papers.evaluation.rows import EvalRow

__all__ = [
    "AbstentionPrecision",
    "AbstentionRecall",
    "AnswerCorrectness",
    "CitationPrecision",
    "CitationRecall",
    "CitationValidity",
    "FactRecall",
    "Faithfulness",
    "FalseAbstention",
    "SupportRate",
    "TopSourceCited",
]


# --- citations --------------------------------------------------------------------------------
class CitationValidity(Metric):
    name = "citation_validity"
    group = "citations"
    description = "Share of shown citations that are among the retrieved sources (must be 1)."

    def score(self, row: EvalRow) -> float | None:
        assert row.answer is not None
        sources = set(row.source_ids)
        cited = [c.paper_id for c in row.answer.citations]
        return ratio(sum(pid in sources for pid in cited), len(cited))


class CitationPrecision(Metric):
    name = "citation_precision"
    group = "citations"
    description = "Share of cited papers that are gold (answered, answerable questions)."

    def score(self, row: EvalRow) -> float | None:
        if not row.gold_ids or row.abstained:
            return None
        cited = row.cited_ids
        return ratio(len(set(cited) & set(row.gold_ids)), len(cited))


class CitationRecall(Metric):
    name = "citation_recall"
    group = "citations"
    description = "Share of gold papers cited (an abstention cites none)."

    def score(self, row: EvalRow) -> float | None:
        if not row.gold_ids:
            return None
        return ratio(len(set(row.cited_ids) & set(row.gold_ids)), len(set(row.gold_ids)))


# --- content ----------------------------------------------------------------------------------
class FactRecall(Metric):
    name = "fact_recall"
    group = "answers"
    description = "Share of gold facts found in the answer (normalised match)."

    def score(self, row: EvalRow) -> float | None:
        if not row.facts:
            return None
        return 1.0 - len(missing_facts(row)) / len(row.facts)


class SupportRate(Metric):
    name = "support_rate"
    group = "answers"
    description = "Supported / claim sentences per answer (mean over answers with claims)."

    def score(self, row: EvalRow) -> float | None:
        assert row.answer is not None
        if row.answer.abstained or not row.answer.claims:
            return None
        return row.answer.supported / row.answer.claims


# --- abstention -------------------------------------------------------------------------------
class AbstentionPrecision(Metric):
    name = "abstention_precision"
    group = "answers"
    description = "Of the abstentions, the share on unanswerable questions."

    def score(self, row: EvalRow) -> float | None:
        return float(not row.answerable) if row.abstained else None


class AbstentionRecall(Metric):
    name = "abstention_recall"
    group = "answers"
    description = "Of the unanswerable questions, the share abstained on."

    def score(self, row: EvalRow) -> float | None:
        return None if row.answerable else float(row.abstained)


class FalseAbstention(Metric):
    name = "false_abstention"
    group = "answers"
    description = "Of the answerable questions, the share wrongly abstained on."
    higher_is_better = False

    def score(self, row: EvalRow) -> float | None:
        return float(row.abstained) if row.answerable else None


class TopSourceCited(Metric):
    name = "top_source_cited"
    group = "citations"
    description = "When the paper retrieval ranks first is gold, the share of answers that cite it."

    def score(self, row: EvalRow) -> float | None:
        if row.answer is None or row.abstained or not row.answer.sources:
            return None
        top = row.answer.sources[0].paper_id
        if top not in row.gold_ids:
            return None
        return float(top in row.cited_ids)


# --- LLM-judged -------------------------------------------------------------------------------
class Faithfulness(Metric):
    name = "faithfulness"
    group = "judge"
    description = "Judge: share of answer statements supported by the retrieved context."

    def score(self, row: EvalRow) -> float | None:
        return row.judge.faithfulness if row.judge else None


class AnswerCorrectness(Metric):
    name = "correctness"
    group = "judge"
    description = "Judge: agreement with the reference answer (statement F1)."

    def score(self, row: EvalRow) -> float | None:
        return row.judge.correctness if row.judge else None
