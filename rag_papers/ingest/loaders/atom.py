"""An arXiv API response (Atom), parsed with feedparser."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import feedparser

from rag_papers.core.papers import Paper
from rag_papers.ingest.loaders.common import (
    LoaderError,
    RecordError,
    Rejected,
    clean_text,
    read_bytes,
)
from rag_papers.ingest.loaders.records import FieldKeys, build_paper

__all__ = ["parse_atom"]

# feedparser keeps no positions: find each <entry> in the raw text to report its line.
_ENTRY_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?entry[\s>/]")


def _entry_lines(data: bytes) -> list[int]:
    return [data.count(b"\n", 0, m.start()) + 1 for m in _ENTRY_TAG.finditer(data)]


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    return value if isinstance(value, str) else ""


def _year(entry: Mapping[str, Any]) -> int | None:
    for key in ("published_parsed", "updated_parsed"):
        parsed = entry.get(key)
        if parsed is not None:
            return int(parsed.tm_year)
    return None


def _paper(entry: Mapping[str, Any], *, source: str, line: int) -> Paper:
    entry_id = _text(entry, "id")
    if "/api/errors" in entry_id:
        # The arXiv API reports a bad query as a feed with one "Error" entry.
        raise RecordError(None, f"arXiv API error: {clean_text(_text(entry, 'summary'))}")
    title = _text(entry, "title")
    if not title.strip():
        raise RecordError("title", "missing")
    summary = _text(entry, "summary")
    if not summary.strip():
        raise RecordError("abstract", "missing (no <summary>)")
    authors = [a.get("name") for a in entry.get("authors", []) if isinstance(a, Mapping)]
    terms = [t.get("term") for t in entry.get("tags", []) if isinstance(t, Mapping)]
    return build_paper(
        source=source,
        line=line,
        title=title,
        abstract=summary,
        authors=[
            n for n in (clean_text(a, braces=True) for a in authors if isinstance(a, str)) if n
        ],
        year=_year(entry),
        url=_text(entry, "link") or None,
        categories=list(
            dict.fromkeys(t.strip() for t in terms if isinstance(t, str) and t.strip())
        ),
        doi=_text(entry, "arxiv_doi") or None,
        record_id=entry_id,
    )


def parse_atom(path: Path, keys: FieldKeys | None = None) -> Iterator[Paper | Rejected]:
    data = read_bytes(path)
    source = str(path)
    try:
        # A stream, never a str or bytes: feedparser would take those for a URL or a file name.
        feed = feedparser.parse(io.BytesIO(data))
    except Exception as exc:  # feedparser's parsers raise assorted errors on junk
        raise LoaderError(f"{path}: cannot parse Atom: {exc}") from None
    if not feed.get("version") and not feed.get("entries"):
        why = feed.get("bozo_exception") or "no feed element"
        raise LoaderError(f"{path}: not an Atom feed: {why}")
    lines = _entry_lines(data)
    entries = feed.get("entries", [])
    if len(lines) != len(entries):
        lines = [0] * len(entries)  # positions unknown rather than wrong
    for entry, line in zip(entries, lines, strict=True):
        try:
            yield _paper(entry, source=source, line=line)
        except RecordError as exc:
            yield Rejected(source, line, exc.reason, exc.field)
