"""Citation markers: parse and check [n] against the shown sources, filter them while
streaming, and recognise an abstention."""

from __future__ import annotations

import re

from rag_papers.answering.contract import ABSTAIN_PHRASE, CITATION_PATTERN
from rag_papers.core.text import words

__all__ = [
    "MarkerFilter",
    "expand_markers",
    "is_abstention",
    "markers_in",
    "parse_citations",
]


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


def markers_in(text: str) -> list[int]:
    """Every marker number in ``text``, in order ("[1][2, 4]" -> [1, 2, 4])."""
    return [n for m in CITATION_PATTERN.finditer(text) for n in expand_markers(m.group(1))]


class MarkerFilter:
    """Filters streamed text so a citation marker outside 1..n is never shown, even briefly.

    Text is passed through at once except from an opening '[' until the marker closes (or
    proves not to be a marker), which is then emitted only if every number in it is valid.
    """

    def __init__(self, n_shown: int) -> None:
        self.n_shown = n_shown
        self._buf = ""

    def feed(self, delta: str) -> str:
        out = []
        for ch in delta:
            if self._buf:
                if ch == "[":  # a new bracket: what was held was not a marker
                    out.append(self._buf)
                    self._buf = ch
                    continue
                self._buf += ch
                if ch == "]":
                    out.append(self._resolve())
                elif not (ch.isdigit() or ch in " ,;-–"):
                    out.append(self._buf)  # not a marker after all
                    self._buf = ""
            elif ch == "[":
                self._buf = ch
            else:
                out.append(ch)
        return "".join(out)

    def _resolve(self) -> str:
        text, self._buf = self._buf, ""
        clean, _, _ = parse_citations(text, self.n_shown)
        return clean

    def flush(self) -> str:
        text, self._buf = self._buf, ""
        return text
