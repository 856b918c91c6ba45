"""Sentence splitting and token counting: one implementation for chunking, answers and checks."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from rag_papers.core.env import prepare_environment

if TYPE_CHECKING:
    import tiktoken

__all__ = ["STOPWORDS", "count_tokens", "encoding", "split_sentences", "words"]

# Abbreviations after which a period does not end a sentence.
_ABBREV = {
    "e.g",
    "i.e",
    "et al",
    "al",
    "fig",
    "figs",
    "eq",
    "eqs",
    "vs",
    "cf",
    "resp",
    "approx",
    "dr",
    "mr",
    "ms",
    "no",
    "vol",
    "sec",
    "ref",
    "refs",
    "etc",
    "ca",
    "st",
    "u.s",
    "inc",
}
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences, keeping decimals, 'et al.' and 'e.g.' intact."""
    text = " ".join(text.split())
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        head = text[start : match.start()].rstrip(".!?\"')]")
        last = head.rsplit(" ", 1)[-1].lower().lstrip("\"'([")
        if last in _ABBREV or (len(last) == 1 and last.isalpha()):
            continue  # "et al. Show", "J. Smith": not a boundary
        sentences.append(text[start : match.start()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return [s for s in sentences if s]


_WORD = re.compile(r"[A-Za-z0-9]+(?:[.\-][A-Za-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (keeps 3.5, GPT-4 and 2-bit as one token)."""
    return [w.lower() for w in _WORD.findall(text)]


@lru_cache(maxsize=4)
def encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """A tiktoken encoding, from the encodings this package ships (no download)."""
    prepare_environment()
    import tiktoken

    return tiktoken.get_encoding(name)


def count_tokens(text: str, name: str = "cl100k_base") -> int:
    return len(encoding(name).encode(text, disallowed_special=()))


# Words that carry no content, for overlap measures and key terms.
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
