"""Facts several layers share, declared once: retrieval modes, the llm spec grammar, input
formats and question types. Everything else (settings, CLI options, HTTP schemas, the REPL,
the eval harness) derives its literals, help text and checks from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "ANSWER_STYLES",
    "FORMATS",
    "LLM_SPEC_HELP",
    "MODES",
    "QUESTION_TYPES",
    "AnswerStyle",
    "Format",
    "LLMSpec",
    "Mode",
    "QuestionType",
    "parse_llm_spec",
]

Mode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[Mode, ...] = get_args(Mode)

# How an LLM answers: 'grounded' (JSON claims with verbatim quotes, checked in code), 'free'
# (prose with [n] markers) or 'auto' (grounded for local models and compatible servers).
AnswerStyle = Literal["auto", "grounded", "free"]
ANSWER_STYLES: tuple[AnswerStyle, ...] = get_args(AnswerStyle)

Format = Literal["hf", "json", "jsonl", "csv", "bibtex", "atom", "beir"]
FORMATS: tuple[Format, ...] = get_args(Format)

QuestionType = Literal["single", "multi", "numeric", "unanswerable"]
QUESTION_TYPES: tuple[QuestionType, ...] = get_args(QuestionType)

LLM_SPEC_HELP = "'extractive', 'openai:MODEL' or 'gguf:PATH'"


@dataclass(frozen=True, slots=True)
class LLMSpec:
    """A parsed llm spec: kind 'extractive' (value ''), 'openai' (a model) or 'gguf' (a path)."""

    kind: Literal["extractive", "openai", "gguf"]
    value: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "extractive" else f"{self.kind}:{self.value}"


def parse_llm_spec(spec: str) -> LLMSpec:
    """'extractive', 'openai:MODEL' or 'gguf:PATH'; ValueError naming the grammar otherwise."""
    spec = spec.strip()
    if spec == "extractive":
        return LLMSpec("extractive")
    kind, sep, rest = spec.partition(":")
    if sep and rest.strip() and kind in ("openai", "gguf"):
        return LLMSpec(kind, rest.strip())  # type: ignore[arg-type]
    raise ValueError(f"llm {spec!r}: expected {LLM_SPEC_HELP}")
