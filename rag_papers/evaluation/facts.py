"""Fact matching: does a gold fact occur in an answer, after normalising case, punctuation,
LaTeX percent signs and the way numbers are written?"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

from rag_papers.evaluation.rows import EvalRow

__all__ = ["fact_in", "match_tokens", "missing_facts"]

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
    """The row's gold facts its answer does not state (all of them when it abstained)."""
    text = row.answer.text if row.answer and not row.answer.abstained else ""
    return [f for f in row.facts if not fact_in(f, text)]
