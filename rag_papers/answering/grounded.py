"""Grounded answers: the model returns claims, each with verbatim quotes from the numbered
abstracts; code finds every quote in its source and keeps only claims it could verify.

The reply is JSON (schema-constrained where the backend can do it; parsed tolerantly where
it cannot). A quote is matched after normalising both sides (case, accents, LaTeX escapes,
quotes, dashes, whitespace and punctuation between words), so a model that copies faithfully
is never refused for typography, while a changed word or number is. The span recorded is in
the original source text.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from rag_papers.answering.contract import CITATION_PATTERN, DroppedClaim, Quote, SentenceVerdict
from rag_papers.answering.support import check_support

__all__ = [
    "GroundedReply",
    "Grounding",
    "RawClaim",
    "SourceText",
    "grounded_schema",
    "parse_grounded",
    "render_claims",
    "settle_claims",
    "verify_claims",
    "verify_quote",
]

# A quote shorter than this (normalised characters, or words) proves too little to count.
MIN_QUOTE_CHARS = 12
MIN_QUOTE_WORDS = 3
_ELLIPSIS = re.compile(r"\s*(?:\.\s?\.\s?\.|…|\[\s*(?:\.\.\.|…)\s*\])\s*")


def grounded_schema(n_sources: int) -> dict[str, Any]:
    """The reply's JSON schema; ``source`` is limited to the shown numbers."""
    quote = {
        "type": "object",
        "properties": {
            "source": {"type": "integer", "enum": list(range(1, max(n_sources, 1) + 1))},
            "quote": {"type": "string"},
        },
        "required": ["source", "quote"],
        "additionalProperties": False,
    }
    # Quotes before the claim: a model that must copy its evidence first writes claims
    # that follow from it (constrained decoding keeps this order).
    claim = {
        "type": "object",
        "properties": {
            "quotes": {"type": "array", "items": quote},
            "text": {"type": "string"},
        },
        "required": ["quotes", "text"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "answerable": {"type": "boolean"},
            "claims": {"type": "array", "items": claim},
        },
        "required": ["answerable", "claims"],
        "additionalProperties": False,
    }


@dataclass(slots=True)
class RawClaim:
    text: str
    quotes: list[tuple[Any, str]]  # (source as the model wrote it, quote)


@dataclass(slots=True)
class GroundedReply:
    """What could be read from the model's reply; ``problem`` says what could not."""

    answerable: bool
    claims: list[RawClaim]
    problem: str | None = None


def parse_grounded(raw: str) -> GroundedReply:
    """Read the reply tolerantly: code fences, text around the object, a reply cut off
    mid-claim (the complete claims are kept), a bare list of claims, string numbers."""
    text = raw.strip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return GroundedReply(False, [], problem="the reply holds no JSON")
    data, problem = _loads_prefix(text[start:])
    if isinstance(data, list):
        data = {"answerable": bool(data), "claims": data}
    if not isinstance(data, dict):
        return GroundedReply(False, [], problem=problem or "the reply is not a JSON object")
    claims: list[RawClaim] = []
    for item in data.get("claims") or []:
        if not isinstance(item, dict):
            continue
        quotes = []
        for q in item.get("quotes") or []:
            if isinstance(q, dict) and isinstance(q.get("quote"), str):
                quotes.append((q.get("source"), q["quote"]))
            elif isinstance(q, str):
                quotes.append((None, q))
        claim_text = item.get("text") or item.get("claim") or ""
        if isinstance(claim_text, str) and claim_text.strip():
            claims.append(RawClaim(claim_text.strip(), quotes))
    answerable = data.get("answerable")
    answerable = bool(claims) if not isinstance(answerable, bool) else answerable
    return GroundedReply(answerable, claims, problem)


def _loads_prefix(text: str) -> tuple[Any, str | None]:
    decoder = json.JSONDecoder()
    try:
        return decoder.raw_decode(text)[0], None
    except json.JSONDecodeError as exc:
        error = f"malformed JSON ({exc.msg} at character {exc.pos})"
    # Cut off (max_tokens) or broken later on: close the object after the last whole claim.
    for cut in (m.start() for m in reversed(list(re.finditer(r"\}\s*,?", text)))):
        head = text[: cut + 1]
        closers = _closers(head)
        if closers is None:
            continue
        try:
            return json.loads(head + closers), error
        except json.JSONDecodeError:
            continue
    return None, error


def _closers(text: str) -> str | None:
    """The brackets that close ``text``; None when it ends inside a string."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    return None if in_string else "".join(reversed(stack))


# --- quote verification -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SourceText:
    """One shown source: marker, paper id, title and abstract."""

    marker: int
    paper_id: str
    title: str
    abstract: str


_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u00a0": " ",
    }
)
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+\*?")
_KEEP_SYMBOLS = set("%<>=+")


def _normalise(text: str) -> tuple[str, list[int]]:
    """Lower-case letters, digits and a few symbols, each with its index in ``text``.

    Spaces and punctuation between words go (a model re-spacing "a , b" still matches), but
    a decimal point or comma between digits stays, so "1.5" never matches "15".
    """
    out: list[str] = []
    where: list[int] = []
    i = 0
    folded = text.translate(_FOLD)
    while i < len(folded):
        ch = folded[i]
        if ch == "\\":
            if m := _LATEX_COMMAND.match(folded, i):
                i = m.end()  # \emph, \textbf: the command name is markup
                continue
            i += 2 if i + 1 < len(folded) and folded[i + 1] in "\"'^`~=." else 1
            continue
        base = unicodedata.normalize("NFKD", ch)
        for piece in base:
            if unicodedata.combining(piece):
                continue
            low = piece.lower()
            if low.isalnum() or low in _KEEP_SYMBOLS:
                out.append(low)
                where.append(i)
            elif low in ".," and out and out[-1].isdigit():
                nxt = folded[i + 1] if i + 1 < len(folded) else ""
                if nxt.isdigit():
                    out.append(low)
                    where.append(i)
        i += 1
    return "".join(out), where


@dataclass(slots=True)
class _Index:
    source: SourceText
    field: str
    text: str
    norm: str
    where: list[int]


def _indexes(sources: list[SourceText]) -> dict[int, list[_Index]]:
    out: dict[int, list[_Index]] = {}
    for s in sources:
        out[s.marker] = [
            _Index(s, name, text, *_normalise(text))
            for name, text in (("abstract", s.abstract), ("title", s.title))
        ]
    return out


def verify_quote(
    quote: str, claimed: int | None, indexes: dict[int, list[_Index]]
) -> tuple[list[Quote], str | None]:
    """Find ``quote`` (pieces split at an ellipsis) in source ``claimed``, else in any other
    shown source. Returns the verified pieces, or none and why."""
    pieces = [p for p in _ELLIPSIS.split(quote.strip().strip("\"'")) if p.strip()]
    if not pieces:
        return [], "empty quote"
    order = ([claimed] if claimed in indexes else []) + [m for m in indexes if m != claimed]
    for marker in order:
        found: list[Quote] = []
        for piece in pieces:
            norm, _ = _normalise(piece)
            if len(norm) < MIN_QUOTE_CHARS or len(piece.split()) < MIN_QUOTE_WORDS:
                if len(pieces) == 1:
                    return [], f"quote too short to verify: {piece!r}"
                continue
            hit = _find(norm, indexes[marker])
            if hit is None:
                found = []
                break
            found.append(hit)
        if found:
            return found, None
    where = f"source [{claimed}]" if claimed in indexes else "any shown source"
    return [], f"quote not found in {where}"


def _find(norm: str, indexes: list[_Index]) -> Quote | None:
    for ix in indexes:
        pos = ix.norm.find(norm)
        if pos < 0:
            continue
        start = ix.where[pos]
        end = ix.where[pos + len(norm) - 1] + 1
        return Quote(
            marker=ix.source.marker,
            paper_id=ix.source.paper_id,
            field=ix.field,  # type: ignore[arg-type]
            start=start,
            end=end,
            text=ix.text[start:end],
        )
    return None


@dataclass(slots=True)
class Grounding:
    """Verified claims (text without markers, with their quotes) and the claims dropped."""

    claims: list[tuple[str, list[Quote]]] = field(default_factory=list)
    dropped: list[DroppedClaim] = field(default_factory=list)
    answerable: bool = True
    problem: str | None = None
    # One support verdict per claim, once ``settle_claims`` has judged them (the answer's
    # check reuses them instead of judging the same claims again).
    verdicts: list[SentenceVerdict] | None = None


def verify_claims(reply: GroundedReply, sources: list[SourceText]) -> Grounding:
    """Keep each claim that has at least one verified quote; record why others were dropped."""
    indexes = _indexes(sources)
    out = Grounding(answerable=reply.answerable, problem=reply.problem)
    for claim in reply.claims:
        quotes: list[Quote] = []
        reasons: list[str] = []
        for source, text in claim.quotes:
            found, why = verify_quote(text, _as_int(source), indexes)
            quotes.extend(q for q in found if q not in quotes)
            if why:
                reasons.append(why)
        # Markers are ours to set (from the quotes): drop any the model wrote.
        text = re.sub(r"\s{2,}", " ", CITATION_PATTERN.sub("", claim.text)).strip()
        if quotes:
            out.claims.append((text, quotes))
        else:
            reason = "; ".join(dict.fromkeys(reasons)) or "no quote given"
            out.dropped.append(DroppedClaim(text=text, reason=reason))
    return out


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := re.fullmatch(r"\s*\[?(\d+)\]?\s*", value)):
        return int(m.group(1))
    return None


def render_claims(claims: list[tuple[str, list[Quote]]]) -> str:
    """Readable prose: each claim a sentence ending with the markers of its quotes."""
    sentences = []
    for text, quotes in claims:
        markers = "".join(f"[{m}]" for m in dict.fromkeys(q.marker for q in quotes))
        body = text.rstrip().rstrip(".!?;:,").rstrip()
        sentences.append(f"{body} {markers}.")
    return " ".join(sentences)


def settle_claims(
    grounding: Grounding,
    sources: dict[int, str],
    *,
    threshold: float,
    embedder: Any,
    question_vector: Any = None,
    relevance_threshold: float | None = None,
) -> None:
    """Judge each verified claim before it is shown. One that does not bear on the question
    (cosine under ``relevance_threshold``) is dropped, as extractive answers never quote such
    a sentence. One that says more than its quotes (a number they do not hold, weak overlap)
    shows the quote itself instead: the reader gets what the paper says. Either way the
    model's wording goes to ``dropped`` with the reason."""
    if not grounding.claims:
        grounding.verdicts = []
        return

    def judge(claims: list[tuple[str, list[Quote]]]) -> list[SentenceVerdict]:
        return check_support(
            [(render_claims([c]), [q.marker for q in c[1]]) for c in claims],
            sources,
            threshold=threshold,
            embedder=embedder,
            question_vector=question_vector,
            relevance_threshold=relevance_threshold,
        )

    kept: list[tuple[str, list[Quote]]] = []
    final: list[SentenceVerdict | None] = []
    for (text, quotes), verdict in zip(grounding.claims, judge(grounding.claims), strict=True):
        if verdict.supported or not verdict.claim:
            kept.append((text, quotes))
            final.append(verdict)
        elif verdict.reason.startswith("does not bear"):
            grounding.dropped.append(DroppedClaim(text=text, reason=verdict.reason))
        else:
            quoted = " … ".join(q.text.strip() for q in quotes)
            kept.append((f"\u201c{quoted[:1].upper()}{quoted[1:]}\u201d", quotes))
            final.append(None)  # the quote shown instead is judged below
            reason = f"said more than its quotes ({verdict.reason}): the quote is shown instead"
            grounding.dropped.append(DroppedClaim(text=text, reason=reason))
    redo = [i for i, v in enumerate(final) if v is None]
    for i, verdict in zip(redo, judge([kept[i] for i in redo]), strict=True):
        final[i] = verdict
    grounding.claims = kept
    grounding.verdicts = [v for v in final if v is not None]
