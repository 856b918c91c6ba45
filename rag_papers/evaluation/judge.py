"""The LLM judge: faithfulness to the shown sources and correctness against a reference.

Prompts follow ragas (statements with verdicts; TP/FP/FN statement lists); replies are read
leniently (code fences, yes/no verdicts, a free-text 'verdict: 1' or 'score: 0.7'), and a
reply that cannot be read scores None, never a guess. The backend comes from PaperQA, like
every other model the engine talks to.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rag_papers.evaluation.rows import EvalRow, JudgeScores

if TYPE_CHECKING:
    from rag_papers import Settings

__all__ = [
    "CORRECTNESS_PROMPT",
    "FAITHFULNESS_PROMPT",
    "JUDGE_PROMPTS",
    "LLMJudge",
    "judge_prompt_hashes",
    "make_judge",
    "parse_correctness",
    "parse_faithfulness",
]

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


def judge_prompt_hashes() -> dict[str, str]:
    """name -> short sha256 of each judge prompt, recorded in summary.json."""
    return {
        name: hashlib.sha256(text.encode()).hexdigest()[:12] for name, text in JUDGE_PROMPTS.items()
    }


# --- reading replies --------------------------------------------------------------------------
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


# --- the judge --------------------------------------------------------------------------------
class LLMJudge:
    """Scores answers with an LLM backend (``PaperQA.backend(spec)``, or make_judge)."""

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


def make_judge(settings: Settings, spec: str, *, base_url: str | None = None) -> LLMJudge:
    """A judge for an llm spec ('openai:MODEL' or 'gguf:PATH'), optionally at its own
    OpenAI-compatible ``base_url``. ValueError for 'extractive' or a malformed spec."""
    from rag_papers import PaperQA, parse_llm_spec

    if parse_llm_spec(spec).kind == "extractive":
        raise ValueError("a judge must be an LLM, not 'extractive'")
    if base_url:
        settings = settings.model_copy(update={"openai_base_url": base_url})
    # A PaperQA that never opens its index: only its backend factory is used.
    backend = PaperQA(settings).backend(spec)
    return LLMJudge(backend)
