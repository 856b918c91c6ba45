"""Support verdicts: does each answer sentence rest on the sources it cites?"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from rag_papers.answering.citations import is_abstention, markers_in
from rag_papers.answering.contract import CITATION_PATTERN, SentenceVerdict
from rag_papers.core.text import STOPWORDS, split_sentences, words

__all__ = ["check_support", "extract_numbers", "split_answer"]

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*)(\s*%)?")


def extract_numbers(text: str) -> set[str]:
    """Numbers in text, normalised ('1,000' -> '1000', '60\\%' -> '60%'), markers excluded."""
    text = CITATION_PATTERN.sub(" ", text).replace("\\%", "%")
    out = set()
    for m in _NUMBER.finditer(text):
        num = m.group(1)
        num = num.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+", num) else num
        num = num.rstrip(".")
        if num:
            out.add(num + ("%" if m.group(2) else ""))
    return out


def _content(text: str) -> set[str]:
    return {w for w in words(CITATION_PATTERN.sub(" ", text)) if w not in STOPWORDS and len(w) > 2}


def _is_claim(sentence: str) -> bool:
    # Short connective sentences ("In summary:") state nothing that can be checked.
    return len(_content(sentence)) >= 3 and not is_abstention(sentence)


def check_support(
    sentences: Sequence[tuple[str, list[int]]],
    sources: dict[int, str],
    *,
    threshold: float,
    embedder: Any = None,
    question_vector: np.ndarray | None = None,
    relevance_threshold: float | None = None,
) -> list[SentenceVerdict]:
    """Verdict per (sentence, markers) against the cited source texts (marker -> text).

    A number in the sentence must occur in a cited source. Otherwise the score is the best,
    over cited source sentences, of max(lexical containment of the sentence's content words,
    embedding cosine) and must reach ``threshold``. With ``question_vector``, a sentence
    that rests on its source must also bear on the question (cosine to it at least
    ``relevance_threshold``): a verbatim quote is always "in" its source, so that alone
    says nothing about whether it answers.
    """
    verdicts: list[SentenceVerdict] = []
    pending: list[tuple[SentenceVerdict, list[str]]] = []
    for text, markers in sentences:
        v = SentenceVerdict(text=text, markers=markers, claim=_is_claim(text))
        verdicts.append(v)
        if not v.claim:
            v.supported, v.reason = True, "not a claim"
            continue
        cited = [sources[m] for m in markers if m in sources]
        if not cited:
            v.reason = "no citation"
            continue
        source_numbers = set().union(*(extract_numbers(c) for c in cited))
        missing = sorted(
            n
            for n in extract_numbers(text)
            if n not in source_numbers and n.rstrip("%") not in source_numbers
        )
        if missing:
            v.reason = f"number not in cited sources: {', '.join(missing)}"
            continue
        claim_words = _content(text)
        best = 0.0
        source_sentences: list[str] = []
        for c in cited:
            for s in split_sentences(c) or [c]:
                source_sentences.append(s)
                if claim_words:
                    best = max(best, len(claim_words & _content(s)) / len(claim_words))
        # Whole-source containment catches claims that merge two source sentences.
        all_words = set().union(*(_content(c) for c in cited))
        if claim_words:
            best = max(best, 0.9 * len(claim_words & all_words) / len(claim_words))
        v.score = best
        pending.append((v, source_sentences))
    # One embedding batch: the claims lexical overlap did not settle (quotes need none) with
    # their source sentences, and, to judge relevance, every claim against the question.
    to_embed = [(v, ss) for v, ss in pending if v.score < threshold]
    relevance = question_vector is not None and relevance_threshold is not None
    if embedder is not None and (to_embed or (relevance and pending)):
        texts = [v.text for v, _ in to_embed]
        flat = [s for _, ss in to_embed for s in ss]
        bare = [_bare(v.text) for v, _ in pending] if relevance else []
        vectors = embedder.embed_documents(texts + flat + bare)
        claim_vecs = vectors[: len(texts)]
        src_vecs = vectors[len(texts) : len(texts) + len(flat)]
        pos = 0
        for i, (v, ss) in enumerate(to_embed):
            sims = src_vecs[pos : pos + len(ss)] @ claim_vecs[i]
            pos += len(ss)
            if len(sims):
                v.score = max(v.score, float(np.max(sims)))
        on_topic = vectors[len(texts) + len(flat) :] @ question_vector if bare else []
    else:
        on_topic = []
    for i, (v, _) in enumerate(pending):
        v.score = round(v.score, 4)
        v.supported = v.score >= threshold
        v.reason = "supported" if v.supported else f"weak overlap ({v.score:.2f} < {threshold})"
        if v.supported and len(on_topic) and float(on_topic[i]) < (relevance_threshold or 0.0):
            v.supported = False
            v.reason = (
                f"does not bear on the question (similarity {float(on_topic[i]):.2f} "
                f"< {relevance_threshold})"
            )
    return verdicts


_MARKER_WITH_SPACE = re.compile(r"\s*(?:" + CITATION_PATTERN.pattern + ")")


def _bare(sentence: str) -> str:
    """The sentence without its markers or the space before them: an extractive answer's
    sentence then reads as the abstract's own ("claim [1]." -> "claim."), whose vector is
    already cached; the model's tokenizer splits off punctuation either way."""
    return _MARKER_WITH_SPACE.sub("", sentence).strip()


_TRAILING_MARKERS = re.compile(r"([.!?])\s*((?:\[[\d\s,;\-–]+\]\s*)+)")


def split_answer(text: str) -> list[tuple[str, list[int]]]:
    """Answer sentences with the markers each carries; a lone marker run joins the sentence."""
    # "claim. [2] Next" cites the first sentence: move such runs before the full stop.
    text = _TRAILING_MARKERS.sub(lambda m: " " + m[2].strip() + m[1] + " ", text)
    out: list[tuple[str, list[int]]] = []
    for sentence in split_sentences(text):
        markers = markers_in(sentence)
        if CITATION_PATTERN.sub("", sentence).strip(" .") == "" and out:
            prev_text, prev_markers = out[-1]
            out[-1] = (f"{prev_text} {sentence}", prev_markers + markers)
            continue
        out.append((sentence, list(dict.fromkeys(markers))))
    return out
