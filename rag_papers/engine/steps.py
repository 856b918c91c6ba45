"""What the answer steps hand each other: the retrieval, the numbered context, the
generated text. Kept apart from the steps themselves (engine/pipeline.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rag_papers.answering.contract import ABSTAIN_PHRASE, Answer, Usage

if TYPE_CHECKING:
    import numpy as np

    from rag_papers.answering.grounded import Grounding
    from rag_papers.retrieval.retriever import ScoredPaper

__all__ = ["Context", "Generated", "Retrieved", "abstain", "cut_off", "rounded"]


@dataclass(slots=True)
class Retrieved:
    """What retrieval found for one query, and the query's embedding (made once, on first
    use: a BM25-only search never embeds the query)."""

    query: str
    results: list[ScoredPaper]
    embed: Callable[[str], np.ndarray]
    _vector: np.ndarray | None = None

    @property
    def vector(self) -> np.ndarray:
        if self._vector is None:
            self._vector = self.embed(self.query)
        return self._vector

    @property
    def best_dense(self) -> float | None:
        return max((r.dense for r in self.results if r.dense is not None), default=None)

    @property
    def branches_agree(self) -> bool:
        """Dense and BM25 rank the same paper first (True when only one branch ran)."""
        dense = [r for r in self.results if r.dense is not None]
        lexical = [r for r in self.results if r.bm25 is not None]
        if not dense or not lexical:
            return True
        top_dense = max(dense, key=lambda r: r.dense or 0.0)
        top_lexical = max(lexical, key=lambda r: r.bm25 or 0.0)
        return top_dense.paper.id == top_lexical.paper.id


@dataclass(slots=True)
class Context:
    """The numbered sources shown to the answerer: marker n is ``shown[n - 1]``."""

    text: str
    shown: list[ScoredPaper]

    def markers(self) -> dict[int, str]:
        return {m: item.paper.id for m, item in enumerate(self.shown, start=1)}

    def source_texts(self) -> dict[int, str]:
        """Marker -> 'title. abstract', what claims are checked against."""
        return {m: f"{i.paper.title}. {i.paper.abstract}" for m, i in enumerate(self.shown, 1)}


@dataclass(slots=True)
class Generated:
    """The answerer's raw text (markers already filtered when streamed), or why it abstained."""

    raw: str
    usage: Usage = field(default_factory=Usage)
    abstain_reason: str | None = None
    grounding: Grounding | None = None  # grounded answers: verified claims, dropped ones
    truncated: bool = False  # the model hit max_tokens


def abstain(
    answer: Answer,
    why: str,
    on_delta: Callable[[str], None] | None,
    timings: dict[str, float],
    t_all: float,
) -> Answer:
    """Turn ``answer`` into the abstention (the fixed phrase, with why), timed to now."""
    answer.text = ABSTAIN_PHRASE
    answer.abstained = True
    answer.abstain_reason = why
    if on_delta:
        on_delta(ABSTAIN_PHRASE)
    timings["total"] = time.perf_counter() - t_all
    answer.timings = rounded(timings)
    return answer


def rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in timings.items()}


def cut_off(finish_reason: str | None) -> bool:
    """The model stopped at max_tokens ("length"), or the stream ended without saying why
    (None: llama-cpp-python's server ends a stream that way when another request interrupts
    it): either way the answer may be incomplete."""
    return finish_reason is None or finish_reason == "length"
