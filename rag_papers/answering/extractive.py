"""Extractive answers (no LLM configured): the sentences of the shown abstracts that answer
the question, each cited, led by the paper that answers best.

Selection, in order:
1. Every sentence of the shown papers is scored by cosine similarity to the question.
2. A paper's relevance is its best sentence's (or its title's) similarity plus
   ``retrieval_weight`` times its retrieval score relative to the first paper's. Papers
   within ``paper_margin`` of the most relevant are kept; the rest are off-topic padding.
3. The lead paper is retrieval's first when it is kept (so the paper search shows first is
   the one the answer cites), else the paper with the best sentence.
4. The kept papers' sentences are taken best first, at most ``per_paper`` from a paper and
   ``n_sentences`` in all.
5. A sentence that leans on the one before it ("This approach…", "…such issues") brings
   that sentence along, or is skipped when it cannot.
6. Papers in order (the lead first), sentences in text order. A "which paper" question gets
   each paper's title first, so the answer names the paper it is about.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rag_papers.answering.contract import ABSTAIN_PHRASE
from rag_papers.answering.evidence import papers_asked_for
from rag_papers.core.text import split_sentences

if TYPE_CHECKING:
    from rag_papers.core.settings import Settings
    from rag_papers.retrieval.retriever import ScoredPaper

__all__ = ["ExtractiveOptions", "extractive_answer", "leans_on_previous", "sub_asks"]

_LEANING_OPENER = re.compile(
    r"^(?:this|these|those|such|it|its|they|their|them|both|thus|hence|therefore|however|"
    r"moreover|furthermore|additionally|in addition|to this end|to do so|to address this|"
    r"as a result|consequently|specifically|in particular|here|finally|also|besides|"
    r"instead|further|then|accordingly|nevertheless|nonetheless|similarly|likewise)\b",
    re.I,
)
_LEANING_PHRASE = re.compile(
    r"\b(?:such|these|those|this|the above|the aforementioned|the same|the latter|the former)"
    r"\s+(?:issues?|problems?|approach(?:es)?|methods?|models?|limitations?|challenges?|"
    r"techniques?|settings?|tasks?|findings?|results?|observations?|works?|gaps?|shortcomings?)\b",
    re.I,
)


_PART_BREAK = re.compile(
    r"\s*(?:,?\s+and\s+|;\s*|\?\s+|,\s+)(?=(?:which|what|how|on|in|where|why|when|who|"
    r"whose|by|from|for|to|at|does|do|is|are|was|were)\b)",
    re.I,
)


def sub_asks(question: str) -> list[str]:
    """The parts of a question that asks two things ('…, and on which dataset…?'); [] when
    it asks one."""
    parts = [p.strip(" ?,.;") for p in _PART_BREAK.split(question)]
    parts = [p for p in parts if len(p.split()) >= 3]
    return parts if len(parts) >= 2 else []


def leans_on_previous(sentence: str) -> bool:
    """True when the sentence cannot stand alone: it opens with a reference back
    ("This approach", "However") or names "such issues" it does not define."""
    return bool(_LEANING_OPENER.match(sentence.strip()) or _LEANING_PHRASE.search(sentence))


@dataclass(frozen=True, slots=True)
class ExtractiveOptions:
    n_sentences: int = 6
    per_paper: int = 5
    min_similarity: float | None = None  # abstain when no sentence reaches it
    paper_margin: float = 0.10
    # Weight of the paper's retrieval score (relative to the first paper's) in its relevance:
    # search ranks with titles and BM25 too, which a short question's sentences may not echo.
    retrieval_weight: float = 0.3
    # "Which paper ...?" (singular) wants one paper: another joins the lead only when its
    # relevance beats the lead's by this much.
    one_paper_margin: float = 0.03
    # Sentences under this cosine to the question are never quoted (they do not bear on it).
    min_sentence_similarity: float | None = None
    # A sentence's match to one part of a two-part question counts this much less.
    part_discount: float = 0.05

    @classmethod
    def from_settings(cls, s: Settings) -> ExtractiveOptions:
        return cls(
            n_sentences=s.extractive_sentences,
            per_paper=s.extractive_per_paper,
            min_similarity=s.abstain_sentence_threshold,
            paper_margin=s.extractive_paper_margin,
            retrieval_weight=s.extractive_retrieval_weight,
            min_sentence_similarity=s.relevance_threshold,
        )


@dataclass(slots=True)
class _Sentence:
    paper: int  # index into shown
    pos: int  # position in its abstract
    text: str
    sim: float


def extractive_answer(
    question: str,
    question_vector: np.ndarray,
    shown: Sequence[ScoredPaper],
    embedder: Any,
    options: ExtractiveOptions,
) -> str:
    """The answer text with [n] markers (n = position in ``shown``), or ABSTAIN_PHRASE when
    no sentence reaches ``options.min_similarity``."""
    by_paper = [split_sentences(p.paper.abstract) for p in shown]
    flat = [(i, j, s) for i, sents in enumerate(by_paper) for j, s in enumerate(sents)]
    if not flat:
        return ABSTAIN_PHRASE
    # Titles are scored too: a question often echoes a title its sentences never say.
    titles = [p.paper.title for p in shown]
    asks = sub_asks(question)
    vectors = embedder.embed_documents([s for _, _, s in flat] + titles + asks)
    sims = vectors[: len(flat) + len(titles)] @ question_vector
    title_sim = [float(x) for x in sims[len(flat) :]]
    sent_sims = sims[: len(flat)]
    if asks:
        # "Which model ..., and on which dataset was it evaluated?": a sentence that answers
        # one part scores by that part, a little under a match of the whole question.
        by_part = vectors[: len(flat)] @ vectors[len(flat) + len(titles) :].T
        sent_sims = np.maximum(sent_sims, by_part.max(axis=1) - options.part_discount)
    sentences = [_Sentence(i, j, s, float(x)) for (i, j, s), x in zip(flat, sent_sims, strict=True)]
    best = max(s.sim for s in sentences)
    if options.min_similarity is not None and best < options.min_similarity:
        return ABSTAIN_PHRASE

    asked = papers_asked_for(question)
    one = asked == "one"
    margin = options.one_paper_margin if one else options.paper_margin
    per_paper = options.per_paper
    floor = options.min_sentence_similarity if options.min_sentence_similarity is not None else -1.0
    own_best = {i: max(s.sim for s in sentences if s.paper == i) for i, _, _ in flat}
    # A paper none of whose sentences bears on the question has nothing to quote.
    quotable = [i for i, b in own_best.items() if b >= floor]
    if not quotable:
        return ABSTAIN_PHRASE
    top_score = max(shown[0].score, 1e-9)
    paper_best = {
        i: max(title_sim[i], own_best[i]) + options.retrieval_weight * shown[i].score / top_score
        for i in quotable
    }
    best_paper = max(paper_best.values())
    kept = {i for i, b in paper_best.items() if b >= best_paper - margin}
    lead = 0 if 0 in kept else max(kept, key=paper_best.__getitem__)
    if one:  # one paper wanted: another joins the lead only by beating it
        kept = {i for i in kept if i == lead or paper_best[i] > paper_best[lead] + margin}

    picked: dict[int, list[_Sentence]] = {}
    count = 0
    # The lead paper's best sentence goes first, then the rest by similarity.
    ranked = sorted(
        (s for s in sentences if s.paper in kept and s.sim >= floor),
        key=lambda s: (s.paper != lead or s.sim < own_best[lead], -s.sim),
    )
    for s in ranked:
        if count >= options.n_sentences:
            break
        mine = picked.setdefault(s.paper, [])
        if len(mine) >= per_paper or any(m.pos == s.pos for m in mine):
            continue
        group = [s]
        if s.pos > 0 and leans_on_previous(s.text):
            prev = by_paper[s.paper][s.pos - 1]
            already = any(m.pos == s.pos - 1 for m in mine)
            if not already:
                prev_sim = next(
                    x.sim for x in sentences if x.paper == s.paper and x.pos == s.pos - 1
                )
                if leans_on_previous(prev) or prev_sim < floor or count + 2 > options.n_sentences:
                    continue  # cannot be made to stand alone with a relevant sentence: skip it
                group.insert(0, _Sentence(s.paper, s.pos - 1, prev, prev_sim))
        mine.extend(group)
        count += len(group)

    order = [lead, *sorted(i for i in picked if i != lead and picked[i])]
    naming = asked is not None
    parts: list[str] = []
    for i in order:
        marker = f"[{i + 1}]"
        sents = sorted(picked.get(i, []), key=lambda s: s.pos)
        if not sents:
            continue
        for k, s in enumerate(sents):
            text = _cited(s.text, marker)
            if k == 0 and naming:
                text = f"{shown[i].paper.title.rstrip('.')} {marker}: {text}"
            parts.append(text)
    return " ".join(parts) if parts else ABSTAIN_PHRASE


def _cited(sentence: str, marker: str) -> str:
    s = sentence.rstrip()
    end = s[-1] if s[-1] in ".!?" else "."
    body = s[:-1] if s[-1] in ".!?" else s
    return f"{body} {marker}{end}"
