"""The answer contract: numbered sources, citation parsing and checking, support verdicts,
abstention and extractive answers. The abstain phrase and the citation pattern live here,
once; prompts and parsers both use them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from rag_papers.text import encoding, split_sentences, words

if TYPE_CHECKING:
    from rag_papers.retrieval import ScoredPaper

__all__ = [
    "ABSTAIN_PHRASE",
    "CITATION_PATTERN",
    "STOPWORDS",
    "Answer",
    "Citation",
    "SentenceVerdict",
    "Source",
    "Usage",
    "build_context",
    "check_support",
    "expand_markers",
    "extract_numbers",
    "extractive_answer",
    "is_abstention",
    "markers_in",
    "parse_citations",
    "split_answer",
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


class SentenceVerdict(BaseModel):
    text: str
    markers: list[int] = Field(default_factory=list)
    claim: bool = True  # False for sentences that state nothing checkable
    supported: bool = False
    score: float = 0.0
    reason: str = ""


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
    usage: Usage = Field(default_factory=Usage)
    timings: dict[str, float] = Field(default_factory=dict)
    settings_fingerprint: str = ""
    standalone_question: str | None = None  # chat: the rewritten follow-up

    @property
    def support_ratio(self) -> float:
        return self.supported / self.claims if self.claims else 1.0

    def cited_ids(self) -> list[str]:
        return [c.paper_id for c in self.citations]


# --- context ----------------------------------------------------------------------------
def build_context(
    papers: Sequence[ScoredPaper], *, budget: int, tokenizer: str = "cl100k_base"
) -> tuple[str, list[ScoredPaper]]:
    """Number the papers [1..n] with title, year and abstract, within ``budget`` tokens.

    Papers are added best first; an abstract that would overflow is cut at a sentence
    boundary, and the first paper is always shown, cut if need be.
    """
    enc = encoding(tokenizer)
    blocks: list[str] = []
    shown: list[ScoredPaper] = []
    used = 0
    for item in papers:
        p = item.paper
        head = f"[{len(shown) + 1}] {p.title}" + (f" ({p.year})" if p.year else "")
        block = f"{head}\n{p.abstract}"
        cost = len(enc.encode(block, disallowed_special=())) + 2
        if used + cost > budget:
            room = budget - used - len(enc.encode(head, disallowed_special=())) - 4
            if room < 40 and shown:
                break
            kept: list[str] = []
            for sentence in split_sentences(p.abstract):
                n = len(enc.encode(sentence, disallowed_special=())) + 1
                if n > room:
                    break
                kept.append(sentence)
                room -= n
            if not kept and shown:
                break
            block = f"{head}\n{' '.join(kept) or p.abstract[:200]}"
            cost = len(enc.encode(block, disallowed_special=())) + 2
            blocks.append(block)
            shown.append(item)
            used += cost
            break
        blocks.append(block)
        shown.append(item)
        used += cost
    return "\n\n".join(blocks), shown


# --- citations --------------------------------------------------------------------------
def expand_markers(inner: str) -> list[int]:
    out: list[int] = []
    for part in re.split(r"\s*[,;]\s*", inner):
        if m := re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", part):
            lo, hi = int(m.group(1)), int(m.group(2))
            if 0 < hi - lo < 20:
                out.extend(range(lo, hi + 1))
                continue
            out.extend([lo, hi])
        elif part.strip().isdigit():
            out.append(int(part))
    return out


def parse_citations(text: str, n_shown: int) -> tuple[str, list[int], list[int]]:
    """Keep markers 1..n_shown, drop the rest. Returns (clean text, valid used, removed)."""
    valid: list[int] = []
    removed: list[int] = []

    def repl(match: re.Match[str]) -> str:
        good = []
        for n in expand_markers(match.group(1)):
            if 1 <= n <= n_shown:
                good.append(n)
                if n not in valid:
                    valid.append(n)
            elif n not in removed:
                removed.append(n)
        return "".join(f"[{n}]" for n in dict.fromkeys(good))

    clean = CITATION_PATTERN.sub(repl, text)
    clean = re.sub(r"[ \t]+([.,;:!?])", r"\1", clean)  # "text [9]." -> "text."
    clean = re.sub(r"[ \t]{2,}", " ", clean).strip()
    return clean, valid, removed


def is_abstention(text: str) -> bool:
    """The model answered with the fixed phrase: it opens the answer, or is nearly all of it.

    Case, punctuation and quotes around it are allowed; a cited answer that merely mentions
    the phrase at its end is not an abstention.
    """
    norm = " ".join(words(CITATION_PATTERN.sub(" ", text)))
    phrase = " ".join(words(ABSTAIN_PHRASE))
    if phrase not in norm:
        return False
    return norm.startswith(phrase) or len(norm.replace(phrase, "").split()) <= 3


# --- support ----------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*)(\s*%)?")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "for",
        "to",
        "and",
        "or",
        "with",
        "by",
        "from",
        "as",
        "at",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "their",
        "they",
        "we",
        "our",
        "us",
        "which",
        "who",
        "what",
        "when",
        "where",
        "how",
        "than",
        "then",
        "also",
        "can",
        "may",
        "such",
        "into",
        "over",
        "under",
        "between",
        "both",
        "each",
        "more",
        "most",
        "other",
        "some",
        "any",
        "all",
        "not",
        "no",
        "paper",
        "papers",
        "study",
        "work",
        "approach",
        "method",
        "methods",
        "propose",
        "proposed",
        "show",
        "shows",
        "shown",
        "use",
        "uses",
        "using",
        "used",
        "based",
        "new",
        "model",
        "models",
    ]
)


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
) -> list[SentenceVerdict]:
    """Verdict per (sentence, markers) against the cited source texts (marker -> text).

    A number in the sentence must occur in a cited source. Otherwise the score is the best,
    over cited source sentences, of max(lexical containment of the sentence's content words,
    embedding cosine) and must reach ``threshold``.
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
    # Embeddings only for what lexical overlap did not already settle (quotes need none).
    to_embed = [(v, ss) for v, ss in pending if v.score < threshold]
    if embedder is not None and to_embed:
        texts = [v.text for v, _ in to_embed]
        flat = [s for _, ss in to_embed for s in ss]
        vectors = embedder.embed_documents(texts + flat)
        claim_vecs, src_vecs = vectors[: len(texts)], vectors[len(texts) :]
        pos = 0
        for i, (v, ss) in enumerate(to_embed):
            sims = src_vecs[pos : pos + len(ss)] @ claim_vecs[i]
            pos += len(ss)
            if len(sims):
                v.score = max(v.score, float(np.max(sims)))
    for v, _ in pending:
        v.score = round(v.score, 4)
        v.supported = v.score >= threshold
        v.reason = "supported" if v.supported else f"weak overlap ({v.score:.2f} < {threshold})"
    return verdicts


_TRAILING_MARKERS = re.compile(r"([.!?])\s*((?:\[[\d\s,;\-–]+\]\s*)+)")


def markers_in(text: str) -> list[int]:
    """Every marker number in ``text``, in order ("[1][2, 4]" -> [1, 2, 4])."""
    return [n for m in CITATION_PATTERN.finditer(text) for n in expand_markers(m.group(1))]


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


# --- extractive ---------------------------------------------------------------------------
def extractive_answer(
    question_vector: np.ndarray,
    shown: Sequence[ScoredPaper],
    embedder: Any,
    *,
    n_sentences: int,
    min_similarity: float | None = None,
) -> str:
    """The sentences of the shown papers most similar to the question, each cited.

    Returns ABSTAIN_PHRASE when no sentence reaches ``min_similarity`` (cosine): the papers
    are on topic but none of them says anything close to what was asked.

    Candidates are every sentence of the top papers, scored by cosine similarity to the
    question plus a small bonus for the paper's retrieval rank (so the best paper leads).
    """
    candidates: list[tuple[float, int, int, str]] = []
    all_sentences = [
        (i, j, s)
        for i, p in enumerate(shown)
        for j, s in enumerate(split_sentences(p.paper.abstract))
    ]
    if not all_sentences:
        return ABSTAIN_PHRASE
    vectors = embedder.embed_documents([s for _, _, s in all_sentences])
    sims = vectors @ question_vector
    if min_similarity is not None and float(np.max(sims)) < min_similarity:
        return ABSTAIN_PHRASE
    for (i, j, s), sim in zip(all_sentences, sims, strict=True):
        candidates.append((float(sim) + 0.05 / (1 + i), i, j, s))
    candidates.sort(key=lambda c: -c[0])
    picked = candidates[:n_sentences]
    # Keep each paper's sentences together, papers in rank order, sentences in text order.
    picked.sort(key=lambda c: (c[1], c[2]))
    parts = []
    for _, i, _, s in picked:
        s = s.rstrip()
        end = s[-1] if s[-1] in ".!?" else "."
        body = s[:-1] if s[-1] in ".!?" else s
        parts.append(f"{body} [{i + 1}]{end}")
    return " ".join(parts)
