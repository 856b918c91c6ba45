"""Evaluation metrics: each a small class with one scoring method, over typed rows (ragas-style).

A row (EvalRow) is one evaluated question: its gold, the ranked papers the engine retrieved,
the engine's Answer and, optionally, a judge's scores. ``Metric.score(row)`` returns a value
or None where the metric does not apply (e.g. fact recall of an unanswerable question);
``Metric.aggregate`` turns the applicable values into one number (a mean, a percentile, a sum).

Retrieval metrics are computed by ranx (imported lazily: it costs seconds, numba).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from rag_papers.answering.contract import Answer

__all__ = [
    "JUDGE_PROMPTS",
    "METRICS",
    "AbstentionPrecision",
    "AbstentionRecall",
    "AnswerCorrectness",
    "CitationPrecision",
    "CitationRecall",
    "CitationValidity",
    "CostTotal",
    "EvalRow",
    "FactRecall",
    "Faithfulness",
    "JudgeScores",
    "LLMJudge",
    "LatencyP50",
    "LatencyP95",
    "MRRAtK",
    "Metric",
    "MetricsTable",
    "NDCGAtK",
    "RecallAtK",
    "SupportRate",
    "TokensPerQuestion",
    "default_metrics",
    "evaluate_rows",
    "fact_in",
    "first_gold_rank",
    "match_tokens",
    "metric_info",
    "missing_facts",
    "parse_correctness",
    "parse_faithfulness",
    "ranx_scores",
]


# --- rows --------------------------------------------------------------------------------
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


# --- fact matching ----------------------------------------------------------------------------
# Numbers first (thousands separators, decimals, a leading dot), then words, then '%'.
_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+|[^\W\d_]+|%")


def _number(token: str) -> str:
    try:
        value = Decimal(token.replace(",", ""))
    except InvalidOperation:
        return token
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def match_tokens(text: str) -> list[str]:
    """Tokens for fact matching: case-folded, whitespace and punctuation ignored, LaTeX
    ``\\%`` = ``%``, numbers as numbers ('8,000' = '8000', '.5' = '0.50', '60 %' = '60%')."""
    text = unicodedata.normalize("NFKC", text).replace("\\%", "%").casefold()
    out = []
    for tok in _TOKEN.findall(text):
        out.append(_number(tok) if tok[0].isdigit() or tok[0] == "." else tok)
    return out


def fact_in(fact: str, text: str) -> bool:
    """Whether ``fact`` occurs in ``text`` as a contiguous run of match_tokens."""
    needle, hay = match_tokens(fact), match_tokens(text)
    if not needle:
        return False
    n = len(needle)
    return any(hay[i : i + n] == needle for i in range(len(hay) - n + 1))


def missing_facts(row: EvalRow) -> list[str]:
    text = row.answer.text if row.answer and not row.answer.abstained else ""
    return [f for f in row.facts if not fact_in(f, text)]


def first_gold_rank(row: EvalRow) -> int | None:
    """1-based rank of the first gold paper among the retrieved ones; None if absent."""
    gold = set(row.gold_ids)
    for rank, pid in enumerate(row.retrieved, start=1):
        if pid in gold:
            return rank
    return None


# --- metric base ----------------------------------------------------------------------------
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
        return [self.score(r) if r.ok else None for r in rows]

    def aggregate(self, values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    @property
    def key(self) -> str:
        return self.name


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


# --- retrieval (ranx) -----------------------------------------------------------------------
class _RanxMetric(Metric):
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
        scored = [r for r in rows if r.ok and r.gold_ids]
        values = ranx_scores(
            {r.id: r.gold_ids for r in scored}, {r.id: r.retrieved for r in scored}, self.key
        )
        return [values.get(r.id) if r.ok and r.gold_ids else None for r in rows]


def ranx_scores(
    gold: dict[str, list[str]], ranked: dict[str, list[str]], metric: str
) -> dict[str, float]:
    """Per-query ``metric`` (ranx syntax, e.g. 'ndcg@10') for ranked lists against gold."""
    if not gold:
        return {}
    import warnings

    from ranx import Qrels, Run, evaluate

    qrels = Qrels({qid: dict.fromkeys(ids, 1) for qid, ids in gold.items()})
    # Strictly decreasing scores keep the engine's own order (ties included) in ranx.
    run_dict = {
        qid: {pid: float(len(ids) - i) for i, pid in enumerate(dict.fromkeys(ids))}
        for qid, ids in ranked.items()
        if ids and qid in gold
    }
    if not run_dict:
        return dict.fromkeys(gold, 0.0)
    run = Run(run_dict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's unsafe-cast chatter
        evaluate(qrels, run, metric, return_mean=False, make_comparable=True)
    per_query = run.scores[metric]
    return {qid: float(per_query.get(qid, 0.0)) for qid in gold}


class RecallAtK(_RanxMetric):
    name = "recall"
    ranx_name = "recall"
    description = "Share of the gold papers among the top k retrieved."


class MRRAtK(_RanxMetric):
    name = "mrr"
    ranx_name = "mrr"
    description = "Reciprocal rank of the first gold paper within the top k."


class NDCGAtK(_RanxMetric):
    name = "ndcg"
    ranx_name = "ndcg"
    description = "nDCG of the top k retrieved (binary gains)."


# --- citations --------------------------------------------------------------------------------
class CitationValidity(Metric):
    name = "citation_validity"
    group = "citations"
    description = "Share of shown citations that are among the retrieved sources (must be 1)."

    def score(self, row: EvalRow) -> float | None:
        assert row.answer is not None
        sources = set(row.source_ids)
        cited = [c.paper_id for c in row.answer.citations]
        return _ratio(sum(pid in sources for pid in cited), len(cited))


class CitationPrecision(Metric):
    name = "citation_precision"
    group = "citations"
    description = "Share of cited papers that are gold (answered, answerable questions)."

    def score(self, row: EvalRow) -> float | None:
        if not row.gold_ids or row.abstained:
            return None
        cited = row.cited_ids
        return _ratio(len(set(cited) & set(row.gold_ids)), len(cited))


class CitationRecall(Metric):
    name = "citation_recall"
    group = "citations"
    description = "Share of gold papers cited (an abstention cites none)."

    def score(self, row: EvalRow) -> float | None:
        if not row.gold_ids:
            return None
        return _ratio(len(set(row.cited_ids) & set(row.gold_ids)), len(set(row.gold_ids)))


# --- answers ----------------------------------------------------------------------------------
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


# --- cost -------------------------------------------------------------------------------------
class _Percentile(Metric):
    group = "cost"
    higher_is_better = False
    is_ratio = False
    q: ClassVar[float] = 50.0

    def score(self, row: EvalRow) -> float | None:
        return row.latency

    def score_many(self, rows: Sequence[EvalRow]) -> list[float | None]:
        return [r.latency if r.ok else None for r in rows]

    def aggregate(self, values: Sequence[float]) -> float | None:
        if not values:
            return None
        import numpy as np

        return float(np.percentile(np.asarray(values, dtype=float), self.q))


class LatencyP50(_Percentile):
    name = "latency_p50_s"
    q = 50.0
    description = "Median seconds per answer (Answer.timings['total'], else wall time)."


class LatencyP95(_Percentile):
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


# --- LLM-judged ---------------------------------------------------------------------------
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


def default_metrics(*, judge: bool = False) -> list[Metric]:
    metrics: list[Metric] = [
        RecallAtK(5),
        RecallAtK(10),
        MRRAtK(10),
        NDCGAtK(10),
        CitationValidity(),
        CitationPrecision(),
        CitationRecall(),
        FactRecall(),
        SupportRate(),
        AbstentionPrecision(),
        AbstentionRecall(),
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
        for cls in (RecallAtK, MRRAtK, NDCGAtK):
            if cls.ranx_name == base and k.isdigit():
                return cls(int(k))
    return None


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


def evaluate_rows(rows: Sequence[EvalRow], metrics: Iterable[Metric] | None = None) -> MetricsTable:
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


_TYPE_ORDER = {"single": 0, "multi": 1, "numeric": 2, "unanswerable": 3}


# --- the judge ------------------------------------------------------------------------------
FAITHFULNESS_PROMPT = """You check whether an answer is supported by the given context.
Break the answer into short standalone statements. For each statement give verdict 1 if it can
be directly inferred from the context, else 0.

Context:
{context}

Question: {question}

Answer: {answer}

Reply with JSON only, in this form:
{{"statements": [{{"statement": "...", "verdict": 1}}]}}"""

CORRECTNESS_PROMPT = """You compare an answer with a reference answer to the same question.
List the statements of the answer that the reference confirms (TP), the statements of the
answer that the reference does not contain or contradicts (FP), and the statements of the
reference that the answer misses (FN).

Question: {question}

Answer: {answer}

Reference: {reference}

Reply with JSON only, in this form:
{{"TP": ["..."], "FP": ["..."], "FN": ["..."]}}"""

JUDGE_PROMPTS: dict[str, str] = {
    "faithfulness": FAITHFULNESS_PROMPT,
    "correctness": CORRECTNESS_PROMPT,
}


def _json_objects(text: str) -> list[Any]:
    """Every JSON value that parses from a '{' or '[' in text (code fences tolerated)."""
    text = re.sub(r"```(?:json)?", "", text)
    decoder = json.JSONDecoder()
    found: list[Any] = []
    i = 0
    while i < len(text):
        if text[i] in "{[":
            try:
                value, end = decoder.raw_decode(text, i)
            except ValueError:
                i += 1
                continue
            found.append(value)
            i = end
        else:
            i += 1
    return found


_YES = {"1", "yes", "true", "supported", "y"}
_NO = {"0", "no", "false", "unsupported", "not supported", "n"}


def _verdict(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and value in (0, 1):
        return float(value)
    if isinstance(value, str):
        v = value.strip().lower().rstrip(".")
        if v in _YES:
            return 1.0
        if v in _NO:
            return 0.0
    return None


def parse_faithfulness(text: str) -> float | None:
    """Share of statements with verdict 1 in a judge's reply; None if it cannot be read."""
    for obj in _json_objects(text):
        items = obj.get("statements") if isinstance(obj, dict) else obj
        if not isinstance(items, list):
            continue
        raw = [_verdict(it.get("verdict")) for it in items if isinstance(it, dict)]
        verdicts = [v for v in raw if v is not None]
        if verdicts:
            return sum(verdicts) / len(verdicts)
    # Free text fallback: "verdict: 1" / "Verdict: yes" lines.
    matches = re.finditer(r"verdict\W{0,3}\s*(1|0|yes|no|true|false)\b", text, re.I)
    found = [v for m in matches if (v := _verdict(m.group(1))) is not None]
    return sum(found) / len(found) if found else None


def parse_correctness(text: str) -> float | None:
    """Statement F1 = TP / (TP + (FP + FN) / 2) from a judge's reply; or its 'score' in [0, 1]."""
    for obj in _json_objects(text):
        if not isinstance(obj, dict):
            continue
        keys = {k.upper(): v for k, v in obj.items() if isinstance(k, str)}
        if any(k in keys for k in ("TP", "FP", "FN")):
            n = {
                k: len(keys[k]) if isinstance(keys.get(k), list) else 0 for k in ("TP", "FP", "FN")
            }
            total = n["TP"] + 0.5 * (n["FP"] + n["FN"])
            return n["TP"] / total if total else None
        score = keys.get("SCORE")
        if isinstance(score, int | float) and 0 <= score <= 1:
            return float(score)
    m = re.search(r"score\W{0,3}\s*([01](?:\.\d+)?)\b", text, re.I)
    if m and 0 <= float(m.group(1)) <= 1:
        return float(m.group(1))
    return None


class LLMJudge:
    """Scores answers with an LLM backend (rag_papers.answering.llms.make_backend)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.model_id: str = getattr(backend, "model_id", "judge")

    def _ask(self, prompt: str) -> str:
        return str(self.backend.complete([{"role": "user", "content": prompt}]).text)

    def faithfulness(
        self, question: str, answer: str, contexts: Sequence[str]
    ) -> tuple[float | None, str]:
        context = "\n\n".join(f"[{i}] {c}" for i, c in enumerate(contexts, start=1))
        raw = self._ask(
            FAITHFULNESS_PROMPT.format(context=context, question=question, answer=answer)
        )
        return parse_faithfulness(raw), raw

    def correctness(self, question: str, answer: str, reference: str) -> tuple[float | None, str]:
        raw = self._ask(
            CORRECTNESS_PROMPT.format(question=question, answer=answer, reference=reference)
        )
        return parse_correctness(raw), raw

    def judge(
        self,
        row: EvalRow,
        contexts: Sequence[str],
        *,
        on_error: Callable[[Exception], None] | None = None,
    ) -> JudgeScores:
        """Both scores for one answered question.

        An abstention on an answerable question is incorrect (0) without asking; an
        abstention otherwise, or a question without a reference, has no correctness.
        """
        scores = JudgeScores(model=self.model_id)
        answer = row.answer
        if answer is None:
            return scores
        try:
            if answer.abstained:
                scores.correctness = 0.0 if row.answerable else None
                return scores
            scores.faithfulness, scores.faithfulness_raw = self.faithfulness(
                row.question, answer.text, contexts
            )
            if row.reference:
                scores.correctness, scores.correctness_raw = self.correctness(
                    row.question, answer.text, row.reference
                )
        except Exception as exc:  # a judge failure must not lose the answer
            scores.error = f"{type(exc).__name__}: {exc}"
            if on_error:
                on_error(exc)
        return scores
