"""The answer contract: the Answer every front end and eval row uses, and the two facts the
prompts and the parsers share, defined once: the abstain phrase and the citation pattern.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "ABSTAIN_PHRASE",
    "CITATION_PATTERN",
    "EXTRACTIVE_LABEL",
    "Answer",
    "Citation",
    "DroppedClaim",
    "Quote",
    "SentenceVerdict",
    "Source",
    "Usage",
    "answer_label",
]

ABSTAIN_PHRASE = "I cannot answer this from the indexed papers."
# [1], [2, 3], [1-3], [1][2]; the inner group is expanded by expand_markers.
CITATION_PATTERN = re.compile(r"\[(\d+(?:\s*(?:,|;|-|–)\s*\d+)*)\]")


class Citation(BaseModel):
    marker: int
    paper_id: str
    title: str
    year: int | None = None
    url: str | None = None


class Source(BaseModel):
    """A retrieved paper; ``marker`` is set when it was shown to the answerer."""

    paper_id: str
    title: str
    year: int | None = None
    url: str | None = None
    authors: list[str] = Field(default_factory=list)
    rank: int
    score: float
    dense: float | None = None
    bm25: float | None = None
    marker: int | None = None


class Quote(BaseModel):
    """A verified quote: ``text`` is ``source[start:end]`` of the paper's title or abstract."""

    marker: int
    paper_id: str
    field: Literal["abstract", "title"] = "abstract"
    start: int
    end: int
    text: str


class DroppedClaim(BaseModel):
    """A grounded claim that was not shown: none of its quotes was found in the sources."""

    text: str
    reason: str


class SentenceVerdict(BaseModel):
    text: str
    markers: list[int] = Field(default_factory=list)
    claim: bool = True  # False for sentences that state nothing checkable
    supported: bool = False
    score: float = 0.0
    reason: str = ""
    quotes: list[Quote] = Field(default_factory=list)  # grounded answers: the verified quotes


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    counted_by: Literal["api", "tiktoken", "none"] = "none"


class Answer(BaseModel):
    question: str
    text: str
    mode: Literal["extractive", "llm"]
    model: str
    citations: list[Citation] = Field(default_factory=list)
    sources: list[Source] = Field(default_factory=list)
    sentences: list[SentenceVerdict] = Field(default_factory=list)
    supported: int = 0
    claims: int = 0
    abstained: bool = False
    abstain_reason: str | None = None
    removed_markers: list[int] = Field(default_factory=list)
    grounded: bool = False  # claims with verified quotes (answer_style 'grounded')
    dropped_claims: list[DroppedClaim] = Field(default_factory=list)
    truncated: bool = False  # the model stopped at max_tokens: the answer may be cut off
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    settings_fingerprint: str = ""
    standalone_question: str | None = None  # chat: the rewritten follow-up

    @property
    def support_ratio(self) -> float:
        return self.supported / self.claims if self.claims else 1.0

    def cited_ids(self) -> list[str]:
        return [c.paper_id for c in self.citations]


EXTRACTIVE_LABEL = "extractive answer (no LLM configured)"


def answer_label(answer: Answer) -> str:
    """'extractive answer (no LLM configured)' or 'model: NAME'."""
    return EXTRACTIVE_LABEL if answer.mode == "extractive" else f"model: {answer.model}"
